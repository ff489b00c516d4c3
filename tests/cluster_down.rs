//! `ps` and `down` on a 3-host sandbox cluster (tests/common/cluster.rs): `ps` with the store
//! shows each replica's node and every node's converged revision; `down` right after an
//! agent's `kill -9` (its lease still alive) returns once that lease lapsed, leaves no key of
//! the project, and the agent, back, takes its share down. Root test: the agents, hosts and
//! etcd are removed by their guards, panic included.

mod common;

use common::agents::{
    compose, namespaces, node, ok, placement, project, status_revision, until, values, Agents, ROOT,
};
use common::cluster::Cluster;
use common::require_root;

/// web: one replica per node.
const WEB: &str = "services:\n  web:\n    deploy:\n      replicas: 3\n      placement: {max_replicas_per_node: 1}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n";

#[test]
fn ps_shows_each_replicas_node_and_down_after_a_kill_cleans_up_everywhere() {
    require_root("ps_shows_each_replicas_node_and_down_after_a_kill_cleans_up_everywhere");
    let cluster = Cluster::new(3);
    let mut agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("dn");
    let file = compose(dir.path(), &name, WEB);
    let up = cluster.netcompose(0, &["-f", &file, "up", "--timeout", "60"]);
    ok(&up, "up", &agents);

    let ps = ok(
        &cluster.netcompose(1, &["-p", &name, "ps", "--json"]),
        "ps",
        &agents,
    );
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let placed = placement(&cluster, &name);
    let replicas = ps["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{ps}");
    for r in replicas {
        let key = format!("{}[{}]", r["service"].as_str().unwrap(), r["replica"]);
        assert_eq!(r["node"], placed[&key], "{ps}");
    }
    for i in 0..3 {
        let n = ps["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node(i))
            .unwrap_or_else(|| panic!("{} missing: {ps}", node(i)));
        assert_eq!(n["live"], true, "{ps}");
        let reported = status_revision(&cluster, &name, &node(i)).unwrap();
        assert_eq!(n["revision"], reported, "{ps}");
    }

    // kill -9 of n1, then down at once: n1's lease still lives, so down waits it out.
    agents.kill(1);
    let down = cluster.netcompose(2, &["-p", &name, "down"]);
    ok(&down, "down", &agents);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("node n1: lost its lease"), "{stderr}");
    let left = values(&cluster, &format!("{ROOT}projects/{name}/"));
    assert!(left.is_empty(), "{left:?}");
    let ours = |i: usize| {
        namespaces(&cluster, i)
            .into_iter()
            .filter(|n| n.starts_with(&format!("{name}-")))
            .collect::<Vec<_>>()
    };
    for i in [0, 2] {
        assert!(ours(i).is_empty(), "{}: {:?}", node(i), ours(i));
    }
    assert!(
        !ours(1).is_empty(),
        "n1's replica runs on without its agent"
    );

    // n1 comes back: the project is gone, so it takes its share down.
    agents.launch(&cluster, 1, &[]);
    until(&agents, "n1's namespaces gone", || ours(1).is_empty());
}
