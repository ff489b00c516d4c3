//! bench/cluster.sh's figures on the 3-host sandbox cluster (ignored: run with `--ignored
//! --nocapture`). Root.

mod common;

use common::agents::{compose, live_nodes, node, ok, project, until, values, Agents, ROOT, TTL};
use common::cluster::Cluster;
use common::require_root;
use std::time::{Duration, Instant};

/// The store's current revision.
fn revision(cluster: &Cluster) -> i64 {
    cluster
        .with_client(cluster.endpoints(), |mut c| {
            Box::pin(async move {
                let r = c.get("/netcompose/v1/none", None).await.expect("etcd get");
                r.header().expect("a header").revision()
            })
        })
        .expect("connect to etcd")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// bench/cluster.sh's figures (ignored: run with `--ignored --nocapture`): `up` of
/// BENCH_REPLICAS replicas (300) on 3 hosts until every host converged, etcd revisions per
/// `up` and per scale by one, revisions over BENCH_STEADY seconds (30) of steady state, and
/// the removal of a killed agent's keys over BENCH_KILLS kills (10).
#[test]
#[ignore]
fn bench_cluster() {
    require_root("bench_cluster");
    let replicas = env_or("BENCH_REPLICAS", 300);
    let steady = env_or("BENCH_STEADY", 30);
    let kills = env_or("BENCH_KILLS", 10);
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[]);
    until(agents, "3 nodes registered", || {
        live_nodes(&cluster).len() == 3
    });
    let dir = tempfile::tempdir().unwrap();
    let name = project("bench");
    let body = |n: usize| {
        format!(
            "services:\n  web:\n    deploy:\n      replicas: {n}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n    ipam:\n      config: [{{subnet: 10.60.0.0/20}}]\n"
        )
    };
    let file = compose(dir.path(), &name, &body(replicas));
    let before = revision(&cluster);
    let start = Instant::now();
    ok(
        &cluster.netcompose(0, &["-f", &file, "up", "--timeout", "600"]),
        "up",
        agents,
    );
    let took = start.elapsed();
    let after_up = revision(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    let settled = revision(&cluster);
    println!(
        "up of {replicas} replicas on 3 hosts, every host converged: {:.2} s; revisions: {} until up returned, {} once settled",
        took.as_secs_f64(),
        after_up - before,
        settled - before
    );
    let file = compose(dir.path(), &name, &body(replicas + 1));
    let before = revision(&cluster);
    let start = Instant::now();
    ok(
        &cluster.netcompose(0, &["-f", &file, "up"]),
        "scale up by one",
        agents,
    );
    let took = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "scale by one: {:.2} s, revisions {}",
        took.as_secs_f64(),
        revision(&cluster) - before
    );
    let before = revision(&cluster);
    std::thread::sleep(Duration::from_secs(steady as u64));
    println!(
        "steady state over {steady} s: {} revisions",
        revision(&cluster) - before
    );
    let mut gone = Vec::new();
    for _ in 0..kills {
        until(agents, "n1 registered", || {
            live_nodes(&cluster).contains(&node(1))
        });
        let killed = Instant::now();
        agents.kill(1);
        until(agents, "n1's keys gone", || {
            !values(&cluster, ROOT).keys().any(|k| k.ends_with("/n1"))
        });
        gone.push(killed.elapsed().as_secs_f64());
        agents.launch(&cluster, 1, &[]);
    }
    gone.sort_by(f64::total_cmp);
    let shown: Vec<String> = gone.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "removal after kill -9 (TTL {TTL} s), {kills} kills, sorted: {} s",
        shown.join(" ")
    );
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        agents,
    );
}
