//! Generated Compose documents: the structure is right, so that inputs reach decoding and the
//! semantic checks, and the values of the networking keys are random, often close to valid
//! (addresses drawn from a few small ranges collide, prefixes and ports straddle their limits).

use proptest::option::{of, weighted};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const SERVICES: &[&str] = &["s0", "s1", "s2", "s3"];
const NETWORKS: &[&str] = &["n0", "n1", "n2"];

fn junk() -> BoxedStrategy<String> {
    "[0-9a-fA-F:./\\[\\]x -]{0,20}".boxed()
}

fn ipv4() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0u8..3, 0u8..3, any::<u8>()).prop_map(|(b, c, d)| format!("10.{b}.{c}.{d}")),
        1 => any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
    ]
    .boxed()
}

fn ipv6() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0u16..3, any::<u16>()).prop_map(|(a, b)| format!("fd00:{a}::{b:x}")),
        1 => any::<u128>().prop_map(|v| std::net::Ipv6Addr::from(v).to_string()),
    ]
    .boxed()
}

fn address() -> BoxedStrategy<String> {
    prop_oneof![6 => ipv4(), 3 => ipv6(), 1 => junk()].boxed()
}

fn cidr() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (ipv4(), 8u8..=33).prop_map(|(a, p)| format!("{a}/{p}")),
        2 => (ipv6(), 48u8..=129).prop_map(|(a, p)| format!("{a}/{p}")),
        1 => ipv4(),
        1 => junk(),
    ]
    .boxed()
}

fn port() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (1u32..=65535).prop_map(|p| p.to_string()),
        1 => prop::sample::select(vec![0u32, 65535, 65536, 99999]).prop_map(|p| p.to_string()),
        1 => (1u32..70000, 0u32..4).prop_map(|(a, n)| format!("{a}-{}", a + n)),
        1 => (1u32..70000, 1u32..70000).prop_map(|(a, b)| format!("{a}-{b}")),
    ]
    .boxed()
}

fn service_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(SERVICES).prop_map(str::to_string),
        1 => "[a-z0-9_.-]{0,8}",
    ]
    .boxed()
}

fn network_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(NETWORKS).prop_map(str::to_string),
        1 => Just("default".to_string()),
        1 => "[a-z0-9_-]{0,6}",
    ]
    .boxed()
}

/// Short syntax `[IP:][PUBLISHED:]TARGET[/PROTO]`, or the long mapping.
fn port_entry() -> BoxedStrategy<Value> {
    let host_ip = prop_oneof![ipv4(), ipv6().prop_map(|a| format!("[{a}]")), junk()];
    let proto = prop::sample::select(vec!["", "/tcp", "/udp", "/sctp", "/icmp", "/TCP"]);
    let short = (of(host_ip), of(port()), port(), proto).prop_map(|(ip, published, target, p)| {
        let ip = ip.map(|i| format!("{i}:")).unwrap_or_default();
        let published = published.map(|x| format!("{x}:")).unwrap_or_default();
        json!(format!("{ip}{published}{target}{p}"))
    });
    let long = (
        port(),
        of(port()),
        of(address()),
        of(prop::sample::select(vec!["tcp", "udp", "icmp"])),
    )
        .prop_map(|(target, published, host_ip, protocol)| {
            let mut m = Map::new();
            m.insert("target".into(), json!(target));
            put(&mut m, "published", published.map(Value::from));
            put(&mut m, "host_ip", host_ip.map(Value::from));
            put(&mut m, "protocol", protocol.map(Value::from));
            Value::Object(m)
        });
    prop_oneof![
        4 => short,
        2 => long,
        1 => (1u32..70000).prop_map(|p| json!(p)),
        1 => junk().prop_map(Value::from),
    ]
    .boxed()
}

fn network_mode() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "none",
            "host",
            "bridge",
            "default",
            "service:",
            "container:"
        ])
        .prop_map(str::to_string),
        service_name().prop_map(|s| format!("service:{s}")),
        service_name().prop_map(|s| format!("container:fuzz-{s}-1")),
        junk(),
    ]
    .boxed()
}

