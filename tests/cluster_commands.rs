//! The cluster's commands on a 3-host sandbox cluster (tests/common/cluster.rs) with one agent
//! per host: `plan` with the store, run as nobody, shows what each node gets and writes
//! nothing; `nodes` shows the agents' VXLAN probe of every pair of hosts (ok, a filtered
//! VXLAN port, an MTU blackhole); a published port balances over the replicas of every host
//! that runs the service. Root tests (the hosts are namespaces); the agents, the hosts and
//! etcd are removed by their guards, panic included.

mod common;

use common::Servers;

use common::agents::{compose, node, ok, placement, project, until, values, Agents, ROOT};
use common::cluster::{underlay_ip, Cluster};
use common::project::Project;
use common::{require_root, Sandbox};
use std::collections::{BTreeMap, BTreeSet};
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

/// Every key of the store but the agents' probe findings (`health/`), which they rewrite
/// on their own while the first probe rounds settle.
fn written(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut all = values(cluster, ROOT);
    all.retain(|k, _| !k.starts_with(&format!("{ROOT}health/")));
    all
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

    let before = written(&cluster);
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
    assert_eq!(before, written(&cluster), "plan wrote to the store");

    // `up --dry-run` prints the same cluster plan (from its second line: the revision may
    // have moved), and writes nothing either; a bad file fails both alike.
    let dry = files.run(&cluster, 1, &name, &["--dry-run", "up"]);
    let (dry_out, dry_err) = text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{dry_out}\n{dry_err}");
    let body = |t: &str| t.split_once('\n').map(|(_, rest)| rest.to_string());
    assert_eq!(body(&dry_out), body(&stdout), "{dry_out}");
    assert!(dry_out.starts_with(&format!("Cluster plan for project {name} ")));
    assert!(
        dry_err.contains("Dry run: nothing was changed."),
        "{dry_err}"
    );
    assert_eq!(before, written(&cluster), "up --dry-run wrote to the store");
    let bad = Unprivileged::new(&name, "services:\n  web:\n    networks: [nope]\n");
    for args in [&["plan"][..], &["--dry-run", "up"]] {
        let out = bad.run(&cluster, 1, &name, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {:?}", text(&out));
    }

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
    assert_eq!(before, written(&cluster), "plan --json wrote to the store");

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
    ok(&up, "up", &agents);
    nodes_json_says_each_node_converged(&cluster, &agents, &name);
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
    ok(&down, "down", &agents);
}

/// `nodes --json` once `up` of `name` converged: every node with its labels, lease, underlay
/// and engine, the revision it reported for `name`, and every pair's probe.
fn nodes_json_says_each_node_converged(cluster: &Cluster, agents: &Agents, name: &str) {
    let statuses = values(cluster, &format!("{ROOT}projects/{name}/status/"));
    let read = || {
        let text = ok(
            &cluster.netcompose(0, &["nodes", "--json"]),
            "nodes",
            agents,
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        (text, doc)
    };
    until(agents, "nodes --json: every pair probes ok", || {
        let (_, doc) = read();
        doc["matrix"].as_object().is_some_and(|m| {
            m.values()
                .all(|row| row.as_object().unwrap().values().all(|c| c == "ok"))
        })
    });
    let (text, doc) = read();
    assert_eq!(doc["format_version"], 1, "{text}");
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{text}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], node(i), "{text}");
        assert_eq!(n["underlay"]["address"], underlay_ip(i), "{text}");
        assert_eq!(n["underlay"]["vxlan_port"], 4789, "{text}");
        let ttl = n["lease_ttl_seconds"].as_i64().unwrap();
        assert!(ttl <= common::agents::TTL as i64, "{text}");
        assert!(n["labels"].is_object(), "{text}");
        assert!(n["wireguard"].is_null() || n["wireguard"]["engine"].is_string());
        let status = &statuses[&format!("{ROOT}projects/{name}/status/{}", node(i))];
        let status: serde_json::Value = serde_json::from_str(status).unwrap();
        assert_eq!(n["converged"][name], status["revision"], "{text}");
        assert_eq!(n["healthy"], true, "{text}");
        let row = doc["matrix"][node(i)].as_object().unwrap();
        assert_eq!(row.len(), 2, "{text}");
        assert!(row.values().all(|c| c == "ok"), "{text}");
    }
}

