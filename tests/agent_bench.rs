//! bench/cluster.sh's figures on the 3-host sandbox cluster (ignored: run with `--ignored
//! --nocapture`). Root.

mod common;

use common::agents::{
    address, compose, live_nodes, namespaces, node, ok, project, until, values, Agents, ROOT, TTL,
};
use common::cluster::Cluster;
use common::{env_or, require_root};
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

/// Who made each revision in `(from, to]`, counted by writer: `up` (the project's desired
/// state, allocations, spec, placement, the allocation epoch), `lock`, `agent <node>` (its
/// status), `node <node>` (its registration) or `lease <node>` (its keys expiring together). Read back from etcd's history with a watch from `from + 1`.
fn writers(cluster: &Cluster, from: i64, to: i64) -> std::collections::BTreeMap<String, usize> {
    let by_revision = cluster
        .with_client(cluster.endpoints(), move |mut c| {
            Box::pin(async move {
                let mut seen: std::collections::BTreeMap<i64, Vec<(String, bool)>> =
                    Default::default();
                if to <= from {
                    return seen;
                }
                let opts = etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from + 1);
                let mut stream = c.watch(ROOT, Some(opts)).await.expect("etcd watch");
                while seen.keys().next_back().is_none_or(|r| *r < to) {
                    let Some(m) = stream.message().await.expect("watch message") else {
                        break;
                    };
                    for e in m.events() {
                        let Some(kv) = e.kv() else { continue };
                        let put = e.event_type() == etcd_client::EventType::Put;
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        seen.entry(kv.mod_revision()).or_default().push((key, put));
                    }
                }
                seen
            })
        })
        .expect("connect to etcd");
    let mut out = std::collections::BTreeMap::new();
    for (_, keys) in by_revision.range(from + 1..=to) {
        *out.entry(writer(keys)).or_insert(0) += 1;
    }
    out
}

