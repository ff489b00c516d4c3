//! `netcompose agent` on a 3-host sandbox cluster (tests/common/cluster.rs), one agent per
//! host started contained in its host and killed by the guard: the agents register, `up`
//! from one host converges on all three with the replicas where the placement puts them, a
//! killed agent's keys go with its lease and its replicas are placed on the others, an agent
//! restarted within its TTL keeps its lease, two `up`s from two hosts at once share no
//! address, MAC or VNI, and `down` leaves no key, namespace or process. Root tests.

mod common;

use common::agents::{
    compose, fdb, live_nodes, namespaces, node, ok, placement, project, until, values, Agents,
    ROOT, TTL,
};
use common::cluster::{underlay_ip, Cluster};
use common::require_root;
use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

/// web: 2 replicas on zone a only; db: 2 replicas, at most 1 per node.
const PLACED: &str = "services:\n  web:\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.labels.zone == a]\n    networks: [ov]\n  db:\n    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n";

fn check_placement(cluster: &Cluster, name: &str, agents: &Agents, dead: &[usize]) {
    let assignment = placement(cluster, name);
    let zone_a: Vec<String> = [0, 1]
        .iter()
        .filter(|i| !dead.contains(i))
        .map(|i| node(*i))
        .collect();
    let mut db_nodes = HashSet::new();
    for (replica, on) in &assignment {
        if replica.starts_with("web[") {
            assert!(zone_a.contains(on), "{replica} on {on}: {assignment:?}");
        } else {
            assert!(
                db_nodes.insert(on.clone()),
                "two db on {on}: {assignment:?}"
            );
        }
        let i: usize = on.trim_start_matches('n').parse().unwrap();
        assert!(!dead.contains(&i), "{replica} on dead {on}");
        let (svc, idx) = replica.trim_end_matches(']').split_once('[').unwrap();
        let ns = format!("{name}-{svc}-{idx}");
        until(agents, &format!("{ns} on {on}"), || {
            namespaces(cluster, i).contains(&ns)
        });
    }
    assert_eq!(assignment.len(), 4, "{assignment:?}");
}

