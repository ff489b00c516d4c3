//! `plan` with an etcd store: per live node, the replicas it would run and the remote
//! endpoints it would program, as text for people or JSON for scripts.

use crate::reconcile::agent::{ClusterPlan, ReplicaChange};
use std::fmt::Write;

/// The plan as text.
pub fn render(plan: &ClusterPlan) -> String {
    let mut out = String::new();
    let n = plan.nodes.len();
    let _ = writeln!(
        out,
        "Cluster plan for project {} at revision {} ({n} live node{}):",
        plan.project,
        plan.revision,
        if n == 1 { "" } else { "s" }
    );
    let (mut new, mut moved, mut removed) = (0, 0, 0);
    for node in &plan.nodes {
        let _ = writeln!(
            out,
            "\nnode {} ({}){}",
            node.node,
            node.underlay,
            node.converged
                .map_or(String::new(), |r| format!(", converged to revision {r}"))
        );
        if node.replicas.is_empty() && node.removed.is_empty() {
            let _ = writeln!(out, "  no replicas");
        } else {
            let _ = writeln!(out, "  replicas:");
        }
        for r in &node.replicas {
            let line = match &r.change {
                ReplicaChange::Kept => format!("      {}", r.replica),
                ReplicaChange::New => {
                    new += 1;
                    format!("    + {} (new)", r.replica)
                }
                ReplicaChange::Moved { from } => {
                    moved += 1;
                    format!("    ~ {} (moved from {from})", r.replica)
                }
            };
            let _ = writeln!(out, "{line}");
        }
        for r in &node.removed {
            removed += 1;
            let _ = writeln!(out, "    - {r} (removed)");
        }
        if node.remote.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  remote endpoints:");
        for e in &node.remote {
            let addrs: Vec<String> = e
                .ipv4
                .map(|a| a.to_string())
                .into_iter()
                .chain(e.ipv6.map(|a| a.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "    {:<12} {:<16} {:<28} {}  via {} ({})",
                e.network,
                format!("{}[{}]", e.service, e.index),
                addrs.join(","),
                e.mac,
                e.node,
                e.vtep
            );
        }
    }
    if !plan.pending.is_empty() {
        let _ = writeln!(out, "\npending (fit on no live node):");
        for (r, why) in &plan.pending {
            let _ = writeln!(out, "  {r}: {why}");
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        match (plan.changes, new + moved + removed) {
            (false, _) => "No changes: every node keeps its share.".to_string(),
            (true, 0) => "The project's files changed; every node keeps its replicas.".to_string(),
            (true, _) => format!("{new} replicas to start, {moved} to move, {removed} to remove."),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::RemoteEndpoint;
    use crate::reconcile::agent::{NodePlan, ReplicaPlan};

    fn replica(name: &str, change: ReplicaChange) -> ReplicaPlan {
        ReplicaPlan {
            replica: name.into(),
            change,
        }
    }

    fn endpoint(service: &str, index: u32, node: &str, last: u8) -> RemoteEndpoint {
        RemoteEndpoint {
            network: "mesh".into(),
            service: service.into(),
            index,
            node: node.into(),
            vtep: [10, 231, 0, last].into(),
            mac: format!("02:42:0a:48:00:0{index}"),
            ipv4: Some([10, 72, 0, 1 + index as u8].into()),
            ipv6: None,
        }
    }

    /// The shape of the text, pinned: a node with new, kept, moved and removed replicas and
    /// the endpoints it programs, a node with none, the pending replicas and the summary.
    #[test]
    fn the_text_shows_each_nodes_share() {
        let plan = ClusterPlan {
            project: "demo".into(),
            revision: 42,
            nodes: vec![
                NodePlan {
                    node: "n0".into(),
                    underlay: [10, 231, 0, 1].into(),
                    replicas: vec![
                        replica("client[1]", ReplicaChange::Kept),
                        replica("web[1]", ReplicaChange::New),
                        replica("web[3]", ReplicaChange::Moved { from: "n2".into() }),
                    ],
                    removed: vec!["web[4]".into()],
                    remote: vec![endpoint("web", 2, "n1", 2)],
                    converged: Some(40),
                },
                NodePlan {
                    node: "n1".into(),
                    underlay: [10, 231, 0, 2].into(),
                    replicas: vec![],
                    removed: vec![],
                    remote: vec![],
                    converged: None,
                },
            ],
            pending: [("db[1]".to_string(), "no suitable node".to_string())].into(),
            changes: true,
            allocations: Default::default(),
        };
        assert_eq!(
            render(&plan),
            "\
Cluster plan for project demo at revision 42 (2 live nodes):

node n0 (10.231.0.1), converged to revision 40
  replicas:
      client[1]
    + web[1] (new)
    ~ web[3] (moved from n2)
    - web[4] (removed)
  remote endpoints:
    mesh         web[2]           10.72.0.3                    02:42:0a:48:00:02  via n1 (10.231.0.2)

node n1 (10.231.0.2)
  no replicas

pending (fit on no live node):
  db[1]: no suitable node

1 replicas to start, 1 to move, 1 to remove.
"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["nodes"][0]["replicas"][2]["change"], "moved");
        assert_eq!(json["nodes"][0]["replicas"][2]["from"], "n2");
        assert_eq!(json["nodes"][0]["remote"][0]["vtep"], "10.231.0.2");
    }
}
