use super::*;

fn link(name: &str, alias: Option<&str>, rx: u64) -> LinkStats {
    LinkStats {
        index: 2,
        name: name.into(),
        alias: alias.map(str::to_string),
        up: true,
        rx_bytes: rx,
        tx_bytes: 2 * rx,
        ..LinkStats::default()
    }
}

#[test]
fn a_replica_counts_its_own_links_policy_drops_and_queries() {
    let links = [
        link("lo", Some("netcompose:demo:service.web[1]"), 5),
        link("eth10", Some("netcompose:demo:service.web[1].link.back"), 7),
        link(
            "eth2",
            Some("netcompose:demo:service.web[1].link.front"),
            100,
        ),
        link("eth3", Some("netcompose:other:service.web[1].link.x"), 1),
        link("dummy0", None, 1),
    ];
    let counter = |chain: &str, packets| RuleCounter {
        chain: chain.into(),
        tag: "nc:1".into(),
        packets,
        bytes: packets * 60,
    };
    let counters = [
        counter("ingress", 3),
        counter("egress", 1),
        counter("ingress", 2),
    ];
    let dns = DnsCounts {
        answered: 4,
        forwarded: 1,
    };
    let r = replica_sample("demo", ("web", 1, "demo-web-1"), &links, &counters, dns);
    let nets: Vec<(&str, &str, u64)> = r
        .links
        .iter()
        .map(|l| (l.ifname.as_str(), l.network.as_str(), l.rx_bytes))
        .collect();
    assert_eq!(nets, [("eth2", "front", 100), ("eth10", "back", 7)]);
    assert_eq!(r.links[0].tx_bytes, 200);
    assert_eq!(
        r.policy,
        [
            PolicyDrops {
                direction: "egress".into(),
                packets: 1,
                bytes: 60
            },
            PolicyDrops {
                direction: "ingress".into(),
                packets: 5,
                bytes: 300
            },
        ]
    );
    assert_eq!(r.dns, dns);
}

#[test]
fn vip_connections_are_counted_per_backend_by_reply_source() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let vip = Vip {
        service: "web".into(),
        network: "front".into(),
        addresses: vec![ip("10.0.0.100")],
        backends: vec![ip("10.0.0.2"), ip("10.0.0.3")],
    };
    let t = |dst: &str, src: &str| Tracked {
        protocol: 6,
        orig_dst: ip(dst),
        reply_src: ip(src),
    };
    let tracked = [
        t("10.0.0.100", "10.0.0.2"),
        t("10.0.0.100", "10.0.0.2"),
        t("10.0.0.100", "10.0.0.9"),
        t("10.0.0.2", "10.0.0.2"),
        t("8.8.8.8", "8.8.8.8"),
    ];
    let v = vip_connections(&[vip], &tracked);
    assert_eq!(v.len(), 1);
    let counts: Vec<(IpAddr, u64)> = v[0]
        .backends
        .iter()
        .map(|b| (b.backend, b.connections))
        .collect();
    assert_eq!(
        counts,
        [
            (ip("10.0.0.2"), 2),
            (ip("10.0.0.3"), 0),
            (ip("10.0.0.9"), 1)
        ]
    );
}

#[test]
fn rates_need_two_readings_of_a_counter_that_went_up() {
    assert_eq!(rate(1000, 3000, 2000), Some(1000.0));
    assert_eq!(rate(1000, 3000, 0), None);
    assert_eq!(rate(3000, 1000, 1000), None);
}

#[test]
fn a_scrape_has_help_type_and_escaped_labels() {
    let sample = Sample {
        taken_ms: 1,
        replicas: vec![ReplicaStats {
            service: "w\"eb".into(),
            replica: 1,
            namespace: "demo-web-1".into(),
            links: vec![LinkCounters {
                network: "front".into(),
                ifname: "eth0".into(),
                up: true,
                rx_bytes: 10,
                tx_bytes: 20,
                ..LinkCounters::default()
            }],
            policy: vec![],
            dns: DnsCounts {
                answered: 3,
                forwarded: 0,
            },
        }],
        vips: vec![],
        errors: vec![],
    };
    let text = prometheus::render("demo", &sample);
    assert!(text.contains("# TYPE netcompose_link_transmit_bytes_total counter\n"));
    assert!(text.contains(
        "netcompose_link_transmit_bytes_total{project=\"demo\",service=\"w\\\"eb\",replica=\"1\",network=\"front\"} 20\n"
    ));
    assert!(text.contains("result=\"answered\"} 3\n"), "{text}");
    assert!(text.contains("# HELP netcompose_vip_connections "));
}
