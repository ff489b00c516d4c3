//! The etcd store on a 3-host sandbox cluster (tests/common/cluster.rs): `plan` on another
//! host reads what `up` stored, concurrent `up`s from several hosts never share an address,
//! MAC or VNI, a write survives the loss of a follower and then of the leader, `down` removes
//! the project's keys, and a cluster leaves nothing behind. Root tests, except the URL one.
//! `up` and `down` on an etcd store need live agents (tests/common/agents.rs): one per host.

mod common;

use common::agents::Agents;
use common::cluster::Cluster;
use common::require_root;
use std::collections::HashSet;
use std::process::Output;

const PROJECTS: &str = "/netcompose/v1/projects/";

/// A project name unique to this test process (cgroups are machine-wide).
fn project(tag: &str) -> String {
    format!("se{}{tag}", std::process::id())
}

/// A Compose file with one overlay network (no subnet: the store's IPAM picks it).
fn compose(dir: &std::path::Path, name: &str, replicas: u32) -> String {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nservices:\n  web:\n    deploy:\n      replicas: {replicas}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n"
        ),
    )
    .expect("write compose file");
    file.display().to_string()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The allocations of every project in the store, read with netcompose's own store.
fn stored(cluster: &Cluster) -> Vec<netcompose::state::State> {
    use netcompose::state::{url, Store};
    let url = match url::parse(Some(&cluster.store_url())).unwrap() {
        url::StoreUrl::Etcd(e) => e,
        url::StoreUrl::File { .. } => unreachable!("an etcd URL"),
    };
    cluster.host(0).enter(move || {
        let store = netcompose::state::EtcdStore::open(&url, None).unwrap();
        let all = store.all();
        assert!(all.unreadable.is_empty(), "{:?}", all.unreadable);
        all.states
    })
}

#[test]
fn plan_on_another_host_reads_the_state_up_stored_and_down_removes_it() {
    require_root("plan_on_another_host_reads_the_state_up_stored_and_down_removes_it");
    let cluster = Cluster::new(3);
    let _agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("p");
    let file = compose(dir.path(), &name, 2);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up on host 1");
    let keys = cluster.keys(&format!("{PROJECTS}{name}/"));
    assert!(
        keys.iter().any(|k| k.ends_with("/allocations"))
            && keys.iter().any(|k| k.ends_with("/desired")),
        "{keys:?}"
    );

    // Host 2 has none of the project in its kernel; its plan (each node's share, with the
    // allocations up would store) allocates what host 1 stored.
    let plan = ok(
        &cluster.netcompose(1, &["-f", &file, "plan", "--json"]),
        "plan on host 2",
    );
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let states = stored(&cluster);
    let state = states.iter().find(|s| s.project == name).unwrap();
    let planned: netcompose::ipam::Allocations =
        serde_json::from_value(plan["allocations"].clone()).unwrap();
    assert_eq!(planned, state.allocations);
    assert!(
        state.allocations.networks["ov"].vni.is_some(),
        "no VNI stored"
    );
    let ls = ok(&cluster.netcompose(2, &["ls"]), "ls on host 3");
    assert!(ls.contains(&name), "{ls}");

    ok(
        &cluster.netcompose(0, &["-f", &file, "down"]),
        "down on host 1",
    );
    let left = cluster.keys(&format!("{PROJECTS}{name}/"));
    assert!(left.is_empty(), "keys left after down: {left:?}");
}

#[test]
fn concurrent_ups_from_three_hosts_share_no_address_mac_or_vni() {
    require_root("concurrent_ups_from_three_hosts_share_no_address_mac_or_vni");
    let cluster = Cluster::new(3);
    let _agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["a", "b", "c"].iter().map(|t| project(t)).collect();
    let files: Vec<String> = names.iter().map(|n| compose(dir.path(), n, 3)).collect();
    // All three start before any can finish: each allocates from the same empty store.
    let runs: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| cluster.spawn_netcompose(i, &["-f", f, "up"]))
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        ok(
            &run.wait_with_output().unwrap(),
            &format!("up on host {}", i + 1),
        );
    }
    let states = stored(&cluster);
    assert_eq!(states.len(), 3);
    let (mut subnets, mut addrs, mut macs, mut vnis) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    for s in &states {
        let net = &s.allocations.networks["ov"];
        for subnet in &net.subnets {
            assert!(subnets.insert(*subnet), "subnet {subnet} handed out twice");
        }
        for a in net.addresses.values().flatten() {
            assert!(addrs.insert(*a), "address {a} handed out twice");
        }
        for m in net.macs.values() {
            assert!(macs.insert(m.clone()), "MAC {m} handed out twice");
        }
        let vni = net.vni.expect("an overlay's VNI");
        assert!(vnis.insert(vni), "VNI {vni} handed out twice");
    }
    for (i, f) in files.iter().enumerate() {
        ok(&cluster.netcompose(i, &["-f", f, "down"]), "down");
    }
    assert!(cluster
        .keys(PROJECTS)
        .iter()
        .all(|k| !names.iter().any(|n| k.contains(n.as_str()))));
}

#[test]
fn a_write_succeeds_after_a_follower_dies_then_after_the_leader_dies() {
    require_root("a_write_succeeds_after_a_follower_dies_then_after_the_leader_dies");
    let mut cluster = Cluster::new(3);
    let _agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("f");
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    cluster.kill_member(follower);
    let file = compose(dir.path(), &name, 1);
    ok(
        &cluster.netcompose(leader, &["-f", &file, "up"]),
        "up without a follower",
    );
    cluster.start_member(follower);
    let leader = cluster.leader();
    cluster.kill_member(leader);
    // One more replica: a write of new allocations, through the two members left.
    let file = compose(dir.path(), &name, 2);
    let writer = (leader + 1) % 3;
    ok(
        &cluster.netcompose(writer, &["-f", &file, "up"]),
        "up without the leader",
    );
    let states = stored(&cluster);
    let state = states.iter().find(|s| s.project == name).unwrap();
    let owners = &state.allocations.networks["ov"].addresses;
    assert!(owners.contains_key("web[2]"), "{owners:?}");
    ok(&cluster.netcompose(writer, &["-f", &file, "down"]), "down");
}

#[test]
fn a_cluster_leaves_no_process_namespace_or_data_behind() {
    require_root("a_cluster_leaves_no_process_namespace_or_data_behind");
    let cluster = Cluster::new(3);
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.member_pid(i)).collect();
    let namespaces: Vec<String> = (0..3)
        .map(|i| cluster.host(i).host_ns().to_string())
        .chain([cluster.underlay_ns().to_string()])
        .collect();
    let data = cluster.data_path().to_path_buf();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    // By command line, not pid: a pid may be reused at once on a busy machine.
    let data_arg = format!("--data-dir={}", data.display());
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&data_arg),
            "etcd holder {pid} survived"
        );
    }
    let survivors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&data_arg))
        .count();
    assert_eq!(survivors, 0, "an etcd of this cluster survived");
    let listed = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for ns in namespaces {
        assert!(!listed.contains(&ns), "namespace {ns} left");
    }
    assert!(!data.exists(), "etcd data left in {}", data.display());
}

#[test]
fn a_malformed_store_url_is_a_diagnostic_and_nothing_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .args(["--store", "etcd://ops:secret@h1:2379", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a password in the URL"), "{err}");
    assert!(err.contains("NETCOMPOSE_STORE_PASSWORD"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .args(["ls"])
        .env("NETCOMPOSE_STORE", "etcd://h1:port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port `port`"), "{err}");
}