#[test]
fn agents_register_converge_fail_over_and_down_leaves_nothing() {
    require_root("agents_register_converge_fail_over_and_down_leaves_nothing");
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[&["zone=a"], &["zone=a"], &["zone=b"]]);
    until(agents, "3 nodes registered", || {
        live_nodes(&cluster).len() == 3
    });
    let listed = ok(&cluster.netcompose(1, &["nodes"]), "nodes", agents);
    for i in 0..3 {
        assert!(listed.contains(&node(i)), "{listed}");
        assert!(listed.contains(&underlay_ip(i)), "{listed}");
    }
    assert!(listed.contains("zone=a"), "{listed}");

    let dir = tempfile::tempdir().unwrap();
    let name = project("p");
    let file = compose(dir.path(), &name, PLACED);
    let up = cluster.netcompose(0, &["-f", &file, "up", "--timeout", "60"]);
    ok(&up, "up", agents);
    let stderr = String::from_utf8_lossy(&up.stderr);
    for i in 0..3 {
        assert!(
            stderr.contains(&format!("node {}: converged", node(i))),
            "{stderr}"
        );
    }
    let statuses = values(&cluster, &format!("{ROOT}projects/{name}/status/"));
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    check_placement(&cluster, &name, agents, &[]);
    let ps = ok(&cluster.netcompose(2, &["-p", &name, "ps"]), "ps", agents);
    for (replica, on) in placement(&cluster, &name) {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&replica) && l.ends_with(&on)),
            "{ps}"
        );
    }
    for i in 0..3 {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&node(i)) && l.ends_with("converged")),
            "{ps}"
        );
    }
    // No node publishes endpoints: each derives the others' and programs them at their
    // node's underlay address.
    let eps = values(&cluster, &format!("{ROOT}projects/{name}/ep/"));
    assert!(eps.is_empty(), "{eps:?}");
    let macs = macs(&cluster, &name);
    for (replica, on) in placement(&cluster, &name) {
        let i: usize = on.trim_start_matches('n').parse().unwrap();
        let mac = &macs[&replica];
        assert_eq!(mac.len(), 17, "{replica}: {mac}");
        for h in (0..3).filter(|h| *h != i) {
            let dst = format!("dst {}", underlay_ip(i));
            until(agents, &format!("{replica} in host {h}'s FDB"), || {
                fdb(&cluster, h)
                    .lines()
                    .any(|l| l.starts_with(mac.as_str()) && l.contains(&dst))
            });
        }
    }

    // kill -9 of n1: its keys go with its lease, its replicas are placed on the others.
    let killed = Instant::now();
    agents.kill(1);
    until(agents, "n1's keys gone", || {
        let all = values(&cluster, ROOT);
        !all.keys().any(|k| k.ends_with("/n1"))
    });
    eprintln!(
        "n1's keys gone {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    until(agents, "n1's replicas placed elsewhere", || {
        !placement(&cluster, &name).values().any(|n| n == "n1")
    });
    check_placement(&cluster, &name, agents, &[1]);

    // down from host 2: every key, namespace and daemon of the project goes.
    ok(
        &cluster.netcompose(2, &["-p", &name, "down"]),
        "down",
        agents,
    );
    let left = values(&cluster, &format!("{ROOT}projects/{name}/"));
    assert!(left.is_empty(), "{left:?}");
    // n1 comes back after the project was taken down: it takes down what it had built.
    agents.launch(&cluster, 1, &["zone=a"]);
    for i in 0..3 {
        until(agents, "namespaces gone", || {
            !namespaces(&cluster, i)
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        });
        until(agents, "the project daemon gone", || {
            daemons(&cluster, i, &name).is_empty()
        });
    }
    let left = values(&cluster, &format!("{ROOT}projects/{name}/"));
    assert!(left.is_empty(), "{left:?}");
}

/// The MAC of every replica on network `ov` of `project`: owner (`web[1]`) → MAC.
fn macs(cluster: &Cluster, project: &str) -> BTreeMap<String, String> {
    let key = format!("{ROOT}projects/{project}/allocations");
    let text = values(cluster, &key).remove(&key).unwrap_or_default();
    let a: serde_json::Value = serde_json::from_str(&text).unwrap();
    a["networks"]["ov"]["macs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// The pids of `project`'s daemon in host `i` (its network namespace).
fn daemons(cluster: &Cluster, i: usize, project: &str) -> String {
    let script = format!(
        "for p in $(pgrep -f '[n]etcompose daemon.*{project}'); do \
           [ \"$(readlink /proc/$p/ns/net)\" = \"$(readlink /proc/self/ns/net)\" ] && echo $p; \
         done; true"
    );
    let out = cluster.host(i).run(&["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every DELETE event under the root seen while `f` runs.
fn deletes_during(cluster: &Cluster, f: impl FnOnce()) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = cluster.with_client(cluster.endpoints(), move |mut c| {
                Box::pin(async move {
                    let mut stream = c
                        .watch(ROOT, Some(etcd_client::WatchOptions::new().with_prefix()))
                        .await
                        .expect("watch");
                    let _ = tx.send(String::new());
                    loop {
                        if stop_rx.try_recv().is_ok() {
                            return;
                        }
                        let next =
                            tokio::time::timeout(Duration::from_millis(100), stream.message())
                                .await;
                        let Ok(Ok(Some(m))) = next else { continue };
                        for e in m.events() {
                            if e.event_type() == etcd_client::EventType::Delete {
                                let key = e
                                    .kv()
                                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                                    .unwrap_or_default();
                                let _ = tx.send(key);
                            }
                        }
                    }
                })
            });
        });
        // The watch is open before anything happens.
        let _ = rx.recv();
        f();
        let _ = stop_tx.send(());
    });
    rx.try_iter().collect()
}

