//! The cluster's commands on a 3-host sandbox cluster (tests/common/cluster.rs) with one agent
//! per host: `plan` with the store, run as nobody, shows what each node gets and writes
//! nothing. Root tests (the hosts are namespaces); the agents, the hosts and etcd are removed
//! by their guards, panic included.

mod common;

use common::agents::{compose, placement, project, values, Agents, ROOT};
use common::cluster::{underlay_ip, Cluster};
use common::require_root;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

/// web: one replica per node; client: on n0.
const MESH: &str = "services:\n  web:\n    deploy:\n      replicas: 3\n      placement: {max_replicas_per_node: 1}\n    networks: [mesh]\n  client:\n    deploy:\n      placement: {constraints: [node.hostname == n0]}\n    networks: [mesh]\nnetworks:\n  mesh:\n    driver: overlay\n    ipam: {config: [{subnet: 10.73.0.0/24}]}\n";

/// A copy of the binary and of a project's file that nobody can read (a world-readable
/// temporary directory), so that a command can run unprivileged.
struct Unprivileged {
    dir: tempfile::TempDir,
}

impl Unprivileged {
    fn new(name: &str, body: &str) -> Unprivileged {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_netcompose"),
            dir.path().join("netcompose"),
        )
        .unwrap();
        compose(dir.path(), name, body);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Unprivileged { dir }
    }

    /// `netcompose --store URL -f FILE args...` as nobody on host `i`.
    fn run(&self, cluster: &Cluster, i: usize, name: &str, args: &[&str]) -> Output {
        let exe = self.dir.path().join("netcompose");
        let file = self.dir.path().join(format!("{name}.yaml"));
        let url = cluster.store_url();
        let mut all: Vec<&str> = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            exe.to_str().unwrap(),
            "--store",
            &url,
            "-f",
            file.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let mut cmd = cluster.host(i).command("setpriv", &all);
        cmd.env("NO_COLOR", "1");
        cmd.output().unwrap()
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_with_a_store_shows_each_nodes_share_as_nobody_and_writes_nothing() {
    require_root("plan_with_a_store_shows_each_nodes_share_as_nobody_and_writes_nothing");
    let cluster = Cluster::new(3);
    let agents = Agents::start(&cluster, &[]);
    let name = project("plan");
    let files = Unprivileged::new(&name, MESH);

    let before = values(&cluster, ROOT);
    let out = files.run(&cluster, 1, &name, &["plan", "--detailed-exitcode"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&format!("Cluster plan for project {name} at revision ")));
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("\nnode n{i} ({})\n", underlay_ip(i))),
            "{stdout}"
        );
    }
    assert!(stdout.contains("    + client[1] (new)\n"), "{stdout}");
    assert!(
        stdout.contains("4 replicas to start, 0 to move, 0 to remove."),
        "{stdout}"
    );
    assert_eq!(before, values(&cluster, ROOT), "plan wrote to the store");

    // JSON: every node runs one web replica and programs the endpoints of all the others.
    let out = files.run(&cluster, 2, &name, &["plan", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let nodes = plan["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["node"], format!("n{i}"));
        let replicas: Vec<&str> = node["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["replica"].as_str().unwrap())
            .collect();
        let webs = replicas.iter().filter(|r| r.starts_with("web[")).count();
        assert_eq!(webs, 1, "n{i}: {replicas:?}");
        assert_eq!(
            replicas.contains(&"client[1]"),
            i == 0,
            "n{i}: {replicas:?}"
        );
        let remote = node["remote"].as_array().unwrap();
        assert_eq!(remote.len(), 4 - replicas.len(), "n{i}: {remote:?}");
        for e in remote {
            assert_ne!(e["node"], format!("n{i}"));
            let on: usize = e["node"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(e["vtep"], underlay_ip(on));
            assert!(e["ipv4"].as_str().unwrap().starts_with("10.73.0."), "{e}");
        }
    }
    assert_eq!(
        before,
        values(&cluster, ROOT),
        "plan --json wrote to the store"
    );

    // After `up`, the plan matches what runs and changes nothing.
    let up = cluster.netcompose(
        0,
        &[
            "-f",
            files
                .dir
                .path()
                .join(format!("{name}.yaml"))
                .to_str()
                .unwrap(),
            "up",
            "--timeout",
            "60",
        ],
    );
    common::agents::ok(&up, "up", &agents);
    let out = files.run(&cluster, 1, &name, &["plan", "--detailed-exitcode"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.ends_with("No changes: every node keeps its share.\n"),
        "{stdout}"
    );
    for (replica, on) in placement(&cluster, &name) {
        let node = stdout.split(&format!("\nnode {on} ")).nth(1).unwrap();
        let node = node.split("\nnode ").next().unwrap();
        assert!(
            node.contains(&format!("      {replica}\n")),
            "{replica} on {on}: {stdout}"
        );
    }
    for i in 0..3 {
        assert!(
            stdout.contains(&format!(
                "\nnode n{i} ({}), converged to revision ",
                underlay_ip(i)
            )),
            "{stdout}"
        );
    }
    let down = cluster.netcompose(0, &["-p", &name, "down"]);
    common::agents::ok(&down, "down", &agents);
}