/// The probe matrix of `netcompose nodes`: (from, to) → cell (`ok`, `too big`, ...).
fn matrix(cluster: &Cluster, agents: &Agents) -> BTreeMap<(String, String), String> {
    let out = ok(&cluster.netcompose(0, &["nodes"]), "nodes", agents);
    let Some((_, table)) = out.split_once("VXLAN PROBE") else {
        return BTreeMap::new();
    };
    let mut lines = table.lines().skip(1);
    let names: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut cells = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let from = line.split_whitespace().next().unwrap().to_string();
        // Cells start where their column's name starts in the header.
        let header = table.lines().nth(1).unwrap();
        for to in &names {
            let at = header.find(to.as_str()).unwrap();
            let cell = line
                .get(at..)
                .unwrap_or_default()
                .split("  ")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            cells.insert((from.clone(), to.clone()), cell);
        }
    }
    cells
}

/// Whether every pair of distinct nodes reads as `want(from, to)` (a cell's first word).
fn pairs_are(
    cells: &BTreeMap<(String, String), String>,
    want: impl Fn(usize, usize) -> &'static str,
) -> bool {
    (0..3).all(|a| {
        (0..3).filter(|b| *b != a).all(|b| {
            cells
                .get(&(node(a), node(b)))
                .is_some_and(|c| c.starts_with(want(a, b)))
        })
    })
}

/// Host `h` drops what `matches` as it comes in (an input chain in its own table,
/// `inet probe_test`).
fn drop_on(h: &Sandbox, matches: &[&str]) {
    h.run_ok(&["nft", "add", "table", "inet", "probe_test"]);
    h.run_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "probe_test",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    let mut rule = vec!["nft", "add", "rule", "inet", "probe_test", "in"];
    rule.extend_from_slice(matches);
    rule.push("drop");
    h.run_ok(&rule);
}

#[test]
fn nodes_shows_the_vxlan_probe_ok_filtered_port_and_mtu_blackhole() {
    require_root("nodes_shows_the_vxlan_probe_ok_filtered_port_and_mtu_blackhole");
    let cluster = Cluster::new(3);
    let agents = Agents::start(&cluster, &[]);

    until(&agents, "every pair probes ok", || {
        pairs_are(&matrix(&cluster, &agents), |_, _| "ok")
    });
    // Steady state: the probes run on, and nothing is written.
    let before = values(&cluster, ROOT);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        before,
        values(&cluster, ROOT),
        "the probe wrote in steady state"
    );

    // Host 2 drops VXLAN's port: every pair with n2 is unreachable, n0 and n1 still ok.
    let h2 = cluster.host(2);
    drop_on(h2, &["udp", "dport", "4789"]);
    until(&agents, "pairs with n2 unreachable", || {
        pairs_are(&matrix(&cluster, &agents), |a, b| {
            if a == 2 || b == 2 {
                "unreachable"
            } else {
                "ok"
            }
        })
    });
    let listed = ok(&cluster.netcompose(1, &["nodes"]), "nodes", &agents);
    assert!(listed.contains("unreachable to n2"), "{listed}");
    h2.run_ok(&["nft", "delete", "table", "inet", "probe_test"]);
    until(&agents, "every pair ok again", || {
        pairs_are(&matrix(&cluster, &agents), |_, _| "ok")
    });

    // Host 1 drops VXLAN datagrams longer than 1400 bytes, silently, as a hop of smaller MTU
    // on the way would: small frames pass, full-size ones not. (Lowering the MTU of host 1's
    // own link instead blackholed etcd's traffic to and from its member as well: in CI its
    // agent lost its lease and could not record its probes.)
    drop_on(
        cluster.host(1),
        &["udp", "dport", "4789", "meta", "length", "gt", "1400"],
    );
    until(&agents, "pairs with n1 too big", || {
        pairs_are(&matrix(&cluster, &agents), |a, b| {
            if a == 1 || b == 1 {
                "too big"
            } else {
                "ok"
            }
        })
    });
}