/// Who wrote one revision, from its keys (and whether each was a put).
fn writer(keys: &[(String, bool)]) -> String {
    let leaf = |k: &str| k.rsplit('/').next().unwrap_or_default().to_string();
    if keys.iter().any(|(k, _)| {
        k.ends_with("/desired") || k.ends_with("/spec") || k.ends_with("/alloc-epoch")
    }) {
        return "up".into();
    }
    if keys.iter().any(|(k, _)| k.ends_with("/lock")) {
        return "lock".into();
    }
    if keys.iter().any(|(k, _)| k.contains("/nodes/")) {
        let (k, put) = &keys[0];
        let what = if *put && keys.len() == 1 {
            "node"
        } else {
            "lease"
        };
        return format!("{what} {}", leaf(k));
    }
    if keys.iter().all(|(_, put)| !put) && keys.len() > 1 {
        return format!("lease {}", leaf(&keys[0].0));
    }
    match keys.iter().find(|(k, _)| k.contains("/status/")) {
        Some((k, _)) => format!("agent {}", leaf(k)),
        None if keys.iter().any(|(k, _)| k.ends_with("/placement")) => "placement".into(),
        None => keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn shown(by: &std::collections::BTreeMap<String, usize>) -> String {
    by.iter()
        .map(|(w, n)| format!("{w} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
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
        "up of {replicas} replicas on 3 hosts, every host converged: {:.2} s; revisions: {} until up returned, {} once settled: {}",
        took.as_secs_f64(),
        after_up - before,
        settled - before,
        shown(&writers(&cluster, before, settled))
    );
    // A scale by one as Compose users make it (`up --scale`), then as a file edit (a new
    // spec: every host's share changes, so every host reports).
    let scale = format!("web={}", replicas + 1);
    let before = revision(&cluster);
    let start = Instant::now();
    ok(
        &cluster.netcompose(0, &["-f", &file, "up", "--scale", &scale]),
        "scale up by one",
        agents,
    );
    let took = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = revision(&cluster);
    println!(
        "scale by one (up --scale): {:.2} s, {} revisions: {}",
        took.as_secs_f64(),
        after - before,
        shown(&writers(&cluster, before, after))
    );
    let file = compose(dir.path(), &name, &body(replicas + 2));
    let before = revision(&cluster);
    let start = Instant::now();
    ok(
        &cluster.netcompose(0, &["-f", &file, "up"]),
        "scale up by one in the file",
        agents,
    );
    let took = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = revision(&cluster);
    println!(
        "scale by one (file edited): {:.2} s, {} revisions: {}",
        took.as_secs_f64(),
        after - before,
        shown(&writers(&cluster, before, after))
    );
    let before = revision(&cluster);
    std::thread::sleep(Duration::from_secs(steady as u64));
    let after = revision(&cluster);
    println!(
        "steady state over {steady} s: {} revisions {}",
        after - before,
        shown(&writers(&cluster, before, after))
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

/// The `p`-th percentile of sorted seconds (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn distribution(label: &str, mut secs: Vec<f64>) {
    secs.sort_by(f64::total_cmp);
    println!(
        "{label}: p50 {:.3} s, p99 {:.3} s, max {:.3} s over {}",
        percentile(&secs, 50.0),
        percentile(&secs, 99.0),
        secs.last().copied().unwrap_or_default(),
        secs.len()
    );
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The address IPAM gave `owner` on network `ov` of `project`, once `up` has written it.
fn address_of(cluster: &Cluster, agents: &Agents, project: &str, owner: &str) -> String {
    let mut found = None;
    until(agents, &format!("{owner} has an address"), || {
        found = address(cluster, project, "ov", owner);
        found.is_some()
    });
    found.unwrap_or_default()
}

/// bench/cluster.sh's arrival figures (ignored: run with `--ignored --nocapture`): BENCH_ADDS
/// (50) times, `up --scale` adds one replica of `web` on n0; from the client replica on n1 and
/// on n2 (one client per node) (tests/support/arrival.py) the time from `up`'s start until the new replica answers a
/// ping, its name resolves to its address through their resolver, and its address is in
/// their VIP map; the latest of the six is the add's figure. Prints each distribution, and
/// when `up`'s write was first seen in the store (polled, so late by a few milliseconds).
#[test]
#[ignore]
fn bench_arrival() {
    require_root("bench_arrival");
    let adds = env_or("BENCH_ADDS", 50);
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("arr");
    let file = compose(
        dir.path(),
        &name,
        "services:\n  web:\n    deploy:\n      placement: {constraints: [node.hostname == n0]}\n    networks: [ov]\n  client:\n    deploy: {replicas: 3, placement: {max_replicas_per_node: 1}}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n    ipam:\n      config: [{subnet: 10.61.0.0/22}]\n",
    );
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", agents);
    let client = |h: usize| {
        let prefix = format!("{name}-client-");
        let mut found = None;
        until(agents, &format!("a client replica on host {h}"), || {
            found = namespaces(&cluster, h)
                .into_iter()
                .find(|n| n.starts_with(&prefix));
            found.is_some()
        });
        found.unwrap_or_default()
    };
    let clients = [(1, client(1)), (2, client(2))];
    let (mut all, mut reach, mut resolve, mut vip) = (vec![], vec![], vec![], vec![]);
    let mut written = vec![];
    for k in 2..=adds + 1 {
        let scale = format!("web={k}");
        let start = unix_now();
        let up = cluster.spawn_netcompose(0, &["-f", &file, "up", "--scale", &scale]);
        let addr = address_of(&cluster, agents, &name, &format!("web[{k}]"));
        written.push(unix_now() - start);
        let replica = format!("{name}-web-{k}");
        let watchers: Vec<_> = clients
            .iter()
            .map(|(h, ns)| {
                cluster.host(*h).spawn(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "python3",
                    &common::project::support("arrival.py"),
                    &addr,
                    &replica,
                    "20",
                ])
            })
            .collect();
        let out = up.wait_with_output().unwrap();
        ok(&out, "up --scale", agents);
        let mut latest = 0.0f64;
        for w in watchers {
            let out = w.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(
                text.lines().count(),
                3,
                "arrival.py: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines() {
                let (check, when) = line.split_once(' ').unwrap();
                let when: f64 = when.parse().unwrap_or_else(|_| {
                    panic!("{replica} never {check} from another host:\n{text}")
                });
                let took = (when - start).max(0.0);
                latest = latest.max(took);
                match check {
                    "reachable" => reach.push(took),
                    "resolvable" => resolve.push(took),
                    "vip" => vip.push(took),
                    other => panic!("arrival.py printed {other}"),
                }
            }
        }
        all.push(latest);
    }
    distribution("up's write seen in the store (polled)", written);
    distribution("added replica reachable from the other hosts", reach);
    distribution("added replica resolvable on the other hosts", resolve);
    distribution("added replica in the other hosts' VIP", vip);
    distribution(
        "added replica reachable, resolvable and in the VIP on every other host",
        all,
    );
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        agents,
    );
}