fn policy_entry() -> BoxedStrategy<String> {
    let proto = prop::sample::select(vec!["", "/tcp", "/udp", "/icmp"]);
    prop_oneof![
        cidr(),
        service_name(),
        (service_name(), port(), proto.clone()).prop_map(|(s, p, x)| format!("{s}:{p}{x}")),
        (cidr(), port(), proto).prop_map(|(c, p, x)| format!("{c}:{p}{x}")),
        (ipv6(), port()).prop_map(|(a, p)| format!("[{a}/64]:{p}")),
        junk(),
    ]
    .boxed()
}

fn policy() -> BoxedStrategy<Value> {
    let list = || of(prop::collection::vec(policy_entry(), 0..4));
    let rules = (list(), list()).prop_map(|(allow, deny)| {
        let mut m = Map::new();
        put(&mut m, "allow", allow.map(Value::from));
        put(&mut m, "deny", deny.map(Value::from));
        Value::Object(m)
    });
    (of(rules.clone()), of(rules))
        .prop_map(|(ingress, egress)| {
            let mut m = Map::new();
            put(&mut m, "ingress", ingress);
            put(&mut m, "egress", egress);
            Value::Object(m)
        })
        .boxed()
}

/// A service's `networks`: a list of names, or a mapping with per-network settings.
fn attachments() -> BoxedStrategy<Value> {
    let settings = (
        of(address()),
        weighted(0.3, address()),
        weighted(0.3, "[a-z0-9:/ -]{0,18}"),
        weighted(0.2, prop::collection::vec("[a-z0-9.-]{0,8}", 0..3)),
    )
        .prop_map(|(v4, v6, ifname, aliases)| {
            let mut m = Map::new();
            put(&mut m, "ipv4_address", v4.map(Value::from));
            put(&mut m, "ipv6_address", v6.map(Value::from));
            put(&mut m, "interface_name", ifname.map(Value::from));
            put(&mut m, "aliases", aliases.map(Value::from));
            if m.is_empty() {
                Value::Null
            } else {
                Value::Object(m)
            }
        });
    prop_oneof![
        prop::collection::vec(network_name(), 0..3).prop_map(Value::from),
        prop::collection::vec((network_name(), settings), 0..3)
            .prop_map(|v| Value::Object(v.into_iter().collect())),
    ]
    .boxed()
}

fn deploy() -> BoxedStrategy<Value> {
    let replicas = prop_oneof![
        4 => (0i64..6).prop_map(Value::from),
        1 => (-2i64..300).prop_map(Value::from),
        1 => junk().prop_map(Value::from),
    ];
    let mode = prop::sample::select(vec!["vip", "dnsrr", "roundrobin"]);
    (of(replicas), weighted(0.3, mode))
        .prop_map(|(replicas, mode)| {
            let mut m = Map::new();
            put(&mut m, "replicas", replicas);
            put(&mut m, "endpoint_mode", mode.map(Value::from));
            Value::Object(m)
        })
        .boxed()
}

fn service() -> BoxedStrategy<Value> {
    (
        (
            of(prop::collection::vec(port_entry(), 0..4)),
            of(attachments()),
            weighted(0.2, network_mode()),
            weighted(0.4, prop::collection::vec(service_name(), 0..3)),
            weighted(0.5, deploy()),
            weighted(0.3, policy()),
        ),
        (
            weighted(0.2, "[a-zA-Z0-9._-]{0,12}"),
            weighted(0.2, prop::collection::vec(address(), 0..3)),
            weighted(0.2, prop::collection::vec(port(), 0..3)),
            weighted(0.1, "[a-z.]{1,12}"),
            weighted(0.1, "[0-9a-f:]{0,20}"),
        ),
    )
        .prop_map(
            |((ports, nets, mode, deps, deploy, policy), (host, dns, expose, sysctl, mac))| {
                let mut m = Map::new();
                m.insert("image".into(), json!("busybox"));
                put(&mut m, "ports", ports.map(Value::from));
                put(&mut m, "networks", nets);
                put(&mut m, "network_mode", mode.map(Value::from));
                put(&mut m, "depends_on", deps.map(Value::from));
                put(&mut m, "deploy", deploy);
                put(&mut m, "x-policy", policy);
                put(&mut m, "hostname", host.map(Value::from));
                put(&mut m, "dns", dns.map(Value::from));
                put(&mut m, "expose", expose.map(Value::from));
                put(&mut m, "sysctls", sysctl.map(|k| json!({ k: "1" })));
                put(&mut m, "mac_address", mac.map(Value::from));
                Value::Object(m)
            },
        )
        .boxed()
}