/// web: two replicas, on n0 and n1 (none on n2), port 9090 of the hosts published to 8080.
const MESHED: &str = "services:\n  web:\n    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n        constraints: [node.hostname != n2]\n    ports: [\"9090:8080\"]\n    networks: [mesh]\nnetworks:\n  mesh:\n    driver: overlay\n    ipam: {config: [{subnet: 10.74.0.0/24}]}\n";

/// The first word of each answer of `count` TCP connections from host `from` to `to:port`.
fn answers(p: &Project, to: &str, port: &str, count: &str) -> BTreeSet<String> {
    p.probe(None, &["tcp", to, port, count])
        .iter()
        .filter_map(|l| l.split(' ').next().map(String::from))
        .collect()
}

#[test]
fn a_published_port_balances_over_the_replicas_of_every_host() {
    require_root("a_published_port_balances_over_the_replicas_of_every_host");
    let cluster = Cluster::new(3);
    let agents = Agents::start(&cluster, &[]);
    let name = project("mesh");
    let projects: Vec<Project> = (0..3)
        .map(|h| Project::new(cluster.host(h), &name, MESHED))
        .collect();
    let url = cluster.store_url();
    let out = projects[0].nc(&["--store", &url, "up"]);
    ok(&out, "up", &agents);
    let host_of = |i: u32| {
        let ns = projects[0].ns("web", i);
        (0..3)
            .find(|&h| common::agents::namespaces(&cluster, h).contains(&ns))
            .expect("every web replica runs somewhere")
    };
    let on: Vec<usize> = (1..=2).map(host_of).collect();
    let mut hosts = on.clone();
    hosts.sort();
    assert_eq!(hosts, [0, 1]);
    let _servers = Servers(
        (1..=2u32)
            .map(|i| projects[on[i as usize - 1]].serve("web", i, 8080))
            .collect(),
    );
    let both: BTreeSet<String> = ["web-1", "web-2"].map(String::from).into();

    // From each host that runs one, its own published port reaches both replicas: the other
    // through the other host's publication.
    for h in [0, 1] {
        let me = underlay_ip(h);
        projects[h].wait_open(None, &me, 9090);
        assert_eq!(answers(&projects[h], &me, "9090", "40"), both, "host {h}");
    }
    // A connection from another host with endpoints on the overlay is served where it
    // arrives (it may have been sent by that host's share of the mesh); from a host with
    // none (n2), it is balanced like any other.
    let local = |h: usize| {
        let i = on.iter().position(|&x| x == h).unwrap() + 1;
        BTreeSet::from([format!("web-{i}")])
    };
    assert_eq!(
        answers(&projects[1], &underlay_ip(0), "9090", "20"),
        local(0)
    );
    assert_eq!(answers(&projects[2], &underlay_ip(0), "9090", "40"), both);
    // A host that runs no replica does not publish the port.
    assert_eq!(
        answers(&projects[2], &underlay_ip(2), "9090", "1"),
        BTreeSet::from(["blocked".to_string()])
    );
}

#[test]
fn nodes_says_why_a_host_cannot_probe() {
    require_root("nodes_says_why_a_host_cannot_probe");
    let cluster = Cluster::new(3);
    // Another program holds VXLAN's port on host 2 before its agent starts.
    let mut holder = Servers(vec![cluster.host(2).spawn(&[
        "python3",
        "-c",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',4789))\nprint('ready',flush=True)\ntime.sleep(600)",
    ])]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0[0].stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let agents = Agents::start(&cluster, &[]);
    until(&agents, "n2's probe failure listed, n0 and n1 ok", || {
        let listed = ok(&cluster.netcompose(0, &["nodes"]), "nodes", &agents);
        let row = |n: &str| listed.lines().find(|l| l.starts_with(n)).map(String::from);
        row("n2 ").is_some_and(|l| l.contains("probe: ") && l.contains("in use"))
            && pairs_ok(&matrix(&cluster, &agents), 0, 1)
    });
}

/// Whether nodes `a` and `b` probe each other ok.
fn pairs_ok(cells: &BTreeMap<(String, String), String>, a: usize, b: usize) -> bool {
    [(a, b), (b, a)].iter().all(|(x, y)| {
        cells
            .get(&(node(*x), node(*y)))
            .is_some_and(|c| c.starts_with("ok"))
    })
}
