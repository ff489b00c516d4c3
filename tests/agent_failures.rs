//! A cluster's failures with real etcd members, agents and packets (root): etcd losing a
//! follower then the leader under a running cross-host ping, and an agent cut off from etcd
//! (an nftables drop rule in its host towards the client port) while the store changes and is
//! compacted: its replicas keep working, and on heal it lists again and converges.
//!
//! Cleanup: the agents, the pings and the drop rule have guards that also run on panic; every
//! host is a sandbox (its processes, namespaces and rules go with it) and the cluster removes
//! its etcd members and underlay.

mod common;

use common::agents::{
    address, compose, live_nodes, namespaces, neighbours, node, ok, placement, project,
    status_revision, until, values, Agents, ROOT,
};
use common::cluster::Cluster;
use common::require_root;
use std::process::Child;

/// A process killed and reaped when dropped (panic included).
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The one replica of `service` placed on `node`, as (index, namespace).
fn replica_on(cluster: &Cluster, name: &str, service: &str, on: &str) -> (u32, String) {
    let placed = placement(cluster, name);
    let (key, _) = placed
        .iter()
        .find(|(k, n)| k.starts_with(&format!("{service}[")) && n.as_str() == on)
        .unwrap_or_else(|| panic!("no {service} replica on {on}: {placed:?}"));
    let index: u32 = key
        .trim_start_matches(&format!("{service}["))
        .trim_end_matches(']')
        .parse()
        .unwrap();
    (index, format!("{name}-{service}-{index}"))
}

/// The address of `owner` on network `ov`, which `up` has written.
fn addr(cluster: &Cluster, name: &str, owner: &str) -> String {
    address(cluster, name, "ov", owner).unwrap_or_else(|| panic!("{owner} has no address"))
}

const MESH: &str = "services:
  web:
    deploy:
      replicas: 3
      placement: {max_replicas_per_node: 1}
    networks: [ov]
  more:
    networks: [ov]
networks:
  ov:
    driver: overlay
    ipam: {config: [{subnet: 10.73.0.0/24}]}
";

#[test]
fn a_cross_host_ping_loses_nothing_while_a_follower_then_the_leader_dies() {
    require_root("a_cross_host_ping_loses_nothing_while_a_follower_then_the_leader_dies");
    let mut cluster = Cluster::new(3);
    let agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("fl");
    let file = compose(dir.path(), &name, MESH);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", &agents);
    let (_, from) = replica_on(&cluster, &name, "web", &node(0));
    let (far, _) = replica_on(&cluster, &name, "web", &node(1));
    let to = addr(&cluster, &name, &format!("web[{far}]"));
    until(&agents, "web on n1 answers from n0", || {
        let out = cluster
            .host(0)
            .run(&["ip", "netns", "exec", &from, "ping", "-c1", "-W1", &to]);
        out.status.success()
    });
    // 20 pings a second until stopped; SIGINT makes ping print its summary.
    let ping = cluster.host(0).spawn(&[
        "ip", "netns", "exec", &from, "ping", "-n", "-i", "0.05", "-W", "1", "-w", "300", &to,
    ]);
    let mut ping = Reaped(Some(ping));
    let before = placement(&cluster, &name).len();
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    cluster.kill_member(follower);
    std::thread::sleep(std::time::Duration::from_secs(2));
    cluster.start_member(follower);
    let leader = cluster.leader();
    cluster.kill_member(leader);
    // A new leader among the two left, and a write through them.
    let writer = (leader + 1) % 3;
    ok(
        &cluster.netcompose(writer, &["-f", &file, "up", "--scale", "more=2"]),
        "up of one more replica without the leader",
        &agents,
    );
    assert_eq!(placement(&cluster, &name).len(), before + 1);
    let child = ping.0.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary:\n{text}"));
    let counts: Vec<u64> = summary
        .split(", ")
        .take(2)
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(counts[0] > 20, "the ping ran too briefly: {summary}");
    assert_eq!(counts[0], counts[1], "the ping lost packets: {summary}");
    cluster.start_member(leader);
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        &agents,
    );
}

/// A drop rule in host `h` towards etcd's client port, removed by [`Cut::heal`] or on drop.
struct Cut<'c> {
    cluster: &'c Cluster,
    host: usize,
    on: bool,
}

const CUT_TABLE: &str = "nctestcut";