fn ipam_pool() -> BoxedStrategy<Value> {
    (
        of(cidr()),
        weighted(0.3, cidr()),
        weighted(0.4, address()),
        weighted(0.2, address()),
    )
        .prop_map(|(subnet, range, gateway, aux)| {
            let mut m = Map::new();
            put(&mut m, "subnet", subnet.map(Value::from));
            put(&mut m, "ip_range", range.map(Value::from));
            put(&mut m, "gateway", gateway.map(Value::from));
            put(&mut m, "aux_addresses", aux.map(|a| json!({ "host1": a })));
            Value::Object(m)
        })
        .boxed()
}

fn network() -> BoxedStrategy<Value> {
    let driver = prop::sample::select(vec!["bridge", "macvlan", "overlay", "ipvlan", "host", "x"]);
    let opts = prop::sample::select(vec![
        json!({"parent": "veth-fuzz0"}),
        json!({"parent": "a-very-long-interface-name"}),
        json!({"parent": "veth0", "macvlan_mode": "vepa"}),
        json!({"com.docker.network.driver.mtu": "9"}),
        json!({"encrypted": "true"}),
    ]);
    (
        weighted(0.5, driver),
        weighted(0.3, opts),
        weighted(0.2, any::<bool>()),
        weighted(0.2, any::<bool>()),
        weighted(0.1, any::<bool>()),
        of(prop::collection::vec(ipam_pool(), 0..3)),
        weighted(0.2, policy()),
    )
        .prop_map(|(driver, opts, internal, v6, external, pools, policy)| {
            let mut m = Map::new();
            put(&mut m, "driver", driver.map(Value::from));
            put(&mut m, "driver_opts", opts);
            put(&mut m, "internal", internal.map(Value::from));
            put(&mut m, "enable_ipv6", v6.map(Value::from));
            put(&mut m, "external", external.map(Value::from));
            put(&mut m, "ipam", pools.map(|p| json!({ "config": p })));
            put(&mut m, "x-policy", policy);
            Value::Object(m)
        })
        .boxed()
}

fn check() -> BoxedStrategy<Value> {
    (
        service_name(),
        prop_oneof![service_name(), address(), Just("host".to_string())],
        of(0u32..70000),
        of(prop::sample::select(vec!["tcp", "udp", "icmp", "sctp"])),
        of(prop::sample::select(vec!["reach", "blocked", "maybe"])),
    )
        .prop_map(|(from, to, port, protocol, expect)| {
            let mut m = Map::new();
            m.insert("from".into(), json!(from));
            m.insert("to".into(), json!(to));
            put(&mut m, "port", port.map(Value::from));
            put(&mut m, "protocol", protocol.map(Value::from));
            put(&mut m, "expect", expect.map(Value::from));
            Value::Object(m)
        })
        .boxed()
}

/// A whole document, written as block YAML (what people write) or as JSON (flow style).
pub fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(service(), 1..=SERVICES.len()),
        prop::collection::vec(network(), 0..=NETWORKS.len()),
        weighted(0.3, prop::collection::vec(check(), 0..3)),
        any::<bool>(),
    )
        .prop_map(|(services, networks, checks, as_json)| {
            let name = |names: &[&str], i: usize| names[i].to_string();
            let services: Map<_, _> = services
                .into_iter()
                .enumerate()
                .map(|(i, s)| (name(SERVICES, i), s))
                .collect();
            let networks: Map<_, _> = networks
                .into_iter()
                .enumerate()
                .map(|(i, n)| (name(NETWORKS, i), n))
                .collect();
            let mut doc = Map::new();
            doc.insert("services".into(), Value::Object(services));
            doc.insert("networks".into(), Value::Object(networks));
            put(&mut doc, "x-checks", checks.map(Value::from));
            let doc = Value::Object(doc);
            if as_json {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                serde_saphyr::to_string(&doc).unwrap()
            }
        })
}

fn put(m: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        m.insert(key.to_string(), v);
    }
}
