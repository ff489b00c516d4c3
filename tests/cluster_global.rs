//! `deploy.mode: global` on a 3-host sandbox cluster (tests/common/cluster.rs) with one agent
//! per host: one replica per matching node (the constraints apply, `replicas` is ignored as
//! Swarm does), each with its own address and name, reachable by name from another host; a
//! dead node's replica goes with it (nothing moves), and a node that joins gets one, with an
//! address of its own. Root test: the agents, echo servers, hosts and etcd are removed by
//! their guards, panic included.

mod common;

use common::Servers;

use common::agents::{address, namespaces, node, ok, placement, until, values, Agents, ROOT};
use common::cluster::Cluster;
use common::project::Project;
use common::require_root;
use std::collections::{BTreeMap, BTreeSet};

/// web on every node (its count ignored); edge on the nodes labelled role=edge.
const GLOBAL: &str = "
services:
  web:
    deploy: {mode: global, replicas: 5}
    networks: [mesh]
  edge:
    deploy:
      mode: global
      placement: {constraints: [node.labels.role == edge]}
    networks: [mesh]
networks:
  mesh:
    driver: overlay
    ipam: {config: [{subnet: 10.74.0.0/24}]}
";
const PORT: u16 = 8080;

/// The replicas of `service` in the stored placement: index → node.
fn of(cluster: &Cluster, name: &str, service: &str) -> BTreeMap<u32, String> {
    placement(cluster, name)
        .into_iter()
        .filter_map(|(k, n)| {
            let (svc, i) = k.trim_end_matches(']').split_once('[')?;
            let i: u32 = i.parse().ok()?;
            (svc == service).then_some((i, n))
        })
        .collect()
}

/// Wait until web replica `i` answers by its name from the edge replica `from` on n0.
fn reach(agents: &Agents, client: &Project, from: u32, i: u32) {
    let target = client.ns("web", i);
    until(agents, &format!("{target} answers by name"), || {
        client
            .probe(Some(("edge", from)), &["tcp", &target, "8080"])
            .first()
            .is_some_and(|l| l.starts_with(&format!("web-{i} ")))
    });
}

fn host(n: &str) -> usize {
    n.trim_start_matches('n').parse().unwrap()
}

#[test]
fn a_global_service_runs_once_per_matching_node_and_follows_the_nodes() {
    require_root("a_global_service_runs_once_per_matching_node_and_follows_the_nodes");
    let cluster = Cluster::new(3);
    let labels: [&[&str]; 3] = [&["role=edge"], &[], &["role=edge"]];
    let mut agents = Agents::start(&cluster, &labels);
    let name = format!("gl{}", std::process::id());
    let projects: Vec<Project> = (0..3)
        .map(|h| Project::new(cluster.host(h), &name, GLOBAL))
        .collect();
    let url = cluster.store_url();
    let up = projects[0].nc(&["--store", &url, "up", "--timeout", "60"]);
    ok(&up, "up", &agents);

    // One web per node, edge on n0 and n2 only; each with its own address.
    let web = of(&cluster, &name, "web");
    let on: BTreeSet<&String> = web.values().collect();
    assert_eq!(web.len(), 3, "{web:?}");
    assert_eq!(on.len(), 3, "one web per node: {web:?}");
    let edge = of(&cluster, &name, "edge");
    let edge_on: BTreeSet<&str> = edge.values().map(String::as_str).collect();
    assert_eq!(edge_on, BTreeSet::from(["n0", "n2"]), "{edge:?}");
    let addr = |i: u32| address(&cluster, &name, "mesh", &format!("web[{i}]"));
    let addrs: BTreeSet<String> = web.keys().map(|i| addr(*i).unwrap()).collect();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    for (i, n) in &web {
        let ns = projects[0].ns("web", *i);
        until(&agents, &format!("{ns} on {n}"), || {
            namespaces(&cluster, host(n)).contains(&ns)
        });
    }

    // Every web replica by its name, from the edge replica on n0.
    let (from, _) = edge.iter().find(|(_, n)| *n == "n0").unwrap();
    let client = &projects[0];
    let mut servers = Servers(
        web.iter()
            .map(|(i, n)| projects[host(n)].serve("web", *i, PORT))
            .collect(),
    );
    for i in web.keys() {
        reach(&agents, client, *from, *i);
    }

    // n1 dies: its web replica goes with it; the others stay where they were.
    let (lost, _) = web.iter().find(|(_, n)| *n == "n1").unwrap();
    agents.kill(1);
    until(&agents, "n1's replica removed", || {
        !placement(&cluster, &name).values().any(|n| n == "n1")
    });
    let mut kept = web.clone();
    kept.remove(lost);
    assert_eq!(of(&cluster, &name, "web"), kept, "nothing moved");

    // n1 comes back: it gets a web replica again, with an address no other replica has.
    agents.launch(&cluster, 1, &[]);
    until(&agents, "n1 runs web again", || {
        of(&cluster, &name, "web").values().any(|n| n == "n1")
    });
    let again = of(&cluster, &name, "web");
    assert_eq!(again.len(), 3, "{again:?}");
    let (back, _) = again.iter().find(|(_, n)| *n == "n1").unwrap();
    let others: BTreeSet<String> = kept.keys().map(|i| addr(*i).unwrap()).collect();
    let mine = addr(*back).expect("the new replica's address is stored");
    assert!(!others.contains(&mine), "{mine} is taken: {others:?}");
    let ns = client.ns("web", *back);
    until(&agents, &format!("{ns} on n1"), || {
        namespaces(&cluster, 1).contains(&ns)
    });
    servers.0.push(projects[1].serve("web", *back, PORT));
    reach(&agents, client, *from, *back);

    ok(&projects[0].nc(&["--store", &url, "down"]), "down", &agents);
    let left = values(&cluster, &format!("{ROOT}projects/{name}/"));
    assert!(left.is_empty(), "{left:?}");
    for i in 0..3 {
        until(&agents, &format!("{}'s namespaces gone", node(i)), || {
            !namespaces(&cluster, i)
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        });
    }
}
