//! The agent's and the cluster commands' logic against the in-memory KV (no kernel): a lease
//! kept across restarts, a node registered once, one agent of two wins a placement, `up`
//! refuses an empty cluster and writes spec, allocations and placement in one revision, then
//! waits for every node's report.

use super::cluster::{down_cluster, up_cluster, ClusterProgress, NodeState};
use super::project::Agent;
use super::*;
use crate::reconcile::{Applied, ReconcileError};
use crate::state::cluster::memory::MemoryKv;
use crate::state::cluster::{placement_key, spec_key, status_key, SpecRecord, StatusRecord};
use crate::state::kv::Op;
use std::collections::BTreeMap;
use std::sync::Mutex;

struct Quiet(Mutex<Vec<String>>);

impl Quiet {
    fn new() -> Quiet {
        Quiet(Mutex::new(Vec::new()))
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl AgentLog for Quiet {
    fn info(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Events for Quiet {
    fn warning(&self, _: &str) {}
    fn waiting_for_lock(&self, _: &crate::project_name::ProjectName) {}
    fn drift(&self, _: &crate::plan::Change) {}
    fn applying(&self, _: &crate::plan::Summary) {}
    fn progress(&self, _: &str, _: &str, _: Duration) {}
    fn applied(&self, _: &Applied) {}
    fn daemon(&self, _: &crate::reconcile::DaemonEvent) {}
}

impl ClusterProgress for Quiet {
    fn node(&self, node: &str, state: &NodeState) {
        self.info(&format!("{node}: {state:?}"));
    }
}

fn config(node: &str, dir: &std::path::Path) -> AgentConfig {
    AgentConfig {
        node: node.into(),
        record: NodeRecord {
            underlay: "10.0.0.1".parse().unwrap(),
            underlay_mtu: 1500,
            vxlan_port: 4789,
            labels: Default::default(),
            version: "0".into(),
            wireguard: None,
        },
        ttl: 5,
        dir: dir.join(node),
    }
}

#[test]
fn a_restart_keeps_a_live_lease_and_a_lost_one_is_granted_anew() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("a", dir.path());
    create_private(&cfg.dir).unwrap();
    let log = Quiet::new();
    let first = attach(&kv, &cfg, &log).unwrap();
    assert_eq!(attach(&kv, &cfg, &log).unwrap(), first);
    kv.expire(first);
    let second = attach(&kv, &cfg, &log).unwrap();
    assert_ne!(second, first);
    assert_eq!(
        std::fs::read_to_string(lease_file(&cfg)).unwrap(),
        second.to_string()
    );
}

#[test]
fn a_node_is_registered_once() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("a", dir.path());
    let lease = kv.grant(5).unwrap();
    register(&kv, &cfg, &ClusterSnapshot::read(&kv).unwrap(), lease).unwrap();
    let rev = kv.revision();
    register(&kv, &cfg, &ClusterSnapshot::read(&kv).unwrap(), lease).unwrap();
    assert_eq!(kv.revision(), rev, "no write in steady state");
    let s = ClusterSnapshot::read(&kv).unwrap();
    assert_eq!(s.nodes["a"].lease, lease);
}

/// A project file and its spec record.
fn spec_of(dir: &std::path::Path, body: &str) -> (crate::load::LoadOptions, SpecRecord) {
    let file = dir.join("compose.yaml");
    std::fs::write(&file, body).unwrap();
    let opts = crate::load::LoadOptions {
        files: vec![file],
        environment: Some(Default::default()),
        ..Default::default()
    };
    let checked = crate::pipeline::checked_project(&opts).unwrap();
    let record = spec::capture(&opts, &checked, &Default::default()).unwrap();
    (opts, record)
}

const TWO_WEB: &str = "name: pl\nservices:\n  web:\n    deploy:\n      replicas: 2\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n";

#[test]
fn when_a_node_dies_one_agent_of_two_writes_the_new_placement() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let (_, record) = spec_of(dir.path(), TWO_WEB);
    let (a, b, c) = (
        config("a", dir.path()),
        config("b", dir.path()),
        config("c", dir.path()),
    );
    let leases: Vec<i64> = [&a, &b, &c]
        .iter()
        .map(|cfg| {
            let lease = kv.grant(5).unwrap();
            register(&kv, cfg, &ClusterSnapshot::read(&kv).unwrap(), lease).unwrap();
            lease
        })
        .collect();
    let placement = crate::placement::Placement {
        assignment: [
            (crate::placement::ReplicaKey::new("web", 1), "a".to_string()),
            (crate::placement::ReplicaKey::new("web", 2), "c".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let put = |key: String, v: Vec<u8>| Op::Put { key, value: v };
    kv.commit_on(
        None,
        &[],
        &[
            put(spec_key("pl"), serde_json::to_vec(&record).unwrap()),
            put(placement_key("pl"), serde_json::to_vec(&placement).unwrap()),
        ],
    )
    .unwrap();
    kv.expire(leases[2]);
    let snapshot = ClusterSnapshot::read(&kv).unwrap();
    let before = kv.revision();
    let log = Quiet::new();
    let local = crate::state::FileStore::new(dir.path().join("state"));
    for (cfg, lease) in [(&a, leases[0]), (&b, leases[1])] {
        let mut agent = Agent::new(&kv, &local, cfg, &log, &log);
        agent.converge(&snapshot, lease);
    }
    assert_eq!(kv.revision(), before + 1, "one placement written");
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l.contains("placed again: web[2] c→")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("another agent won")),
        "{lines:?}"
    );
    let after = ClusterSnapshot::read(&kv).unwrap();
    let placed = &after.projects["pl"].placement.as_ref().unwrap().value;
    assert_ne!(
        placed.assignment[&crate::placement::ReplicaKey::new("web", 2)],
        "c"
    );
}

#[test]
fn up_without_a_live_node_writes_nothing() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let (opts, _) = spec_of(dir.path(), TWO_WEB);
    let log = Quiet::new();
    let e = up_cluster(
        &kv.store(),
        &opts,
        &Default::default(),
        Duration::from_secs(1),
        &log,
        &log,
    )
    .unwrap_err();
    assert!(
        matches!(e, ReconcileError::Cluster(ClusterError::NoLiveNodes)),
        "{e}"
    );
    assert!(kv.dump().is_empty(), "{:?}", kv.dump());
}

#[test]
fn up_writes_in_one_revision_and_waits_for_every_node() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let (opts, _) = spec_of(dir.path(), TWO_WEB);
    let nodes: Vec<(String, i64)> = ["a", "b"]
        .iter()
        .map(|n| {
            let lease = kv.grant(5).unwrap();
            let cfg = config(n, dir.path());
            register(&kv, &cfg, &ClusterSnapshot::read(&kv).unwrap(), lease).unwrap();
            (n.to_string(), lease)
        })
        .collect();
    // Stand-ins for the agents: report the revision at which they see the spec.
    let rx = kv.watch(crate::state::cluster::ROOT, 0).unwrap();
    let reporter = {
        let kv = kv.clone();
        std::thread::spawn(move || {
            while rx.recv_timeout(Duration::from_secs(5)).is_ok() {
                let s = ClusterSnapshot::read(&kv).unwrap();
                let Some(p) = s.projects.get("pl") else {
                    continue;
                };
                if p.spec.is_none() || !p.status.is_empty() {
                    continue;
                }
                for (node, lease) in &nodes {
                    let status = StatusRecord {
                        revision: s.revision,
                        ..Default::default()
                    };
                    let key = status_key("pl", node);
                    let value = serde_json::to_vec(&status).unwrap();
                    kv.commit_on(Some(*lease), &[], &[Op::Put { key, value }])
                        .unwrap();
                }
                return;
            }
        })
    };
    let log = Quiet::new();
    let written = up_cluster(
        &kv.store(),
        &opts,
        &Default::default(),
        Duration::from_secs(10),
        &log,
        &log,
    )
    .unwrap();
    reporter.join().unwrap();
    let s = ClusterSnapshot::read(&kv).unwrap();
    let p = &s.projects["pl"];
    for rev in [
        p.spec.as_ref().unwrap().mod_revision,
        p.allocations.as_ref().unwrap().mod_revision,
        p.placement.as_ref().unwrap().mod_revision,
    ] {
        assert_eq!(rev, written);
    }
    assert_eq!(p.placement.as_ref().unwrap().value.assignment.len(), 2);
    let lines = log.lines();
    for n in ["a", "b"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{n}: Converged"))),
            "{lines:?}"
        );
    }
}

