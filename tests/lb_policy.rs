//! Load balancing, published ports and policies with real packets (issue 6): VIP spreading over
//! replicas with the client's real address preserved, scaling with an open connection,
//! published ports from outside, from the host and from 127.0.0.1, and a reachability matrix
//! that `netcompose check` must agree with.

mod common;

use common::project::Project;
use common::sandbox::{require_root, Sandbox, UPLINK_HOST_IP};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

const LB: &str = "
services:
  web:
    deploy: {replicas: 3}
    networks: [front]
    ports: [\"8080:80\", \"8080:80/udp\"]
  client:
    networks: [front]
networks:
  front: {}
";

/// Replica label → count, from probe output lines like `web-2 172.16.0.9`.
fn tally(lines: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for l in lines {
        *counts
            .entry(l.split_whitespace().next().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Every replica got a fair part: at least `min_share` of the probes (20% of 300 for three
/// replicas, as the issue asks; elsewhere half the even share, which random spreading over
/// smaller samples meets with a margin of several standard deviations).
fn assert_spread(counts: &HashMap<String, usize>, replicas: &[&str], total: usize, min_share: f64) {
    for r in replicas {
        let n = counts.get(*r).copied().unwrap_or(0);
        assert!(
            n as f64 >= min_share * total as f64,
            "{r} got {n} of {total}: {counts:?}"
        );
    }
    assert_eq!(
        counts.values().sum::<usize>(),
        total,
        "every probe must reach a replica: {counts:?}"
    );
}

#[test]
fn vip_spreads_tcp_and_udp_and_keeps_client_addresses() {
    require_root("vip_spreads_tcp_and_udp_and_keeps_client_addresses");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "lbvip", LB);
    p.up();
    let _servers: Vec<_> = (1..=3).map(|n| p.serve("web", n, 80)).collect();
    let vip = p.vip("web", "front");
    let client = p.addr("client", 1, "front");
    p.wait_open(Some(("client", 1)), &vip, 80);
    for proto in ["tcp", "udp"] {
        let lines = p.probe(Some(("client", 1)), &[proto, &vip, "80", "300"]);
        assert_spread(&tally(&lines), &["web-1", "web-2", "web-3"], 300, 0.2);
        assert!(
            lines.iter().all(|l| l.ends_with(&format!(" {client}"))),
            "a replica saw another source than {client}: {:?}",
            &lines[..5]
        );
    }
}

#[test]
fn scaling_keeps_open_connections_and_spreads_new_ones() {
    require_root("scaling_keeps_open_connections_and_spreads_new_ones");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "lbscale", LB);
    p.up();
    let mut servers: Vec<_> = (1..=3).map(|n| p.serve("web", n, 80)).collect();
    let vip = p.vip("web", "front");
    p.wait_open(Some(("client", 1)), &vip, 80);
    // Hold a connection that landed on web-1 or web-2 (they survive the scale-down to 2).
    let (mut held, mut reader) = loop {
        let mut child = sb
            .command(
                "ip",
                &[
                    "netns",
                    "exec",
                    &p.ns("client", 1),
                    "python3",
                    &common::project::support("probe.py"),
                    "hold",
                    &vip,
                    "80",
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn hold");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        reader.read_line(&mut first).expect("greeting");
        if first.starts_with("web-1") || first.starts_with("web-2") {
            break (child, reader);
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let echo = |held: &mut std::process::Child,
                reader: &mut BufReader<std::process::ChildStdout>,
                text: &str| {
        let stdin = held.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{text}").expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        reader.read_line(&mut line).expect("echo");
        line
    };
    assert!(echo(&mut held, &mut reader, "before").contains("before"));

    p.rewrite(&LB.replace("replicas: 3", "replicas: 4"));
    p.up();
    servers.push(p.serve("web", 4, 80));
    p.wait_open(Some(("web", 1)), &p.addr("web", 4, "front"), 80);
    let lines = p.probe(Some(("client", 1)), &["tcp", &vip, "80", "200"]);
    assert_spread(
        &tally(&lines),
        &["web-1", "web-2", "web-3", "web-4"],
        200,
        0.125,
    );
    assert!(
        echo(&mut held, &mut reader, "after-up").contains("after-up"),
        "the open connection died when scaling up"
    );

    p.rewrite(&LB.replace("replicas: 3", "replicas: 2"));
    p.up();
    let lines = p.probe(Some(("client", 1)), &["tcp", &vip, "80", "100"]);
    let counts = tally(&lines);
    assert_spread(&counts, &["web-1", "web-2"], 100, 0.25);
    assert!(
        !counts.contains_key("web-3") && !counts.contains_key("web-4"),
        "{counts:?}"
    );
    assert!(
        echo(&mut held, &mut reader, "after-down").contains("after-down"),
        "the open connection died when scaling down"
    );
    let _ = held.kill();
    let _ = held.wait();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn published_ports_from_outside_host_and_loopback() {
    require_root("published_ports_from_outside_host_and_loopback");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "lbpub", LB);
    p.up();
    let _servers: Vec<_> = (1..=3).map(|n| p.serve("web", n, 80)).collect();
    p.wait_open(None, "127.0.0.1", 8080);
    // From the outside namespace, through the uplink: the other machines' view.
    let script = common::project::support("probe.py");
    let out = sb.run_in_outside(&["python3", &script, "tcp", UPLINK_HOST_IP, "8080", "150"]);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_spread(&tally(&lines), &["web-1", "web-2", "web-3"], 150, 1.0 / 6.0);
    assert!(
        lines.iter().all(|l| l.ends_with(" 198.18.0.1")),
        "the outside's address must be preserved: {:?}",
        &lines[..3]
    );
    let udp = sb.run_in_outside(&["python3", &script, "udp", UPLINK_HOST_IP, "8080", "150"]);
    let lines: Vec<String> = String::from_utf8_lossy(&udp.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_spread(&tally(&lines), &["web-1", "web-2", "web-3"], 150, 1.0 / 6.0);
    // From the host itself, to its own address and to 127.0.0.1.
    for addr in [UPLINK_HOST_IP, "127.0.0.1"] {
        let lines = p.probe(None, &["tcp", addr, "8080", "150"]);
        assert_spread(&tally(&lines), &["web-1", "web-2", "web-3"], 150, 1.0 / 6.0);
    }
}

const MATRIX: &str = "
networks:
  front: {}
  back: {internal: true}
  mgmt:
    ipam: {config: [{subnet: 10.77.0.0/24}]}
services:
  client:
    networks: [front]
    x-policy:
      egress: {deny: [\"web:80/udp\"]}
  web:
    networks: [front, back]
  api:
    networks: [back, mgmt]
    x-policy:
      ingress:
        allow: [\"web:80/tcp\", \"10.77.0.0/24\"]
        deny: [\"0.0.0.0/0\"]
  db:
    networks: [back]
    x-policy:
      ingress: {allow: [api], deny: [\"0.0.0.0/0\"]}
  monitor:
    networks: [mgmt]
    x-policy:
      egress: {deny: [\"api:80/tcp\"]}
";

/// (from, to) → (tcp, udp, icmp) that must get through, from the policies above: a shared
/// network, then the target's ingress and the source's egress rules.
fn expected(from: &str, to: &str) -> (bool, bool, bool) {
    match (from, to) {
        ("client", "web") => (true, false, true),
        ("web", "client") | ("api", "web") | ("db", "web") | ("api", "db") | ("api", "monitor") => {
            (true, true, true)
        }
        ("web", "api") => (true, false, false),
        ("monitor", "api") => (false, true, true),
        _ => (false, false, false),
    }
}

#[test]
fn reachability_matrix_matches_policies_and_check_agrees() {
    require_root("reachability_matrix_matches_policies_and_check_agrees");
    let services = ["client", "web", "api", "db", "monitor"];
    let mut checks = String::from("x-checks:\n");
    for from in services {
        for to in services.iter().filter(|t| **t != from) {
            let (tcp, udp, icmp) = expected(from, to);
            let e = |b: bool| if b { "reach" } else { "blocked" };
            checks.push_str(&format!(
                "  - {{from: {from}, to: {to}, port: 80, protocol: tcp, expect: {}}}\n",
                e(tcp)
            ));
            checks.push_str(&format!(
                "  - {{from: {from}, to: {to}, port: 80, protocol: udp, expect: {}}}\n",
                e(udp)
            ));
            checks.push_str(&format!(
                "  - {{from: {from}, to: {to}, protocol: icmp, expect: {}}}\n",
                e(icmp)
            ));
        }
    }
    let sb = Sandbox::new();
    let p = Project::new(&sb, "matrix", &format!("{MATRIX}{checks}"));
    p.up();
    let _servers: Vec<_> = services.iter().map(|s| p.serve(s, 1, 80)).collect();
    let ps = p.ps();
    // The address each source aims at: the target's on a network they share, else its first.
    let nets = |s: &str| -> Vec<String> {
        ps["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["service"] == s)
            .flat_map(|r| r["interfaces"].as_array().cloned().unwrap_or_default())
            .map(|i| i["network"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    p.wait_open(Some(("api", 1)), &p.addr("db", 1, "back"), 80);
    let cells: Vec<(String, String, String, bool)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for from in services {
            for to in services.iter().copied().filter(|t| *t != from) {
                let (from_nets, to_nets) = (nets(from), nets(to));
                let net = to_nets
                    .iter()
                    .find(|n| from_nets.contains(n))
                    .or(to_nets.first())
                    .cloned()
                    .unwrap_or_default();
                let addr = p.addr(to, 1, &net);
                let (tcp, udp, icmp) = expected(from, to);
                for (proto, want) in [("tcp", tcp), ("udp", udp), ("icmp", icmp)] {
                    let (p, addr) = (&p, addr.clone());
                    handles.push(s.spawn(move || {
                        let args: Vec<&str> = if proto == "icmp" {
                            vec!["icmp", &addr]
                        } else {
                            vec![proto, &addr, "80"]
                        };
                        let got = p
                            .probe(Some((from, 1)), &args)
                            .first()
                            .is_some_and(|l| l != "blocked");
                        (
                            format!("{from}→{to}"),
                            proto.to_string(),
                            format!("{got}"),
                            got == want,
                        )
                    }));
                }
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let wrong: Vec<_> = cells.iter().filter(|c| !c.3).collect();
    assert!(
        wrong.is_empty(),
        "cells that differ from the policies (got reach=…): {wrong:?}"
    );
    assert_eq!(cells.len(), 60);
    let out = p.nc(&["check", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
    let failed: Vec<_> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["passed"] != true)
        .collect();
    assert!(
        failed.is_empty(),
        "netcompose check disagrees with the matrix: {failed:#?}"
    );
    assert!(out.status.success());
}

#[test]
fn quickstart_checks_pass() {
    require_root("quickstart_checks_pass");
    let sb = Sandbox::new();
    let file = format!(
        "{}/examples/quickstart/compose.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let up = sb.netcompose(&["-f", &file, "up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    // The x-run servers take a moment to listen; check is retried until they do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let out = sb.netcompose(&["-f", &file, "check"]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "quickstart checks failed:\n{text}");
    assert!(text.contains("5 passed, 0 failed"), "{text}");
    let down = sb.netcompose(&["-f", &file, "down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

const PEERS: &str = "
services:
  api:
    deploy: {replicas: 1}
    networks: [front]
  db:
    networks: [front]
    x-policy:
      ingress:
        allow: [\"api:80/tcp\"]
        deny: [\"0.0.0.0/0\"]
networks:
  front: {}
";

/// A policy names a service through a named set: scaling the service adds and removes the
/// set's elements in the tables that name it (the plan shows exactly that), and leaves every
/// rule in place (same kernel handles), while a new replica is let in and a removed one's
/// address is no longer.
#[test]
fn scaling_a_policy_peer_changes_its_set_and_no_rule() {
    require_root("scaling_a_policy_peer_changes_its_set_and_no_rule");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "peers", PEERS);
    p.up();
    // The sandbox's drop kills the server, whatever happens here.
    let _servers = [p.serve("db", 1, 80)];
    let db = p.addr("db", 1, "front");
    p.wait_open(Some(("api", 1)), &db, 80);
    let db_ns = p.ns("db", 1);
    let nft = |what: &[&str]| {
        let mut args = vec!["ip", "netns", "exec", &db_ns, "nft", "-a", "list"];
        args.extend_from_slice(what);
        sb.run_ok(&args)
    };
    let rules = || nft(&["chain", "inet", "netcompose", "ingress"]);
    let set = || nft(&["set", "inet", "netcompose", "from.api"]);
    let before = rules();
    assert!(
        before.contains("ip saddr @from.api tcp dport 80 accept"),
        "{before}"
    );

    p.rewrite(&PEERS.replace("replicas: 1", "replicas: 2"));
    let plan = p.nc_ok(&["plan"]);
    assert!(
        plan.lines().any(|l| l.trim().starts_with("~ from.api: + ")),
        "the plan shows the set's new element:\n{plan}"
    );
    p.up();
    let api2 = p.addr("api", 2, "front");
    assert_eq!(rules(), before, "a scale rewrote the policy's rules");
    assert!(set().contains(&api2), "{}", set());
    assert!(
        p.probe(Some(("api", 2)), &["tcp", &db, "80"])
            .first()
            .is_some_and(|l| l != "blocked"),
        "the new replica is let in"
    );

    p.rewrite(PEERS);
    p.up();
    assert_eq!(rules(), before, "a scale down rewrote the policy's rules");
    assert!(!set().contains(&api2), "{}", set());
    assert!(
        p.probe(Some(("api", 1)), &["tcp", &db, "80"])
            .first()
            .is_some_and(|l| l != "blocked"),
        "the remaining replica is still let in"
    );
}

/// A VIP whose service's policy turns a client's service away on every port is dropped in the
/// client's own dispatch, with no chain or map of the backends there; a client the policy lets
/// in still reaches the service through it.
#[test]
fn a_vip_refused_by_its_policy_is_dropped_at_the_client() {
    require_root("a_vip_refused_by_its_policy_is_dropped_at_the_client");
    let sb = Sandbox::new();
    let compose = PEERS.replace(
        "\nnetworks:\n  front: {}",
        "\n  other:\n    networks: [front]\nnetworks:\n  front: {}",
    );
    let p = Project::new(&sb, "refused", &compose);
    p.up();
    let _servers = [p.serve("db", 1, 80)];
    let vip = p.vip("db", "front");
    p.wait_open(Some(("api", 1)), &vip, 80);
    let table = sb.run_ok(&[
        "ip",
        "netns",
        "exec",
        &p.ns("other", 1),
        "nft",
        "list",
        "table",
        "inet",
        "netcompose",
    ]);
    assert!(table.contains(&format!("{vip} : drop")), "{table}");
    assert!(!table.contains("vip.db.front"), "{table}");
    assert!(
        p.probe(Some(("other", 1)), &["tcp", &vip, "80"])
            .first()
            .is_some_and(|l| l == "blocked"),
        "a refused client is kept out through the VIP"
    );
}

/// An `up` trusts a table without reading it only while its namespace's ruleset generation is
/// the one a run recorded after reading or writing it: a rule added or a policy set's element
/// deleted by hand moves the generation on, so the next `up` reads the table, sees the change
/// and undoes it; an `up` with nothing changed reads nothing and changes nothing.
#[test]
fn a_table_changed_by_hand_is_read_again_and_repaired() {
    require_root("a_table_changed_by_hand_is_read_again_and_repaired");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "gens", PEERS);
    p.up();
    assert!(p.up().contains("No changes."), "an up right after an up");
    assert!(p.up().contains("No changes."), "an up on recorded tables");
    let db_ns = p.ns("db", 1);
    let api = p.addr("api", 1, "front");
    let nft = |what: &[&str]| {
        let mut args = vec!["ip", "netns", "exec", &db_ns, "nft"];
        args.extend_from_slice(what);
        sb.run_ok(&args)
    };
    let rules = || nft(&["list", "chain", "inet", "netcompose", "ingress"]);
    let set = || nft(&["list", "set", "inet", "netcompose", "from.api"]);
    let before = rules();
    assert!(set().contains(&api), "{}", set());

    let element = format!("{{ {api} }}");
    nft(&[
        "delete",
        "element",
        "inet",
        "netcompose",
        "from.api",
        &element,
    ]);
    assert!(!set().contains(&api), "{}", set());
    assert!(
        !p.up().contains("No changes."),
        "the deleted element was not seen"
    );
    assert!(set().contains(&api), "the element is back: {}", set());
    assert!(p.up().contains("No changes."), "an up after the repair");

    nft(&[
        "add",
        "rule",
        "inet",
        "netcompose",
        "ingress",
        "counter",
        "accept",
    ]);
    assert_ne!(rules(), before);
    assert!(
        !p.up().contains("No changes."),
        "the added rule was not seen"
    );
    assert_eq!(rules(), before, "the rule added by hand is gone");
    assert!(p.up().contains("No changes."), "an up after the repair");
}
