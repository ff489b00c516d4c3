//! Placement in words: what each node gets (for `plan` with a store and the agent), and the
//! notes a one-host plan carries for settings that only a cluster honours.

use super::{Assignment, Node, Placement};
use crate::spec::{DeployMode, Project};
use std::fmt::Write;

/// One line per node (name order) with the replicas it runs, those that moved to it marked
/// with their old node; then the replicas removed and the pending ones with their reason.
pub fn render(placement: &Placement, nodes: &[Node], current: &Assignment) -> String {
    let mut out = String::new();
    let alive = nodes.iter().filter(|n| n.alive).count();
    let _ = writeln!(
        out,
        "Placement over {} node{} ({alive} alive):",
        nodes.len(),
        plural(nodes.len())
    );
    let by_node = placement.by_node(nodes);
    for (name, replicas) in &by_node {
        let state = match nodes.iter().find(|n| &n.name == name) {
            Some(n) if !n.alive => " (down)",
            Some(_) => "",
            None => " (unknown)",
        };
        let list: Vec<String> = replicas
            .iter()
            .map(|k| match placement.moved.get(k) {
                Some(m) => format!("{k} (from {})", m.from),
                None => k.to_string(),
            })
            .collect();
        let list = if list.is_empty() {
            "nothing".to_string()
        } else {
            list.join(", ")
        };
        let _ = writeln!(out, "  {name}{state}: {list}");
    }
    for (key, node) in placement.removed(current) {
        let _ = writeln!(out, "  removed {key} from {node}");
    }
    for (key, why) in &placement.pending {
        let _ = writeln!(out, "  pending {key}: {why}");
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// For a plan on one host without a store: each service whose `deploy.mode: global` or
/// `deploy.placement` only a cluster honours. docker compose ignores both, and so does one
/// host: every replica Compose counts runs here, whatever the constraints say about this host.
/// Services in file order.
pub fn notes(project: &Project) -> Vec<String> {
    let mut out = Vec::new();
    for (name, svc) in &project.services {
        let mut what = Vec::new();
        if svc.deploy.mode.as_ref().map(|m| m.value) == Some(DeployMode::Global) {
            what.push("deploy.mode: global".to_string());
        }
        let placement = &svc.deploy.placement;
        if !placement.constraints.is_empty() {
            let list: Vec<String> = placement
                .constraints
                .iter()
                .map(|c| c.value.to_string())
                .collect();
            what.push(format!("placement constraints ({})", list.join(", ")));
        }
        if let Some(max) = &placement.max_replicas_per_node {
            what.push(format!("max_replicas_per_node: {}", max.value));
        }
        if what.is_empty() {
            continue;
        }
        let n = svc.replicas();
        out.push(format!(
            "service `{name}`: {} {} honoured only on a cluster (--store); on this one host \
             {n} replica{} run{}, as with docker compose",
            what.join(", "),
            if what.len() == 1 { "is" } else { "are" },
            plural(n as usize),
            if n == 1 { "s" } else { "" },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{place, Demand, ReplicaKey};

    fn node(name: &str, alive: bool) -> Node {
        Node {
            name: name.into(),
            id: name.into(),
            labels: Default::default(),
            alive,
        }
    }

    #[test]
    fn shows_what_each_node_gets_what_moved_and_what_waits() {
        let nodes = [node("h1", true), node("h2", true), node("h3", false)];
        let demand = Demand {
            service: "api".into(),
            mode: DeployMode::Replicated,
            replicas: 4,
            constraints: Vec::new(),
            max_per_node: Some(1),
            joins: None,
        };
        let current: Assignment = [
            (ReplicaKey::new("api", 1), "h1".to_string()),
            (ReplicaKey::new("api", 2), "h3".to_string()),
            (ReplicaKey::new("api", 5), "h1".to_string()),
        ]
        .into();
        let p = place(&nodes, &[demand], &current);
        assert_eq!(
            render(&p, &nodes, &current),
            "Placement over 3 nodes (2 alive):\n  h1: api[1]\n  h2: api[2] (from h3)\n  \
             h3 (down): nothing\n  pending api[3]: no suitable node (max replicas per node \
             limit exceed; 1 node not available for new tasks)\n  pending api[5]: no \
             suitable node (max replicas per node limit exceed; 1 node not available for new \
             tasks)\n"
        );
    }

    #[test]
    fn a_one_host_plan_notes_what_only_a_cluster_honours() {
        let mut project = crate::placement::tests::deploy_project();
        if let Some(web) = project.services.get_mut("web") {
            web.deploy.placement.max_replicas_per_node =
                Some(crate::spec::Spanned::new(1, Default::default()));
        }
        assert_eq!(
            notes(&project),
            [
                "service `web`: placement constraints (node.labels.zone==eu), \
                 max_replicas_per_node: 1 are honoured only on a cluster (--store); on this \
                 one host 3 replicas run, as with docker compose",
                "service `mon`: deploy.mode: global is honoured only on a cluster (--store); \
                 on this one host 1 replica runs, as with docker compose",
            ]
        );
    }
}
