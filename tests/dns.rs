//! The embedded resolver against the real kernel (issue 5): names resolve from replicas with
//! `dig` and `getent` exactly where Docker would resolve them, and nowhere else; other names
//! are forwarded to a fake upstream server in the sandbox (never to the internet), its rcode
//! passed through; an internal-only replica gets no forwarding. Plus a fuzz target for the
//! request handler (malformed packets), and a live one (malformed UDP packets and TCP streams
//! against a running daemon).
//!
//! Every test builds its own sandbox host (tests/common/sandbox.rs); the daemon `up` starts
//! runs inside it and dies with it. Needs root; without it each test fails, saying
//! so.
//!
//! Fuzzing for longer: `NETCOMPOSE_FUZZ_SECONDS=600 cargo test --test dns fuzz -- --nocapture`.

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::{require_root, wait_for};
use lab::Lab;
use std::time::Duration;

const NAMES: &str = r#"
name: dn
networks:
  front:
    ipam: {config: [{subnet: 10.71.1.0/24}]}
  back:
    ipam: {config: [{subnet: 10.71.2.0/24}]}
  other:
    ipam: {config: [{subnet: 10.71.3.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    hostname: webhost
    networks:
      front:
        aliases: [www]
  api:
    deploy: {replicas: 2, endpoint_mode: dnsrr}
    networks:
      front: {}
      back:
        aliases: [apiback]
  db:
    container_name: thedb
    networks: [back]
  client:
    networks: [front]
  lonely:
    networks: [other]
"#;

fn in_subnet(addrs: &[String], prefix: &str) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.starts_with(prefix))
}

#[test]
fn names_resolve_only_where_a_network_is_shared() {
    require_root("names_resolve_only_where_a_network_is_shared");
    let lab = Lab::new("nc-dns-");
    let (_up, _log) = lab.fake_upstream_outside("198.18.0.1");
    let f = lab.file("compose.yaml", NAMES);
    let out = lab.nc_ok(&f, &["up"]);
    assert!(out.contains("Daemon: started"), "{out}");

    // The addresses the model gave each replica, from `ps --json`.
    let ps: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &lab.nc(&f, &["ps", "--json"]).stdout,
    ))
    .unwrap();
    let addr_of = |svc: &str, n: u64, net: &str| -> String {
        ps["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == svc && r["replica"] == n)
            .and_then(|r| {
                r["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["network"] == net)
            })
            .map(|i| {
                i["addresses"][0]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no address of {svc}[{n}] on {net}"))
    };
    let vip_of = |svc: &str, net: &str| -> String {
        ps["vips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["service"] == svc && v["network"] == net)
            .map(|v| v["address"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no VIP of {svc} on {net}"))
    };
    assert_eq!(ps["daemon"]["state"], "running", "{ps}");
    let web1 = addr_of("web", 1, "front");
    let web2 = addr_of("web", 2, "front");
    let mut webs = vec![web1.clone(), web2.clone()];
    webs.sort();
    let web_vip = vip_of("web", "front");
    let mut api_front = vec![addr_of("api", 1, "front"), addr_of("api", 2, "front")];
    api_front.sort();
    let mut api_back = vec![addr_of("api", 1, "back"), addr_of("api", 2, "back")];
    api_back.sort();
    let db = addr_of("db", 1, "back");

    let client = "dn-client-1";
    // Service name in vip mode: the VIP; tasks.<service>: every replica; replica names.
    let d = lab.dig(client, "web", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers, [web_vip.as_str()]);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert!(
        d.ttls.iter().all(|t| *t <= 5),
        "short TTL for a scaling name: {}",
        d.raw
    );
    assert_eq!(lab.addrs(client, "tasks.web"), webs);
    assert_eq!(lab.addrs(client, "dn-web-1"), [web1.as_str()]);
    assert_eq!(lab.addrs(client, "dn-web-2"), [web2.as_str()]);
    // Alias (scoped to front), hostname, <name>.<network> with the key and the full name.
    assert_eq!(lab.addrs(client, "www"), [web_vip.as_str()]);
    assert_eq!(lab.addrs(client, "webhost"), webs);
    assert_eq!(lab.addrs(client, "web.front"), [web_vip.as_str()]);
    assert_eq!(lab.addrs(client, "dn-web-1.dn_front"), [web1.as_str()]);
    // dnsrr: every replica, on the shared network only; shuffled (both orders show up).
    assert_eq!(lab.addrs(client, "api"), api_front);
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let out = lab.in_ns(client, &["dig", "+short", "@127.0.0.11", "api"]);
        orders.insert(String::from_utf8_lossy(&out.stdout).to_string());
    }
    assert_eq!(orders.len(), 2, "dnsrr answers are shuffled: {orders:?}");
    // Case does not matter; TCP works; PTR of a replica and of a VIP.
    assert_eq!(lab.addrs(client, "WeB.FrOnT"), [web_vip.as_str()]);
    assert_eq!(
        lab.dig(client, "web", &["+tcp"]).answers,
        [web_vip.as_str()]
    );
    assert_eq!(lab.ptr(client, &web1).answers, ["dn-web-1."]);
    assert_eq!(lab.ptr(client, &web_vip).answers, ["web."]);
    // An unassigned address of a shared subnet: NXDOMAIN from us, never asked upstream.
    assert_eq!(lab.ptr(client, "10.71.1.250").status, "NXDOMAIN");
    // A name that exists without IPv6: NOERROR, no answer.
    let d = lab.dig(client, "web", &["AAAA"]);
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );

    // Not shared: db, thedb, apiback, lonely are unknown to the client (they go upstream,
    // which refuses them).
    for name in [
        "db",
        "thedb",
        "apiback",
        "dn-db-1",
        "lonely",
        "dn-lonely-1",
        "db.back",
    ] {
        let d = lab.dig(client, name, &[]);
        assert!(
            d.answers.is_empty(),
            "{name} resolved from the client: {}",
            d.raw
        );
    }
    // From api (front + back): db and its container_name on back; api's own alias on back.
    let api = "dn-api-1";
    assert_eq!(lab.addrs(api, "db"), [vip_of("db", "back").as_str()]);
    assert_eq!(lab.addrs(api, "thedb"), [db.as_str()]);
    assert!(in_subnet(&lab.addrs(api, "apiback"), "10.71.2."));
    assert_eq!(lab.addrs(api, "web"), [web_vip.as_str()]);
    // From db (back only): api with its back addresses, not its front ones; nothing of front.
    assert_eq!(lab.addrs("dn-db-1", "api"), api_back);
    assert!(lab.addrs("dn-db-1", "web").is_empty());
    assert!(lab.addrs("dn-db-1", "www").is_empty());
    // lonely sees only itself.
    assert!(lab.addrs("dn-lonely-1", "web").is_empty());
    assert!(in_subnet(&lab.addrs("dn-lonely-1", "lonely"), "10.71.3."));

    // getent (glibc through the replica's resolv.conf and hosts) agrees.
    assert_eq!(lab.getent(client, "web"), [web_vip.as_str()]);
    assert_eq!(lab.getent(client, "tasks.web"), webs);
    assert_eq!(lab.getent(api, "thedb"), [db]);
    assert!(lab.getent(client, "thedb").is_empty());
    // exec sees the same resolver.
    let out = lab.nc_ok(&f, &["exec", "client", "--", "getent", "hosts", "web"]);
    assert!(out.contains(&web_vip), "{out}");

    lab.nc_ok(&f, &["down"]);
    assert!(
        !lab.sh(&["test", "-e", "/run/netcompose/dn"])
            .status
            .success(),
        "down leaves the daemon's directory"
    );
}

const FORWARD: &str = r#"
name: df
networks:
  open:
    ipam: {config: [{subnet: 10.72.1.0/24}]}
  sealed:
    internal: true
    ipam: {config: [{subnet: 10.72.2.0/24}]}
services:
  client:
    networks: [open]
  vault:
    networks: [sealed]
  resolver:
    networks:
      open: {ipv4_address: 10.72.1.53}
    x-run: [python3, "@SCRIPT@", 10.72.1.53, "53", "@LOG@"]
  viaservice:
    networks: [open]
    dns: [resolver]
  failover:
    networks: [open]
    dns: [10.72.1.99, 10.72.1.53]
"#;

#[test]
fn forwarding_passes_the_upstream_answer_through_and_fails_fast() {
    require_root("forwarding_passes_the_upstream_answer_through_and_fails_fast");
    let lab = Lab::new("nc-dnsfwd-");
    let (outside, host_log) = lab.fake_upstream_outside("198.18.0.1");
    let script = lab.fake_script();
    let svc_log = lab.dir.path().join("service-upstream.log");
    std::fs::write(&svc_log, "").unwrap();
    let yaml = FORWARD
        .replace("@SCRIPT@", script.to_str().unwrap())
        .replace("@LOG@", svc_log.to_str().unwrap());
    let f = lab.file("compose.yaml", &yaml);
    lab.nc_ok(&f, &["up"]);
    let client = "df-client-1";

    // The host's upstream (the sandbox's resolv.conf names the outside namespace).
    let d = lab.dig(client, "fwd.example", &[]);
    assert_eq!(
        (d.status.as_str(), d.answers.clone()),
        ("NOERROR", vec!["203.0.113.7".to_string()]),
        "{}",
        d.raw
    );
    let d = lab.dig(client, "nx.example", &[]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.elapsed < Duration::from_secs(2), "{:?}", d.elapsed);
    let d = lab.dig(client, "fail.example", &[]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(
        d.elapsed < Duration::from_millis(1500),
        "SERVFAIL is passed at once: {:?}",
        d.elapsed
    );
    assert!(
        Lab::upstream_queries(&host_log)
            .iter()
            .any(|l| l.ends_with("nx.example")),
        "the queries went to the fake upstream"
    );
    // A large answer: TC over UDP without EDNS, complete over TCP (dig retries by itself).
    let d = lab.dig(client, "big.example", &["+noedns", "+ignore"]);
    assert!(d.has_flag("tc") && d.answers.is_empty(), "{}", d.raw);
    let d = lab.dig(client, "big.example", &["+noedns"]);
    assert_eq!(d.answers.len(), 40, "{}", d.raw);
    assert!(
        Lab::upstream_queries(&host_log)
            .iter()
            .any(|l| l.starts_with("tcp ") && l.ends_with("big.example")),
        "the TCP retry was forwarded over TCP"
    );
    // An upstream that never answers: SERVFAIL before the client gives up.
    let d = lab.dig(client, "slow.example", &[]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(d.elapsed < Duration::from_secs(4), "{:?}", d.elapsed);

    // Only internal networks: REFUSED at once, and nothing reaches any upstream.
    let before = Lab::upstream_queries(&host_log).len();
    let d = lab.dig("df-vault-1", "fwd.example", &[]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(d.elapsed < Duration::from_millis(500), "{:?}", d.elapsed);
    assert!(!d.has_flag("ra"), "{}", d.raw);
    assert!(lab.getent("df-vault-1", "fwd.example").is_empty());
    assert_eq!(
        Lab::upstream_queries(&host_log).len(),
        before,
        "an internal replica's query left"
    );

    // `dns: [resolver]`: the service of the project (an x-run server), not the host's.
    assert!(
        wait_for(Duration::from_secs(10), || !lab
            .addrs("df-viaservice-1", "fwd.example")
            .is_empty()),
        "the x-run upstream never answered"
    );
    let before = Lab::upstream_queries(&host_log).len();
    assert_eq!(
        lab.dig("df-viaservice-1", "nx.example", &[]).status,
        "NXDOMAIN"
    );
    assert_eq!(Lab::upstream_queries(&host_log).len(), before);
    assert!(Lab::upstream_queries(&svc_log)
        .iter()
        .any(|l| l.ends_with("nx.example")));
    // Failover: the first server does not exist; the second answers, well within the timeout.
    let d = lab.dig("df-failover-1", "fwd.example", &[]);
    assert_eq!(d.answers, ["203.0.113.7"], "{}", d.raw);
    assert!(d.elapsed < Duration::from_millis(2500), "{:?}", d.elapsed);

    // The host's upstream goes away: SERVFAIL, fast (port unreachable is seen at once).
    drop(outside);
    let d = lab.dig(client, "fwd.example", &[]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(d.elapsed < Duration::from_secs(2), "{:?}", d.elapsed);
    // Names of the project still resolve.
    assert!(!lab.addrs(client, "resolver").is_empty());
    lab.nc_ok(&f, &["down"]);
}

/// The issue's "done when": the quickstart's client resolves `web` (its VIP) through `exec`.
#[test]
fn quickstart_client_resolves_web() {
    require_root("quickstart_client_resolves_web");
    let lab = Lab::new("nc-dnsqs-");
    let f =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/compose.yaml");
    lab.nc_ok(&f, &["up"]);
    let out = lab.nc_ok(&f, &["exec", "client", "--", "getent", "hosts", "web"]);
    let ip = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(out.contains("web") && ip.contains('.'), "{out}");
    let ps: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &lab.nc(&f, &["ps", "--json"]).stdout,
    ))
    .unwrap();
    assert!(
        ps["vips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["service"] == "web" && v["address"] == ip.as_str()),
        "web resolved to {ip}, not its VIP: {ps}"
    );
    // db is on `back` only: the client does not resolve it.
    assert!(!lab
        .nc(&f, &["exec", "client", "--", "getent", "hosts", "db"])
        .status
        .success());
    lab.nc_ok(&f, &["down"]);
}

// ------------------------------------------------------------------------------------ fuzz

mod fuzz {
    use hickory_proto::op::Message;
    use netcompose::daemon::resolver::answer::{handle, Outcome, Transport, MAX_UDP};
    use netcompose::daemon::resolver::Snapshot;
    use netcompose::model::daemon::{DaemonConfig, NamespaceView, NetworkView, Upstream};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    /// NETCOMPOSE_FUZZ_SECONDS (as tests/fuzz_loader.rs), else a short default run.
    pub fn seconds(default: u64) -> u64 {
        std::env::var("NETCOMPOSE_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// Names the generator draws from: the project's, reverse names, and strangers.
    pub const NAMES: &[&str] = &[
        "web",
        "tasks.web",
        "fz-web-1",
        "fz-web-1.front",
        "www",
        "db",
        "2.0.1.10.in-addr.arpa",
        "100.0.1.10.in-addr.arpa",
        "9.9.9.10.in-addr.arpa",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        "in-addr.arpa",
        "fwd.example",
        "",
    ];

    /// A query in wire format from raw labels.
    pub fn wire(
        id: u16,
        flags: u16,
        labels: &[Vec<u8>],
        qtype: u16,
        qclass: u16,
        edns: Option<(u16, u8, u16)>,
    ) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&u16::from(edns.is_some()).to_be_bytes());
        for l in labels {
            p.push(l.len().min(255) as u8);
            p.extend_from_slice(l);
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
        if let Some((payload, version, opt_len)) = edns {
            p.push(0); // root
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(0); // extended rcode
            p.push(version);
            p.extend_from_slice(&0u16.to_be_bytes());
            p.extend_from_slice(&opt_len.to_be_bytes());
            p.extend(std::iter::repeat_n(0u8, usize::from(opt_len.min(64))));
        }
        p
    }

    pub fn labels_of(name: &str) -> Vec<Vec<u8>> {
        name.split('.')
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect()
    }

    fn query_strategy() -> impl Strategy<Value = Vec<u8>> {
        let labels = prop_oneof![
            4 => proptest::sample::select(NAMES).prop_map(labels_of),
            2 => proptest::collection::vec("[a-zA-Z0-9-]{1,20}", 1..5)
                .prop_map(|v| v.into_iter().map(String::into_bytes).collect()),
            1 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 0..6),
        ];
        let qtype = prop_oneof![
            Just(1u16),
            Just(28),
            Just(12),
            Just(255),
            Just(15),
            Just(16),
            Just(33),
            any::<u16>()
        ];
        let qclass = prop_oneof![4 => Just(1u16), 1 => Just(255), 1 => any::<u16>()];
        let edns = proptest::option::of((
            any::<u16>(),
            prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
            prop_oneof![4 => Just(0u16), 1 => 0u16..80],
        ));
        let flags = prop_oneof![4 => Just(0x0100u16), 1 => any::<u16>()];
        (any::<u16>(), flags, labels, qtype, qclass, edns)
            .prop_map(|(id, f, l, t, c, e)| wire(id, f, &l, t, c, e))
    }

    /// Byte edits: overwrite, delete, insert, truncate.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            query_strategy(),
            proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..8),
        )
            .prop_map(|(mut p, edits)| {
                for (at, byte, kind) in edits {
                    if p.is_empty() {
                        break;
                    }
                    let i = usize::from(at) % p.len();
                    match kind {
                        0 => p[i] = byte,
                        1 => {
                            p.remove(i);
                        }
                        2 => p.insert(i, byte),
                        _ => p.truncate(i),
                    }
                }
                p
            })
    }

    pub fn packet_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            2 => proptest::collection::vec(any::<u8>(), 0..600),
            3 => query_strategy(),
            5 => mutated(),
        ]
    }

    pub fn snapshot() -> Snapshot {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut cfg = DaemonConfig::new(netcompose::project_name::ProjectName::new("p").unwrap());
        let mut front = NetworkView {
            names: vec!["front".into()],
            subnets: vec!["10.1.0.0/24".parse().unwrap()],
            ..Default::default()
        };
        front.records.insert("web".into(), vec![ip("10.1.0.100")]);
        let many: Vec<IpAddr> = (2..250).map(|i| ip(&format!("10.1.0.{i}"))).collect();
        front.records.insert("tasks.web".into(), many);
        front
            .records
            .insert("fz-web-1".into(), vec![ip("10.1.0.2"), ip("fd00::2")]);
        front.records.insert("www".into(), vec![ip("10.1.0.100")]);
        front
            .reverse
            .insert(ip("10.1.0.2"), vec!["fz-web-1".into()]);
        front.reverse.insert(ip("10.1.0.100"), vec!["web".into()]);
        cfg.networks.insert("front".into(), front);
        for (ns, ups) in [("fz-client-1", 1), ("fz-sealed-1", 0)] {
            cfg.namespaces.insert(
                ns.into(),
                NamespaceView {
                    service: "client".into(),
                    replica: 1,
                    networks: vec!["front".into()],
                    upstreams: (0..ups)
                        .map(|_| Upstream {
                            addr: "192.0.2.1:53".parse().unwrap(),
                            from_host: false,
                        })
                        .collect(),
                },
            );
        }
        Snapshot::compile(&cfg, 1)
    }

    /// What any reply must be: a DNS response to this query, within the transport's size.
    pub fn check_reply(query: &[u8], reply: &[u8], transport: Transport) -> Result<(), String> {
        if reply.len() < 12 {
            return Err(format!("a {}-byte reply", reply.len()));
        }
        if reply[..2] != query[..2] {
            return Err("the reply's ID is not the query's".into());
        }
        if reply[2] & 0x80 == 0 {
            return Err("QR is not set".into());
        }
        if transport == Transport::Udp && reply.len() > MAX_UDP {
            return Err(format!("a {}-byte UDP reply", reply.len()));
        }
        Message::from_vec(reply).map_err(|e| format!("the reply does not decode: {e}"))?;
        Ok(())
    }

    #[test]
    fn fuzz_request_handler() {
        let snap = snapshot();
        let deadline = Instant::now() + Duration::from_secs(seconds(5));
        let config = Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        };
        let (mut cases, mut replies, mut forwards, mut drops) = (0u64, 0u64, 0u64, 0u64);
        loop {
            let mut runner = TestRunner::new(config.clone());
            let counts = std::cell::Cell::new((0u64, 0u64, 0u64, 0u64));
            let result = runner.run(&packet_strategy(), |p| {
                let (mut c, mut r, mut f, mut d) = counts.get();
                c += 1;
                for (ns, t) in [
                    ("fz-client-1", Transport::Udp),
                    ("fz-sealed-1", Transport::Tcp),
                    ("fz-unknown", Transport::Udp),
                ] {
                    match handle(&snap, ns, &p, t) {
                        Outcome::Reply(bytes) => {
                            r += 1;
                            check_reply(&p, &bytes, t).map_err(TestCaseError::fail)?;
                        }
                        Outcome::Forward => {
                            f += 1;
                            prop_assert!(ns == "fz-client-1", "{ns} forwards without upstreams");
                            prop_assert!(p.len() >= 12 && p[2] & 0x80 == 0);
                        }
                        Outcome::Drop => {
                            d += 1;
                            prop_assert!(p.len() < 12 || p[2] & 0x80 != 0, "a query was dropped");
                        }
                    }
                }
                counts.set((c, r, f, d));
                Ok(())
            });
            let (c, r, f, d) = counts.get();
            cases += c;
            replies += r;
            forwards += f;
            drops += d;
            if let Err(e) = result {
                panic!("fuzz_request_handler: after {cases} cases: {e}");
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        eprintln!(
            "fuzz_request_handler: {cases} packets × 3 namespaces: {replies} replies, {forwards} forwards, {drops} drops; no panic, every reply valid"
        );
    }

    const LIVE: &str = r#"
name: fz
networks:
  front:
    ipam: {config: [{subnet: 10.76.1.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
  client:
    networks: [front]
"#;

    /// One UDP query for `web` (A) with a 1 s timeout: its answer count, or None.
    fn probe_udp(sock: &std::net::UdpSocket, id: u16) -> Option<u16> {
        let q = wire(id, 0x0100, &labels_of("web"), 1, 1, None);
        sock.send(&q).ok()?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let n = sock.recv(&mut buf).ok()?;
            if n >= 12 && buf[..2] == id.to_be_bytes() {
                return Some(u16::from_be_bytes([buf[6], buf[7]]));
            }
        }
        None
    }

    fn probe_tcp() -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(
            &"127.0.0.11:53".parse().unwrap(),
            Duration::from_secs(1),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let q = wire(7, 0x0100, &labels_of("web"), 1, 1, None);
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r).ok()?;
        Some(u16::from_be_bytes([r[6], r[7]]))
    }

    /// A TCP stream made of pieces: framed packets (sometimes with a wrong length), raw bytes,
    /// and an abrupt end; whatever comes back is read without waiting long.
    fn tcp_stream(pieces: &[(u8, Vec<u8>)]) -> usize {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect("127.0.0.11:53") else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        for (kind, p) in pieces {
            let bytes = match kind % 4 {
                0 | 1 => {
                    let mut b = (p.len() as u16).to_be_bytes().to_vec();
                    b.extend_from_slice(p);
                    b
                }
                2 => {
                    let mut b = ((p.len() as u16).wrapping_add(u16::from(*kind)))
                        .to_be_bytes()
                        .to_vec();
                    b.extend_from_slice(p);
                    b
                }
                _ => p.clone(),
            };
            if s.write_all(&bytes).is_err() {
                break;
            }
        }
        let mut got = 0;
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    }

    #[test]
    fn fuzz_live_daemon_with_udp_packets_and_tcp_streams() {
        crate::common::require_root("fuzz_live_daemon_with_udp_packets_and_tcp_streams");
        let lab = crate::lab::Lab::new("nc-dnsfuzz-");
        let f = lab.file("compose.yaml", LIVE);
        lab.nc_ok(&f, &["up"]);
        let pid = lab.daemon_pid("fz").expect("a daemon");
        let secs = seconds(5);
        let (cases, streams, probes) = lab.sb.enter(|| {
            use nix::sched::{setns, CloneFlags};
            let ns = std::fs::File::open("/run/netns/fz-client-1").expect("the client namespace");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("enter the client namespace");
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.connect("127.0.0.11:53").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(secs);
            let config = Config {
                cases: 500,
                failure_persistence: None,
                ..Config::default()
            };
            let strategy = (
                packet_strategy(),
                proptest::collection::vec((any::<u8>(), packet_strategy()), 0..6),
            );
            let (mut cases, mut streams, mut probes) = (0u64, 0u64, 0u64);
            loop {
                let mut runner = TestRunner::new(config.clone());
                let n = std::cell::Cell::new((0u64, 0u64, 0u64));
                let result = runner.run(&strategy, |(packet, pieces)| {
                    let (mut c, mut s, mut p) = n.get();
                    c += 1;
                    let _ = sock.send(&packet);
                    if !pieces.is_empty() {
                        s += 1;
                        tcp_stream(&pieces);
                    }
                    if c % 100 == 0 {
                        p += 1;
                        let got = probe_udp(&sock, 0xbeef);
                        prop_assert_eq!(got, Some(1), "the resolver stopped answering over UDP");
                    }
                    n.set((c, s, p));
                    Ok(())
                });
                let (c, s, p) = n.get();
                cases += c;
                streams += s;
                probes += p;
                if let Err(e) = result {
                    panic!("after {cases} packets: {e}");
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            assert_eq!(probe_udp(&sock, 0xcafe), Some(1));
            assert_eq!(
                probe_tcp(),
                Some(1),
                "the resolver stopped answering over TCP"
            );
            (cases, streams, probes)
        });
        assert_eq!(lab.daemon_pid("fz"), Some(pid));
        assert!(lab.alive(pid), "the daemon died");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("")
            .to_string();
        eprintln!(
            "fuzz_live_daemon: {cases} UDP packets, {streams} TCP streams, {probes} probes answered; daemon {rss}"
        );
        lab.nc_ok(&f, &["down"]);
    }
}
