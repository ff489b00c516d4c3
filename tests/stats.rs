//! `netcompose stats` and the metrics with real packets (issue 12): the bytes a replica sent,
//! the connections each VIP backend holds, the packets a policy dropped and the DNS queries
//! answered, read back by `stats --json`, and the same figures in Prometheus scrapes of the
//! daemon's unix socket and of the `x-metrics` TCP address, parsed with a real parser.

mod common;

use common::Servers;

use common::project::Project;
use common::sandbox::{require_root, Sandbox};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = r#"
x-metrics: {listen: "127.0.0.1:9911"}
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
    x-policy:
      ingress:
        deny: ["0.0.0.0/0:9999/udp"]
  client:
    networks: [front]
networks:
  front: {}
"#;

fn stats(p: &Project) -> Value {
    serde_json::from_str(&p.nc_ok(&["stats", "--json", "--interval", "0"])).expect("stats --json")
}

fn replica<'v>(s: &'v Value, service: &str, n: u32) -> &'v Value {
    s["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["service"] == service && r["replica"] == n)
        .unwrap_or_else(|| panic!("no {service}-{n} in {s}"))
}

fn link_tx(s: &Value, service: &str, n: u32) -> u64 {
    replica(s, service, n)["links"][0]["tx_bytes"]
        .as_u64()
        .expect("tx_bytes")
}

fn dropped(s: &Value, service: &str, n: u32, direction: &str) -> u64 {
    replica(s, service, n)["policy"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["direction"] == direction)
        .and_then(|p| p["packets"].as_u64())
        .unwrap_or(0)
}

fn answered(s: &Value, service: &str, n: u32) -> u64 {
    replica(s, service, n)["dns"]["answered"]
        .as_u64()
        .expect("answered")
}

/// Connections of the VIP summed over its backends.
fn vip_connections(s: &Value) -> u64 {
    s["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["backends"].as_array().into_iter().flatten())
        .filter_map(|b| b["connections"].as_u64())
        .sum()
}

/// Run python code in a replica's namespace.
fn python(p: &Project, service: &str, n: u32, code: &str) {
    let ns = p.ns(service, n);
    p.sb.run_ok(&["ip", "netns", "exec", &ns, "python3", "-c", code]);
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("a Prometheus scrape parses")
}

fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is neither a counter nor a gauge"),
        })
        .collect();
    assert!(!found.is_empty(), "no {metric} {labels:?}");
    found.iter().sum()
}

#[test]
fn stats_count_what_real_packets_did_and_metrics_say_the_same() {
    require_root("stats_count_what_real_packets_did_and_metrics_say_the_same");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "ncstats", LAB);
    p.up();
    let web1 = p.addr("web", 1, "front");
    let vip = p.vip("web", "front");

    // Bytes: 1000 UDP datagrams of 1000 bytes, 1042 bytes each on the wire (Ethernet 14,
    // IPv4 20, UDP 8).
    let before = stats(&p);
    python(
        &p,
        "client",
        1,
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for _ in range(1000): s.sendto(b'x'*1000,('{web1}',7777))"
        ),
    );
    let after = stats(&p);
    let sent = (link_tx(&after, "client", 1) - link_tx(&before, "client", 1)) as f64;
    let wire = 1000.0 * 1042.0;
    assert!(
        (sent - wire).abs() <= 0.05 * wire,
        "stats counted {sent} bytes sent, the test sent {wire}"
    );

    // Policy: 10 datagrams to the denied port, each dropped by web-1's ingress chain.
    python(
        &p,
        "client",
        1,
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for _ in range(10): s.sendto(b'x',('{web1}',9999))"
        ),
    );
    let s = stats(&p);
    assert_eq!(
        dropped(&s, "web", 1, "ingress") - dropped(&before, "web", 1, "ingress"),
        10
    );

    // DNS: 5 queries from client-1, each answered by the embedded resolver.
    for _ in 0..5 {
        let ns = p.ns("client", 1);
        p.sb.run_ok(&[
            "ip", "netns", "exec", &ns, "dig", "+short", "+tries=1", "web",
        ]);
    }
    let s = stats(&p);
    assert_eq!(
        answered(&s, "client", 1) - answered(&before, "client", 1),
        5
    );

    // VIP: 6 connections held open from client-1, spread by the DNAT over web-1 and web-2.
    let _servers = Servers((1..=2).map(|n| p.serve("web", n, 80)).collect());
    p.wait_open(Some(("client", 1)), &vip, 80);
    let base = vip_connections(&stats(&p));
    let ns = p.ns("client", 1);
    let hold = format!(
        "import socket,time\ncs=[socket.create_connection(('{vip}',80)) for _ in range(6)]\n\
         [c.recv(100) for c in cs]\nprint('held',flush=True)\ntime.sleep(120)"
    );
    let mut holder = sb.spawn(&["ip", "netns", "exec", &ns, "python3", "-c", &hold]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("holder's stdout")),
        &mut line,
    )
    .expect("holder says held");
    let _holder = Servers(vec![holder]);
    assert_eq!(line.trim(), "held");
    let s = stats(&p);
    assert_eq!(vip_connections(&s) - base, 6, "{}", s["vips"]);

    // Metrics: the unix socket and the TCP listener, parsed, hold the same figures.
    let sock = format!("/run/netcompose/{}/control.sock", p.name);
    let reply = sb.run_ok(&[
        "sh",
        "-c",
        &format!("echo '{{\"op\":\"metrics\"}}' | socat -t 30 - UNIX-CONNECT:{sock}"),
    ]);
    let reply: Value = serde_json::from_str(&reply).expect("a JSON reply");
    let unix = scrape(reply["metrics"].as_str().expect("metrics text"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        let out = sb.run(&["curl", "-sf", "http://127.0.0.1:9911/metrics"]);
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let tcp = scrape(&tcp);
    let s = stats(&p);
    for m in [&unix, &tcp] {
        let client = [("service", "client"), ("replica", "1")];
        assert_eq!(
            value(
                m,
                "netcompose_dns_queries_total",
                &[client[0], client[1], ("result", "answered")]
            ),
            answered(&s, "client", 1) as f64
        );
        assert_eq!(
            value(
                m,
                "netcompose_policy_dropped_packets_total",
                &[
                    ("service", "web"),
                    ("replica", "1"),
                    ("direction", "ingress")
                ]
            ),
            dropped(&s, "web", 1, "ingress") as f64
        );
        assert_eq!(
            value(m, "netcompose_vip_connections", &[("service", "web")]),
            vip_connections(&s) as f64
        );
        let tx = value(
            m,
            "netcompose_link_transmit_bytes_total",
            &[client[0], client[1], ("network", "front")],
        );
        let json_tx = link_tx(&s, "client", 1) as f64;
        assert!(
            (tx - json_tx).abs() <= 0.05 * json_tx,
            "scrape {tx} vs stats {json_tx}"
        );
        assert!(m.docs.contains_key("netcompose_link_transmit_bytes_total"));
    }
}

#[test]
fn a_public_metrics_address_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        "name: ncpub\nx-metrics:\n  listen: \"0.0.0.0:9911\"\nservices:\n  a: {}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .args(["-f", file.to_str().unwrap(), "validate"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("loopback or private"), "{err}");
    assert!(err.contains("compose.yaml:3:"), "{err}");
}