#[test]
fn an_agent_restarted_within_its_ttl_keeps_its_lease() {
    require_root("an_agent_restarted_within_its_ttl_keeps_its_lease");
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[]);
    until(agents, "3 nodes registered", || {
        live_nodes(&cluster).len() == 3
    });
    let dir = tempfile::tempdir().unwrap();
    let name = project("r");
    let file = compose(
        dir.path(),
        &name,
        "services:\n  web:\n    deploy:\n      replicas: 3\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n",
    );
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", agents);
    let before = values(&cluster, ROOT);
    let deletes = deletes_during(&cluster, || {
        agents.kill(0);
        agents.launch(&cluster, 0, &[]);
        // Long enough for the old lease to have expired had it not been re-attached.
        std::thread::sleep(Duration::from_secs(TTL * 2 + 1));
    });
    assert!(
        deletes.is_empty(),
        "removed: {deletes:?}\n{}",
        agents.logs()
    );
    let after = values(&cluster, ROOT);
    let n0 = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.keys().filter(|k| k.ends_with("/n0")).cloned().collect()
    };
    assert_eq!(n0(&before), n0(&after));
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        agents,
    );
}

#[test]
fn two_ups_from_two_hosts_at_once_share_no_address_mac_or_vni() {
    require_root("two_ups_from_two_hosts_at_once_share_no_address_mac_or_vni");
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[]);
    until(agents, "3 nodes registered", || {
        live_nodes(&cluster).len() == 3
    });
    let dir = tempfile::tempdir().unwrap();
    let names = [project("a"), project("b")];
    let body = "services:\n  web:\n    deploy:\n      replicas: 3\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n";
    let files: Vec<String> = names.iter().map(|n| compose(dir.path(), n, body)).collect();
    let children: Vec<Child> = (0..2)
        .map(|i| cluster.spawn_netcompose(i, &["-f", &files[i], "up"]))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        ok(&out, "concurrent up", agents);
    }
    let mut addresses = HashSet::new();
    let mut macs = HashSet::new();
    let mut vnis = HashSet::new();
    for name in &names {
        let v = values(&cluster, &format!("{ROOT}projects/{name}/allocations"));
        let a: serde_json::Value = serde_json::from_str(v.values().next().unwrap()).unwrap();
        let ov = &a["networks"]["ov"];
        assert!(vnis.insert(ov["vni"].to_string()), "VNI twice: {ov}");
        for addrs in ov["addresses"].as_object().unwrap().values() {
            for ip in addrs.as_array().unwrap() {
                assert!(addresses.insert(ip.to_string()), "{ip} twice");
            }
        }
        for mac in ov["macs"].as_object().unwrap().values() {
            assert!(macs.insert(mac.to_string()), "{mac} twice");
        }
    }
    for name in &names {
        ok(
            &cluster.netcompose(1, &["-p", name, "down"]),
            "down",
            agents,
        );
        assert!(values(&cluster, &format!("{ROOT}projects/{name}/")).is_empty());
    }
}

#[test]
fn up_without_a_live_agent_says_to_start_one() {
    require_root("up_without_a_live_agent_says_to_start_one");
    let cluster = Cluster::new(1);
    let dir = tempfile::tempdir().unwrap();
    let name = project("none");
    let file = compose(
        dir.path(),
        &name,
        "services:\n  web:\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n",
    );
    let out = cluster.netcompose(0, &["-f", &file, "up"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node of the cluster is live"), "{err}");
    assert!(err.contains("netcompose agent"), "{err}");
    assert!(values(&cluster, &format!("{ROOT}projects/{name}/")).is_empty());
}

#[test]
fn the_agent_refuses_a_plain_text_store_unless_told() {
    require_root("the_agent_refuses_a_plain_text_store_unless_told");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .args(["--store", "etcd://127.0.0.1:1", "agent", "--node", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing a plain-text store"), "{err}");
    assert!(err.contains("--insecure-store"), "{err}");
}