impl<'c> Cut<'c> {
    fn new(cluster: &'c Cluster, host: usize) -> Cut<'c> {
        let sb = cluster.host(host);
        sb.run_ok(&["nft", "add", "table", "inet", CUT_TABLE]);
        sb.run_ok(&[
            "nft",
            "add chain inet nctestcut out { type filter hook output priority 0 ; }",
        ]);
        sb.run_ok(&[
            "nft", "add", "rule", "inet", CUT_TABLE, "out", "tcp", "dport", "2379", "drop",
        ]);
        Cut {
            cluster,
            host,
            on: true,
        }
    }

    fn heal(&mut self) {
        if std::mem::take(&mut self.on) {
            self.cluster
                .host(self.host)
                .run_ok(&["nft", "delete", "table", "inet", CUT_TABLE]);
        }
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        if self.on {
            let _ = self
                .cluster
                .host(self.host)
                .run(&["nft", "delete", "table", "inet", CUT_TABLE]);
        }
    }
}

const SPLIT: &str = "services:
  a:
    deploy:
      replicas: 2
      placement: {constraints: [node.hostname == n1]}
    networks: [ov]
  b:
    deploy:
      placement: {constraints: [node.hostname != n1]}
    networks: [ov]
networks:
  ov:
    driver: overlay
    ipam: {config: [{subnet: 10.74.0.0/24}]}
";

/// From replica `from` on host `h`: `to` answers a ping and `name` resolves to it.
fn local_ok(cluster: &Cluster, h: usize, from: &str, to: &str, name: &str) -> bool {
    let ping = cluster
        .host(h)
        .run(&["ip", "netns", "exec", from, "ping", "-c1", "-W1", to]);
    let resolved = cluster
        .host(h)
        .run(&["ip", "netns", "exec", from, "getent", "hosts", name]);
    ping.status.success() && String::from_utf8_lossy(&resolved.stdout).contains(to)
}

#[test]
fn an_agent_cut_off_from_etcd_keeps_its_replicas_and_converges_after_a_compaction() {
    require_root("an_agent_cut_off_from_etcd_keeps_its_replicas_and_converges_after_a_compaction");
    let cluster = Cluster::new(3);
    let agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("cut");
    let file = compose(dir.path(), &name, SPLIT);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", &agents);
    let (a1, a2) = (format!("{name}-a-1"), format!("{name}-a-2"));
    let a2_addr = addr(&cluster, &name, "a[2]");
    until(&agents, "a[2] answers a[1] by name on n1", || {
        local_ok(&cluster, 1, &a1, &a2_addr, &a2)
    });

    let mut cut = Cut::new(&cluster, 1);
    until(&agents, "n1's lease expired", || {
        !live_nodes(&cluster).contains(&node(1))
    });
    // The store changes without n1: one more b (on n0 or n2), then a compaction past it.
    ok(
        &cluster.netcompose(0, &["-f", &file, "up", "--scale", "b=2"]),
        "up while n1 is cut off",
        &agents,
    );
    let b2_addr = addr(&cluster, &name, "b[2]");
    let compacted = cluster
        .with_client(cluster.endpoints()[..1].to_vec(), |mut c| {
            Box::pin(async move {
                let rev = c
                    .get(ROOT, None)
                    .await
                    .expect("etcd get")
                    .header()
                    .expect("a header")
                    .revision();
                c.compact(rev, None).await.expect("etcd compact");
                rev
            })
        })
        .expect("connect to etcd");
    assert!(
        local_ok(&cluster, 1, &a1, &a2_addr, &a2),
        "n1's replicas stopped answering while it was cut off\n{}",
        agents.logs()
    );
    assert!(namespaces(&cluster, 1).contains(&a2));

    cut.heal();
    until(
        &agents,
        "n1 reports a revision after the compaction",
        || status_revision(&cluster, &name, &node(1)).is_some_and(|r| r >= compacted),
    );
    until(
        &agents,
        "n1's overlay has the b added while it was cut off",
        || neighbours(&cluster, 1).contains(&b2_addr),
    );
    assert!(
        local_ok(&cluster, 1, &a1, &a2_addr, &a2),
        "{}",
        agents.logs()
    );
    let placed = placement(&cluster, &name);
    assert_eq!(
        placed.get("a[1]").map(String::as_str),
        Some("n1"),
        "{placed:?}"
    );
    assert_eq!(
        placed.get("a[2]").map(String::as_str),
        Some("n1"),
        "{placed:?}"
    );
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        &agents,
    );
    until(&agents, "no key of the project left", || {
        values(&cluster, &format!("{ROOT}projects/{name}/")).is_empty()
    });
}

/// Every process in cgroup `dir` and below it.
fn cgroup_pids(dir: &std::path::Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

const RUNS: &str = "services:
  web:
    deploy:
      replicas: 3
      placement: {max_replicas_per_node: 1}
    networks: [ov]
    x-run: [sleep, \"1000\"]
networks:
  ov:
    driver: overlay
    ipam: {config: [{subnet: 10.75.0.0/24}]}
";

#[test]
fn what_an_agent_started_is_in_the_projects_cgroup_and_down_leaves_no_process_after_its_kill() {
    require_root(
        "what_an_agent_started_is_in_the_projects_cgroup_and_down_leaves_no_process_after_its_kill",
    );
    let cluster = Cluster::new(3);
    let mut agents = Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("cg");
    let file = compose(dir.path(), &name, RUNS);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", &agents);
    let project_cgroup = cluster.cgroup(1).join("netcompose").join(&name);
    // The daemon and the replica's sleep, in their leaves of the project's cgroup.
    until(
        &agents,
        "n1's daemon and x-run process in the project's cgroup",
        || {
            !cgroup_pids(&project_cgroup.join("daemon")).is_empty()
                && !cgroup_pids(&project_cgroup.join("x-run")).is_empty()
        },
    );
    agents.kill(1);
    let left = cgroup_pids(&project_cgroup);
    assert!(
        left.len() >= 2,
        "the data plane of n1 outlives its agent: {left:?}"
    );
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down with n1's agent dead",
        &agents,
    );
    // n1's agent back: the project is gone from the store, so it takes its share down.
    agents.launch(&cluster, 1, &[]);
    until(&agents, "no process of the project left on n1", || {
        cgroup_pids(&project_cgroup).is_empty()
    });
    // Killed processes are reaped by init a moment later (a zombie runs nothing).
    for pid in left {
        until(
            &agents,
            &format!("process {pid} of the project gone"),
            || {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let cgroup =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                status.is_empty() || status.contains("State:\tZ") || !cgroup.contains(&name)
            },
        );
    }
    for h in 0..3 {
        until(&agents, "no namespace of the project left", || {
            !namespaces(&cluster, h)
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        });
    }
    until(&agents, "no key of the project left", || {
        values(&cluster, &format!("{ROOT}projects/{name}/")).is_empty()
    });
}
