//! IPv6 as a peer of IPv4 on dual-stack networks (issue 15, item 8), with real packets: a
//! service name resolves (AAAA) to an IPv6 VIP that balances TCP and UDP over the replicas;
//! published ports answer on the host's IPv6 addresses, from outside and from the host, and on
//! [::1]; policies and internal networks hold over IPv6; `netcompose check` probes IPv6. Every
//! probe is sent once, right after `up` returns (and the test's servers say they listen): no
//! address may still be going through duplicate address detection.
//!
//! The dual-stack files are shaped after compose-go's loader/full-example.yml (`other-network`:
//! an IPv4 and an IPv6 `ipam.config` entry, a v6 gateway, a service with a static
//! `ipv6_address`), with unique local prefixes instead of its 2001:3984:3989::/64 so that test
//! addresses stay private.

mod common;

use common::Servers;

use common::project::{support, Project};
use common::sandbox::{require_root, Sandbox};
use std::io::{BufRead, BufReader};
use std::process::Child;

const DUAL: &str = "
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
    ports: [\"8080:80\", \"8080:80/udp\"]
  client:
    networks: [front]
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 172.30.5.0/24
        - subnet: \"fd00:c5::/64\"
";

/// The host's IPv6 address on the sandbox's uplink, and the outside end's.
const HOST_V6: &str = "fd00:198:18::2";
const OUTSIDE_V6: &str = "fd00:198:18::1";

/// Start the echo service in a replica and return once it says every socket is bound.
fn serve_ready(p: &Project, service: &str, n: u32) -> Child {
    let label = format!("{service}-{n}");
    let mut child = p.sb.spawn(&[
        "ip",
        "netns",
        "exec",
        &p.ns(service, n),
        "python3",
        &support("echo_server.py"),
        &label,
        "80",
    ]);
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "{label} did not start");
    child
}