const GLOBAL: &str = "name: gl\nservices:\n  mon:\n    deploy: {mode: global, replicas: 5}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n";

/// Registers `names` on their own leases.
fn register_all(kv: &MemoryKv, dir: &std::path::Path, names: &[&str]) -> Vec<(AgentConfig, i64)> {
    names
        .iter()
        .map(|n| {
            let lease = kv.grant(5).unwrap();
            let cfg = config(n, dir);
            register(kv, &cfg, &ClusterSnapshot::read(kv).unwrap(), lease).unwrap();
            (cfg, lease)
        })
        .collect()
}

/// The replicas with addresses on `ov` and their addresses, as stored (the VIP aside).
fn stored_addresses(kv: &MemoryKv) -> BTreeMap<String, Vec<std::net::IpAddr>> {
    let s = ClusterSnapshot::read(kv).unwrap();
    let a = &s.projects["gl"].allocations.as_ref().unwrap().value;
    let mut out = a.networks["ov"].addresses.clone();
    out.retain(|owner, _| owner.starts_with("mon["));
    out
}

#[test]
fn a_global_service_runs_one_addressed_replica_per_node_and_a_joining_node_gets_one() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let (opts, _) = spec_of(dir.path(), GLOBAL);
    register_all(&kv, dir.path(), &["a", "b", "c"]);
    let log = Quiet::new();
    // No agent reports: the write is what is checked, the wait times out.
    let e = up_cluster(
        &kv.store(),
        &opts,
        &Default::default(),
        Duration::ZERO,
        &log,
        &log,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ReconcileError::Cluster(ClusterError::NotConverged { .. })
        ),
        "{e}"
    );
    let s = ClusterSnapshot::read(&kv).unwrap();
    let placed = &s.projects["gl"]
        .placement
        .as_ref()
        .unwrap()
        .value
        .assignment;
    let on: Vec<String> = placed.iter().map(|(k, n)| format!("{k}@{n}")).collect();
    assert_eq!(
        on,
        ["mon[1]@a", "mon[2]@b", "mon[3]@c"],
        "replicas: 5 is ignored"
    );
    let addresses = stored_addresses(&kv);
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    let distinct: std::collections::BTreeSet<_> = addresses.values().collect();
    assert_eq!(distinct.len(), 3, "{addresses:?}");

    // d joins: one agent places mon[4] there and stores its address in the same revision.
    let d = register_all(&kv, dir.path(), &["d"]);
    let snapshot = ClusterSnapshot::read(&kv).unwrap();
    let before = kv.revision();
    let local = crate::state::FileStore::new(dir.path().join("state"));
    let mut agent = Agent::new(&kv, &local, &d[0].0, &log, &log);
    agent.converge(&snapshot, d[0].1);
    assert_eq!(
        kv.revision(),
        before + 1,
        "placement and allocations in one revision"
    );
    let s = ClusterSnapshot::read(&kv).unwrap();
    let p = &s.projects["gl"];
    let placed = &p.placement.as_ref().unwrap().value.assignment;
    assert_eq!(placed[&crate::placement::ReplicaKey::new("mon", 4)], "d");
    assert_eq!(p.allocations.as_ref().unwrap().mod_revision, before + 1);
    let after = stored_addresses(&kv);
    assert_eq!(after.len(), 4, "{after:?}");
    for (owner, addrs) in &addresses {
        assert_eq!(&after[owner], addrs, "{owner} kept its address");
    }
    assert!(!addresses.values().any(|a| a == &after["mon[4]"]));
}