/// Hold `n` connections to `vip`:80 from client-1 until the returned guard drops.
fn hold(p: &Project, vip: &str, n: usize) -> Servers {
    let ns = p.ns("client", 1);
    let code = format!(
        "import socket,time\ncs=[socket.create_connection(('{vip}',80)) for _ in range({n})]\n\
         [c.recv(100) for c in cs]\nprint('held',flush=True)\ntime.sleep(120)"
    );
    let mut holder =
        p.sb.spawn(&["ip", "netns", "exec", &ns, "python3", "-c", &code]);
    let out = holder.stdout.take().expect("holder's stdout");
    let guard = Servers(vec![holder]);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .expect("holder says held");
    assert_eq!(line.trim(), "held");
    guard
}

/// Forget every connection client-1's namespace tracks (IPCTNL_MSG_CT_DELETE without a tuple:
/// a flush), as `conntrack -F` does; the sockets stay open.
fn flush_conntrack(p: &Project) {
    python(
        p,
        "client",
        1,
        "import socket,struct\ns=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,12)\n\
         s.bind((0,0))\n\
         s.send(struct.pack('=IHHII',20,(1<<8)|2,1|4,1,0)+struct.pack('=BBH',2,0,0))\n\
         err=struct.unpack_from('=i',s.recv(4096),16)[0]\nassert err==0,err",
    );
}

/// The daemon follows conntrack by events and dumps only when the namespace's count disagrees:
/// connections made before its first sample (which report no end), then while it listens, then
/// all of them forgotten at once, are each counted right.
#[test]
fn vip_connections_follow_the_conntrack_table_as_it_changes() {
    require_root("vip_connections_follow_the_conntrack_table_as_it_changes");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "ncstatsct", LAB);
    p.up();
    let vip = p.vip("web", "front");
    let _servers = Servers((1..=2).map(|n| p.serve("web", n, 80)).collect());
    p.wait_open(Some(("client", 1)), &vip, 80);
    flush_conntrack(&p);

    let _early = hold(&p, &vip, 3);
    let s = stats(&p);
    assert_eq!(vip_connections(&s), 3, "{}", s["vips"]);

    let _later = hold(&p, &vip, 2);
    let s = stats(&p);
    assert_eq!(vip_connections(&s), 5, "{}", s["vips"]);

    flush_conntrack(&p);
    let s = stats(&p);
    assert_eq!(vip_connections(&s), 0, "{}", s["vips"]);

    let _last = hold(&p, &vip, 1);
    let s = stats(&p);
    assert_eq!(vip_connections(&s), 1, "{}", s["vips"]);
}
