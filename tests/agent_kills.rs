//! An agent killed ten times in a row (`kill -9`), on three sandbox hosts with a 3-member etcd:
//! each time, the replica it ran is placed on the other node its constraint allows, node 0's
//! overlay forwards that replica's MAC to the new node and to no dead one, and a client on
//! node 0 reaches it by name; then the agent comes back, takes its stale copy down, and the
//! next round kills the new node's agent. Root test.
//!
//! No time is asserted (bench/cluster.sh measures removal against TTL + 1 s): every wait is a
//! deadline that fails the test with the agents' logs.
//!
//! Cleanup: the agents are killed by their guard, the echo servers by theirs, every host is a
//! sandbox (its processes and namespaces go with it) and the cluster removes its etcd members
//! and underlay, panic included.

mod common;

use common::agents::{fdb, mac, namespaces, node, placement, until, Agents};
use common::cluster::{underlay_ip, Cluster};
use common::project::Project;
use common::{require_root, Servers};

const COMPOSE: &str = "
services:
  web:
    deploy:
      placement: {constraints: [node.hostname != n0]}
    networks: [ov]
  client:
    deploy:
      placement: {constraints: [node.hostname == n0]}
    networks: [ov]
networks:
  ov:
    driver: overlay
    ipam: {config: [{subnet: 10.76.0.0/24}]}
";
const PORT: u16 = 8080;
const KILLS: usize = 10;

/// The node index web[1] is placed on (1 or 2).
fn web_node(cluster: &Cluster, project: &str) -> Option<usize> {
    let on = placement(cluster, project).remove("web[1]")?;
    on.trim_start_matches('n').parse().ok()
}

#[test]
fn an_agent_killed_ten_times_is_dropped_each_time_and_its_replica_runs_elsewhere() {
    require_root("an_agent_killed_ten_times_is_dropped_each_time_and_its_replica_runs_elsewhere");
    let cluster = Cluster::new(3);
    let mut agents = Agents::start(&cluster, &[]);
    let name = format!("ak{}", std::process::id());
    let projects: Vec<Project> = (0..3)
        .map(|h| Project::new(cluster.host(h), &name, COMPOSE))
        .collect();
    let out = projects[0].nc(&["--store", &cluster.store_url(), "up"]);
    common::agents::ok(&out, "up", &agents);
    let c = &projects[0];
    let web_ns = c.ns("web", 1);
    let mac = mac(&cluster, &name, "ov", "web[1]").expect("web[1] has a MAC");
    let mut servers = Servers(Vec::new());

    for round in 1..=KILLS {
        let mut on = None;
        until(&agents, "web[1] is placed", || {
            on = web_node(&cluster, &name);
            on.is_some()
        });
        let on = on.unwrap_or_default();
        let other = 3 - on;
        until(
            &agents,
            &format!("round {round}: web[1] runs on n{on}"),
            || namespaces(&cluster, on).contains(&web_ns),
        );

        agents.kill(on);
        until(
            &agents,
            &format!("round {round}: web[1] moved to n{other}"),
            || {
                web_node(&cluster, &name) == Some(other)
                    && namespaces(&cluster, other).contains(&web_ns)
            },
        );
        let (to_new, to_dead) = (
            format!("dst {} ", underlay_ip(other)),
            format!("dst {} ", underlay_ip(on)),
        );
        until(
            &agents,
            &format!("round {round}: node 0 forwards web[1] to n{other} only"),
            || {
                let table = fdb(&cluster, 0);
                let entries: Vec<&str> = table.lines().filter(|l| l.starts_with(&mac)).collect();
                entries.iter().any(|l| l.contains(&to_new))
                    && !entries.iter().any(|l| l.contains(&to_dead))
            },
        );
        // The last round's server ran on the node just killed: stop it, serve on the new one.
        drop(Servers(std::mem::take(&mut servers.0)));
        servers.0.push(projects[other].serve("web", 1, PORT));
        until(
            &agents,
            &format!("round {round}: the client reaches web by name on n{other}"),
            || {
                c.probe(Some(("client", 1)), &["tcp", "web", "8080"])
                    .first()
                    .is_some_and(|l| l.starts_with("web-1 "))
            },
        );

        // Back: the returning agent takes its stale copy of web[1] down.
        agents.launch(&cluster, on, &[]);
        until(
            &agents,
            &format!("round {round}: {} back without web[1]", node(on)),
            || !namespaces(&cluster, on).contains(&web_ns),
        );
    }
}