#[test]
fn down_is_one_guarded_revision_and_reads_again_after_a_lost_race() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    let (opts, record) = spec_of(dir.path(), TWO_WEB);
    register_all(&kv, dir.path(), &["a", "b"]);
    let log = Quiet::new();
    let project = crate::project_name::ProjectName::new("pl".to_string()).unwrap();
    let prefix = crate::state::cluster::project_prefix("pl");
    let left = || -> Vec<String> {
        kv.dump()
            .into_keys()
            .filter(|k| k.starts_with(&prefix))
            .collect()
    };
    for race in [false, true] {
        let up = up_cluster(
            &kv.store(),
            &opts,
            &Default::default(),
            Duration::ZERO,
            &log,
            &log,
        );
        assert!(up.is_err(), "no agent reports");
        assert!(left().len() >= 4, "{:?}", left());
        if race {
            // An `up` rewrites the spec between down's read and its delete.
            kv.cut_in(&spec_key("pl"), &serde_json::to_vec(&record).unwrap());
        }
        let before = kv.revision();
        down_cluster(&kv.store(), &project, Duration::from_secs(1), &log).unwrap();
        assert!(left().is_empty(), "{:?}", left());
        let cost = if race { 2 } else { 1 };
        assert_eq!(kv.revision(), before + cost, "race: {race}");
    }
    let before = kv.revision();
    down_cluster(&kv.store(), &project, Duration::from_secs(1), &log).unwrap();
    assert_eq!(kv.revision(), before, "nothing to delete, nothing written");
}

#[test]
fn a_burst_is_one_pass_and_a_compacted_watch_lists_again() {
    let (stop, lost, log) = (AtomicBool::new(false), AtomicBool::new(false), Quiet::new());
    let (tx, rx) = std::sync::mpsc::channel();
    for revision in 1..=5 {
        tx.send(Watched::Changed { revision }).unwrap();
    }
    assert!(wait(&rx, &stop, &lost, &log), "the watch goes on");
    assert!(rx.try_recv().is_err(), "the burst was drained");
    tx.send(Watched::Compacted).unwrap();
    assert!(!wait(&rx, &stop, &lost, &log), "list again, watch again");
    tx.send(Watched::Ended("closed".into())).unwrap();
    assert!(!wait(&rx, &stop, &lost, &log));
    lost.store(true, Ordering::SeqCst);
    assert!(wait(&rx, &stop, &lost, &log), "a lost lease ends the wait");
}
