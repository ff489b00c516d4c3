//! The whole multi-host path with real packets: three sandbox hosts, a 3-member etcd, one
//! `netcompose agent` per host; `up` from one host places a service's replicas one per node,
//! each agent builds its share and derives the other hosts' endpoints from `up`'s write,
//! turning them into VXLAN forwarding entries, names and VIP backends. A client on node 0 then reaches every replica
//! by address (ICMP, TCP, UDP), by name and through the VIP; when an agent is killed, its
//! endpoints leave the other hosts' overlay once its lease expires. Root tests.
//!
//! Cleanup: the agents are killed by their guard, the echo servers by theirs, every host is a
//! sandbox (its processes and namespaces go with it) and the cluster removes its etcd members
//! and underlay, panic included.

mod common;

use common::Servers;

use common::agents::{neighbours, until, Agents, TTL};
use common::cluster::Cluster;
use common::project::Project;
use common::require_root;

const COMPOSE: &str = "
services:
  web:
    deploy:
      replicas: 3
      placement: {max_replicas_per_node: 1}
    networks: [mesh]
  client:
    deploy:
      placement: {constraints: [node.hostname == n0]}
    networks: [mesh]
networks:
  mesh:
    driver: overlay
    ipam: {config: [{subnet: 10.72.0.0/24}]}
";
const PORT: u16 = 8080;

/// Which host runs replica `index` of web: the one whose namespaces hold it.
fn host_of(cluster: &Cluster, ns: &str) -> Option<usize> {
    (0..cluster.len()).find(|&h| {
        let out = cluster.host(h).run(&["ip", "netns", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
    })
}

#[test]
fn agents_carry_traffic_names_and_vips_across_hosts_and_drop_a_dead_host() {
    require_root("agents_carry_traffic_names_and_vips_across_hosts_and_drop_a_dead_host");
    let cluster = Cluster::new(3);
    let mut agents = Agents::start(&cluster, &[]);
    let name = format!("at{}", std::process::id());
    let projects: Vec<Project> = (0..3)
        .map(|h| Project::new(cluster.host(h), &name, COMPOSE))
        .collect();
    let url = cluster.store_url();
    let out = projects[0].nc(&["--store", &url, "up"]);
    common::agents::ok(&out, "up", &agents);

    // One web replica per node; the client on n0.
    let c = &projects[0];
    assert_eq!(host_of(&cluster, &c.ns("client", 1)), Some(0));
    let mut webs = Vec::new();
    for i in 1..=3 {
        let h = host_of(&cluster, &c.ns("web", i)).expect("every web replica runs somewhere");
        webs.push((i, h, projects[h].addr("web", i, "mesh")));
    }
    let mut hosts: Vec<usize> = webs.iter().map(|w| w.1).collect();
    hosts.sort();
    assert_eq!(hosts, [0, 1, 2], "one web replica per node: {webs:?}");
    let _servers = Servers(
        webs.iter()
            .map(|(i, h, _)| projects[*h].serve("web", *i, PORT))
            .collect(),
    );

    // Every replica by address, over ICMP, TCP and UDP, from node 0.
    for (i, _, addr) in &webs {
        c.wait_open(Some(("client", 1)), addr, PORT);
        assert_eq!(c.probe(Some(("client", 1)), &["icmp", addr]), ["open"]);
        let label = format!("web-{i} ");
        let tcp = c.probe(Some(("client", 1)), &["tcp", addr, "8080"]);
        assert!(tcp[0].starts_with(&label), "tcp {addr}: {tcp:?}");
        let udp = c.probe(Some(("client", 1)), &["udp", addr, "8080"]);
        assert!(udp[0].starts_with(&label), "udp {addr}: {udp:?}");
    }
    // A remote replica by its name, and the service's VIP over local and remote replicas.
    let (far, far_host, far_addr) = webs.iter().find(|w| w.1 != 0).cloned().unwrap();
    let named = c.probe(Some(("client", 1)), &["tcp", &c.ns("web", far), "8080"]);
    assert!(named[0].starts_with(&format!("web-{far} ")), "{named:?}");
    let answers = c.probe(Some(("client", 1)), &["tcp", "web", "8080", "40"]);
    let seen: std::collections::BTreeSet<&str> =
        answers.iter().filter_map(|l| l.split(' ').next()).collect();
    assert!(
        seen.len() >= 2,
        "the VIP reached only {seen:?}: {answers:?}"
    );

    // The far host's agent dies: once its lease is gone, node 0 no longer has its endpoint.
    assert!(neighbours(&cluster, 0).contains(&far_addr));
    agents.kill(far_host);
    let took = until(
        &agents,
        "the dead host's endpoint left node 0's overlay",
        || !neighbours(&cluster, 0).contains(&far_addr),
    );
    eprintln!("endpoint removed {took:?} after the kill (lease {TTL} s)");
    let after = c.probe(Some(("client", 1)), &["tcp", "web", "8080", "20"]);
    assert!(
        !after.iter().any(|l| l.starts_with(&format!("web-{far} "))),
        "the VIP still balances to the dead host's replica: {after:?}"
    );
}
