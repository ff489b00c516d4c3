//! A replica added on one host reaches the others from `up`'s one write: every agent derives
//! the other hosts' endpoints from the placement, the allocations and the nodes' records, so
//! the hosts that do not run it program it (FDB and neighbour entries, its name) while its own
//! host builds it, even while that host's agent is stopped; they apply just the difference
//! to what they recorded, write nothing to the store, and fall back to reading every
//! namespace when something they recorded is gone. Root tests, on the 3-host sandbox cluster.
//!
//! Cleanup: the agents are killed by their guard (a stopped one too), the `up` left running by
//! its own guard, every host is a sandbox, and the cluster removes its etcd members and
//! underlay, panic included.

mod common;

use common::agents::{
    address, compose, fdb, mac, namespaces, neighbours, ok, project, status_revision, until,
    values, Agents, ROOT,
};
use common::cluster::{underlay_ip, Cluster};
use common::require_root;
use nix::sys::signal::Signal;
use std::process::Child;

/// web on n0 only, one client on n1 and one on n2.
const SPLIT: &str = "services:\n  web:\n    deploy:\n      placement: {constraints: [node.hostname == n0]}\n    networks: [ov]\n  client:\n    deploy: {replicas: 2, placement: {constraints: [node.hostname != n0], max_replicas_per_node: 1}}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n    ipam: {config: [{subnet: 10.76.0.0/24}]}\n";

/// A netcompose run left in the background, killed and reaped if the test ends before it.
struct Running(Option<Child>);

impl Running {
    fn output(mut self) -> std::process::Output {
        self.0
            .take()
            .expect("still running")
            .wait_with_output()
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The client replica's namespace on host `h`.
fn client_on(cluster: &Cluster, agents: &Agents, project: &str, h: usize) -> String {
    let prefix = format!("{project}-client-");
    let mut found = None;
    until(agents, &format!("a client on host {h}"), || {
        found = namespaces(cluster, h)
            .into_iter()
            .find(|n| n.starts_with(&prefix));
        found.is_some()
    });
    found.unwrap_or_default()
}

#[test]
fn a_replica_added_on_one_host_is_programmed_on_the_others_from_ups_write() {
    require_root("a_replica_added_on_one_host_is_programmed_on_the_others_from_ups_write");
    let cluster = Cluster::new(3);
    // n0's agent is stopped below for longer than the tests' usual lease.
    let agents = &mut Agents::start_with_ttl(&cluster, &[], 60);
    let dir = tempfile::tempdir().unwrap();
    let name = project("arr");
    let file = compose(dir.path(), &name, SPLIT);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", agents);
    let clients = [
        (1, client_on(&cluster, agents, &name, 1)),
        (2, client_on(&cluster, agents, &name, 2)),
    ];
    let reports = |h: usize| status_revision(&cluster, &name, &format!("n{h}"));
    let before = [reports(1), reports(2)];
    let no_ep = values(&cluster, &format!("{ROOT}projects/{name}/ep/"));
    assert!(
        no_ep.is_empty(),
        "endpoints are derived, not published: {no_ep:?}"
    );

    // n0's agent stopped: nothing builds web[2], yet n1 and n2 program it from `up`'s write.
    agents.signal(0, Signal::SIGSTOP);
    let up = Running(Some(cluster.spawn_netcompose(
        0,
        &["-f", &file, "up", "--scale", "web=2", "--timeout", "60"],
    )));
    let mut addr = None;
    until(agents, "web[2] has an address", || {
        addr = address(&cluster, &name, "ov", "web[2]");
        addr.is_some()
    });
    let addr = addr.unwrap_or_default();
    let mac = mac(&cluster, &name, "ov", "web[2]").expect("web[2] has a MAC");
    let replica = format!("{name}-web-2");
    for (h, client) in &clients {
        until(agents, &format!("web[2] programmed on host {h}"), || {
            let fdb = fdb(&cluster, *h);
            let neigh = neighbours(&cluster, *h);
            fdb.lines()
                .any(|l| l.starts_with(&mac) && l.contains(&format!("dst {}", underlay_ip(0))))
                && neigh
                    .lines()
                    .any(|l| l.starts_with(&format!("{addr} ")) && l.contains(&mac))
        });
        until(agents, &format!("web[2] resolves on host {h}"), || {
            let out = cluster
                .host(*h)
                .run(&["ip", "netns", "exec", client, "getent", "hosts", &replica]);
            String::from_utf8_lossy(&out.stdout).contains(&addr)
        });
    }
    assert!(
        !namespaces(&cluster, 0).contains(&replica),
        "n0's agent is stopped: web[2] is not built yet"
    );
    agents.signal(0, Signal::SIGCONT);
    ok(&up.output(), "up --scale web=2", agents);
    for (h, client) in &clients {
        until(agents, &format!("web[2] answers host {h}"), || {
            cluster
                .host(*h)
                .run(&["ip", "netns", "exec", client, "ping", "-c1", "-W1", &addr])
                .status
                .success()
        });
    }
    // The hosts that do not run it applied the difference and reported nothing.
    assert_eq!(
        [reports(1), reports(2)],
        before,
        "n1 and n2 wrote no status"
    );
    let logs = agents.logs();
    for h in [1, 2] {
        let section = logs
            .split(&format!("--- n{h}:"))
            .nth(1)
            .and_then(|s| s.split("\n--- ").next())
            .unwrap_or_default();
        assert!(
            section.contains("remote endpoints; the difference to its record,"),
            "n{h}: {section}"
        );
    }
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        agents,
    );
}

#[test]
fn an_agent_applying_a_difference_reads_everything_back_when_its_record_is_stale() {
    require_root("an_agent_applying_a_difference_reads_everything_back_when_its_record_is_stale");
    let cluster = Cluster::new(3);
    let agents = &mut Agents::start(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = project("stale");
    let file = compose(dir.path(), &name, SPLIT);
    ok(&cluster.netcompose(0, &["-f", &file, "up"]), "up", agents);
    let client = client_on(&cluster, agents, &name, 1);
    // Behind the agent's back, the client's namespace on n1 goes.
    cluster.host(1).run_ok(&["ip", "netns", "del", &client]);
    // A replica added on n0 changes n1's view only: its record no longer holds, so it reads
    // every namespace back and makes the client's again.
    ok(
        &cluster.netcompose(0, &["-f", &file, "up", "--scale", "web=2"]),
        "up --scale web=2",
        agents,
    );
    until(agents, "n1 made the client's namespace again", || {
        namespaces(&cluster, 1).contains(&client)
    });
    assert!(
        agents
            .logs()
            .contains(&format!("namespace {client} is gone since the last run")),
        "{}",
        agents.logs()
    );
    ok(
        &cluster.netcompose(0, &["-p", &name, "down"]),
        "down",
        agents,
    );
}