/// The echo service in the outside namespace (another machine), once it listens.
fn serve_outside(sb: &Sandbox) -> Child {
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net={}", sb.outside_netns_path().display()))
        .args(["python3", &support("echo_server.py"), "outside", "80"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the outside echo server");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "the outside server did not start");
    child
}

/// A replica's IPv6 address on `network`, from `ps --json`.
fn addr6(p: &Project, service: &str, n: u32, network: &str) -> String {
    let ps = p.ps();
    ps["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["service"] == service && r["replica"] == n)
        .flat_map(|r| r["interfaces"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["network"] == network)
        .flat_map(|i| i["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some(a.as_str()?.split('/').next()?.to_string()))
        .find(|a| a.contains(':'))
        .unwrap_or_else(|| panic!("{service}[{n}] has no IPv6 address on {network}"))
}

/// A service's IPv6 VIP on `network`, from `ps --json`.
fn vip6(p: &Project, service: &str, network: &str) -> String {
    let ps = p.ps();
    ps["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["service"] == service && v["network"] == network)
        .flat_map(|v| v["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .find(|a| a.contains(':'))
        .unwrap_or_else(|| panic!("{service} has no IPv6 VIP on {network}"))
}

/// Addresses of `prefix` still tentative (in DAD) in a namespace (None: the sandbox host).
fn tentative(p: &Project, ns: Option<&str>, prefix: &str) -> String {
    let mut cmd: Vec<&str> = match ns {
        Some(ns) => vec!["ip", "netns", "exec", ns],
        None => vec![],
    };
    cmd.extend(["ip", "-6", "addr", "show", "to", prefix, "tentative"]);
    p.sb.run_ok(&cmd)
}

/// Give the sandbox's uplink an IPv6 address at both ends (the harness made the uplink).
fn uplink_v6(sb: &Sandbox) {
    sb.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{HOST_V6}/64"),
        "dev",
        "uplink",
        "nodad",
    ]);
    let out = sb.run_in_outside(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{OUTSIDE_V6}/64"),
        "dev",
        "uplink",
        "nodad",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn from_outside(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let script = support("probe.py");
    let mut cmd = vec!["python3", script.as_str()];
    cmd.extend_from_slice(args);
    let out = sb.run_in_outside(&cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Every line is an answer from a replica of `service` that saw `client` as the source.
fn answered_by(lines: &[String], service: &str, client: &str, count: usize) {
    assert_eq!(lines.len(), count, "{lines:?}");
    for l in lines {
        assert!(
            l.starts_with(&format!("{service}-")) && l.ends_with(&format!(" {client}")),
            "expected {service}-N {client}, got {l:?} (all: {lines:?})"
        );
    }
}

#[test]
fn service_name_over_ipv6_reaches_the_vip_the_moment_up_returns() {
    require_root("service_name_over_ipv6_reaches_the_vip_the_moment_up_returns");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "v6vip", DUAL);
    p.up();
    for (s, n) in [("web", 1), ("web", 2), ("client", 1)] {
        let left = tentative(&p, Some(&p.ns(s, n)), "fd00:c5::/64");
        assert!(left.trim().is_empty(), "{s}[{n}] still in DAD: {left}");
    }
    let bridge = tentative(&p, None, "fd00:c5::/64");
    assert!(
        bridge.trim().is_empty(),
        "the bridge is still in DAD: {bridge}"
    );
    let _servers = Servers(vec![serve_ready(&p, "web", 1), serve_ready(&p, "web", 2)]);
    let client = addr6(&p, "client", 1, "front");
    let vip = vip6(&p, "web", "front");
    for proto in ["tcp6", "udp6"] {
        // The name: the resolver's AAAA answer, then the ip6 DNAT of the VIP.
        let lines = p.probe(Some(("client", 1)), &[proto, "web", "80", "40"]);
        answered_by(&lines, "web", &client, 40);
        let seen: std::collections::BTreeSet<&str> = lines
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(seen.len(), 2, "both replicas must answer: {lines:?}");
        let lines = p.probe(Some(("client", 1)), &[proto, &vip, "80", "5"]);
        answered_by(&lines, "web", &client, 5);
    }
    // IPv4 keeps working beside it.
    let client4 = p.addr("client", 1, "front");
    let lines = p.probe(
        Some(("client", 1)),
        &["tcp", &p.vip("web", "front"), "80", "5"],
    );
    answered_by(&lines, "web", &client4, 5);
}

#[test]
fn published_ports_answer_on_the_hosts_ipv6_addresses_and_loopback() {
    require_root("published_ports_answer_on_the_hosts_ipv6_addresses_and_loopback");
    let sb = Sandbox::new();
    uplink_v6(&sb);
    let p = Project::new(&sb, "v6pub", DUAL);
    p.up();
    let _servers = Servers(vec![serve_ready(&p, "web", 1), serve_ready(&p, "web", 2)]);
    for proto in ["tcp", "udp"] {
        // From another machine: its address is preserved.
        let lines = from_outside(&sb, &[proto, HOST_V6, "8080", "20"]);
        answered_by(&lines, "web", OUTSIDE_V6, 20);
        // From the host to its own IPv6 address.
        let lines = p.probe(None, &[proto, HOST_V6, "8080", "5"]);
        assert_eq!(lines.len(), 5);
        assert!(
            lines.iter().all(|l| l.starts_with("web-")),
            "{proto} to [{HOST_V6}]:8080 from the host: {lines:?}"
        );
        // From the host to [::1], through the daemon's relay.
        let lines = p.probe(None, &[proto, "::1", "8080", "5"]);
        assert_eq!(lines.len(), 5);
        assert!(
            lines.iter().all(|l| l.starts_with("web-")),
            "{proto} to [::1]:8080: {lines:?}"
        );
    }
    // 127.0.0.1 still works as before.
    let lines = p.probe(None, &["tcp", "127.0.0.1", "8080", "3"]);
    assert!(lines.iter().all(|l| l.starts_with("web-")), "{lines:?}");
    // The daemon's own [::1] sockets are not "a process of the host" holding the port: `up`
    // runs again, and scaling swaps the relay's backends in place.
    p.rewrite(&DUAL.replace("replicas: 2", "replicas: 3"));
    p.up();
    let _third = Servers(vec![serve_ready(&p, "web", 3)]);
    let lines = p.probe(None, &["tcp", "::1", "8080", "60"]);
    let seen: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        seen.len(),
        3,
        "[::1] must reach all three replicas: {lines:?}"
    );
}

const POLICY: &str = "
services:
  web:
    networks:
      front: {ipv6_address: \"fd00:c7::10\"}
  client:
    networks: [front]
    x-policy:
      egress: {deny: [\"web:80/udp\"]}
  api:
    networks: [front]
    x-policy:
      ingress: {allow: [client], deny: [\"0.0.0.0/0\", \"::/0\"]}
  stranger:
    networks: [front]
  lonely:
    networks: [back]
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 172.30.7.0/24
        - subnet: \"fd00:c7::/64\"
          gateway: \"fd00:c7::1\"
  back:
    internal: true
    enable_ipv6: true
    ipam:
      config:
        - subnet: 172.30.8.0/24
        - subnet: \"fd00:c8::/64\"
x-checks:
  - {from: client, to: \"fd00:c7::10\", port: 80, protocol: tcp, expect: reach}
  - {from: client, to: \"fd00:c7::10\", port: 80, protocol: udp, expect: blocked}
  - {from: client, to: web, port: 80, protocol: tcp, family: ipv6, expect: reach}
  - {from: client, to: web, port: 80, protocol: udp, family: ipv6, expect: blocked}
  - {from: stranger, to: api, port: 80, family: ipv6, expect: blocked}
  - {from: client, to: api, port: 80, family: ipv6, expect: reach}
";

#[test]
fn policies_internal_networks_and_check_hold_over_ipv6() {
    require_root("policies_internal_networks_and_check_hold_over_ipv6");
    let sb = Sandbox::new();
    uplink_v6(&sb);
    let p = Project::new(&sb, "v6pol", POLICY);
    p.up();
    let _servers = Servers(vec![
        serve_ready(&p, "web", 1),
        serve_ready(&p, "api", 1),
        serve_ready(&p, "lonely", 1),
    ]);
    let open = |from: &str, proto: &str, to: &str| {
        p.probe(Some((from, 1)), &[proto, to, "80"])
            .first()
            .is_some_and(|l| l != "blocked")
    };
    let api = addr6(&p, "api", 1, "front");
    for (from, proto, to, want) in [
        ("client", "tcp6", "web", true),
        ("client", "udp6", "web", false),
        ("client", "tcp6", "fd00:c7::10", true),
        ("client", "udp6", "fd00:c7::10", false),
        ("stranger", "udp6", "web", true),
        ("client", "tcp6", api.as_str(), true),
        ("stranger", "tcp6", api.as_str(), false),
        ("stranger", "udp6", api.as_str(), false),
    ] {
        assert_eq!(open(from, proto, to), want, "{from} → {to} over {proto}");
    }
    // Out of the project over IPv6: masqueraded from a normal network, nothing from an
    // internal one, which still reaches nobody of the front network either.
    let _outside = Servers(vec![serve_outside(&sb)]);
    assert!(
        open("client", "tcp6", OUTSIDE_V6),
        "front → outside over IPv6"
    );
    assert!(
        !open("lonely", "tcp6", OUTSIDE_V6),
        "internal → outside over IPv6"
    );
    let out = p.nc(&["check", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
    assert!(out.status.success(), "check failed: {rows:#}");
    assert_eq!(rows.as_array().map(Vec::len), Some(6), "{rows:#}");
    // The family was honoured: every address probed is an IPv6 one.
    for row in rows.as_array().into_iter().flatten() {
        let addr = row["address"].as_str().unwrap_or_default();
        assert!(addr.contains(':'), "probed over IPv4: {row:#}");
    }
}
