//! The project's host table: forwarding out of non-internal bridges with masquerade, no way
//! out of internal ones, nothing into a network from another network or project unless it
//! answers a connection that network started or was published (DNAT), `enable_icc`; published
//! ports of both families (from outside, from the host and from 127.0.0.1; [::1] is the
//! daemon's) and the host's way to every VIP.

use super::vip::{vip_chains, vip_maps, Dispatch};
use crate::firewall::host_table;
use crate::firewall::rule::{rule, Chain, Rule, RuleBuilder, Verdict};
use crate::model::resource::{Bridge, Firewall, Publish, Resource, ResourceId, Spec};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

pub fn resources(
    project: &str,
    bridges: &[&Bridge],
    dispatch: &Dispatch,
    publish: &[Publish],
) -> Vec<Resource> {
    if bridges.is_empty() {
        return Vec::new();
    }
    let depends_on = bridges
        .iter()
        .map(|b| ResourceId::network(&b.network))
        .collect();
    let mut chains = vec![forward(bridges), postrouting(bridges, publish)];
    let published: Vec<Rule> = publish.iter().flat_map(publish_rules).collect();
    if !published.is_empty() {
        chains.push(Chain::base(
            "prerouting",
            "nat",
            "prerouting",
            -100,
            published.clone(),
        ));
    }
    let mut output = published;
    output.extend(dispatch.rules());
    if !output.is_empty() {
        chains.push(Chain::base("output", "nat", "output", -100, output));
    }
    chains.extend(vip_chains(dispatch));
    let mut sysctls = BTreeMap::new();
    if bridges.iter().any(|b| b.masquerade) {
        // Masqueraded networks need the host to route; Docker turns on the same switch.
        sysctls.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
    }
    let meshed = |v6: bool| {
        publish
            .iter()
            .any(|p| p.remote.first().is_some_and(|ip| ip.is_ipv6() == v6))
    };
    if meshed(false) {
        // A cluster's published port sends connections on to other hosts.
        sysctls.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
    }
    let routes_v6 = meshed(true)
        || bridges.iter().any(|b| {
            b.subnets.iter().any(|s| s.is_ipv6())
                && (b.masquerade || publish.iter().any(|p| p.bridge == b.name))
        });
    if routes_v6 {
        // The same for IPv6 (out of the network, and into it from published ports), as Docker
        // sets it for its IPv6 networks.
        sysctls.insert("net.ipv6.conf.all.forwarding".to_string(), "1".to_string());
    }
    for b in bridges
        .iter()
        .filter(|b| publish.iter().any(|p| p.bridge == b.name))
    {
        // Lets a connection to 127.0.0.1:PORT be DNATed onto the bridge (then masqueraded).
        sysctls.insert(
            format!("net.ipv4.conf.{}.route_localnet", b.name),
            "1".to_string(),
        );
    }
    vec![Resource {
        address: ResourceId::HostFirewall,
        spec: Spec::Firewall(Box::new(Firewall {
            namespace: None,
            table: host_table(project),
            sysctls,
            vip_networks: vec![],
            vip_digest: String::new(),
            vip_refused: Default::default(),
            chains: chains.into(),
            maps: vip_maps(dispatch).into(),
            sets: Default::default(),
            foreign_rules: vec![],
        })),
        depends_on,
    }]
}

/// Inbound rules of every bridge first, then outbound ones: a packet crossing from network A to
/// network B meets B's "nothing in" rule before A's "anything out" one.
fn forward(bridges: &[&Bridge]) -> Chain {
    let mut rules: Vec<Rule> = Vec::new();
    for b in bridges {
        let within = rule().iif(&b.name).oif(&b.name);
        rules.push(if b.icc {
            within.accept()
        } else {
            within.drop()
        });
        rules.push(rule().oif(&b.name).established().accept());
        rules.push(rule().oif(&b.name).dnat_ed().accept());
        rules.push(rule().oif(&b.name).drop());
    }
    for b in bridges {
        rules.push(if b.internal {
            rule().iif(&b.name).drop()
        } else {
            rule().iif(&b.name).accept()
        });
    }
    Chain::base("forward", "filter", "forward", 0, rules)
}

fn postrouting(bridges: &[&Bridge], publish: &[Publish]) -> Chain {
    let mut rules = Vec::new();
    for b in bridges.iter().filter(|b| b.masquerade) {
        for s in &b.subnets {
            rules.push(rule().saddr(*s).not_oif(&b.name).masquerade());
        }
    }
    for b in bridges
        .iter()
        .filter(|b| publish.iter().any(|p| p.bridge == b.name))
    {
        // 127.0.0.1 cannot leave the host as a source, and a replica reaching its own
        // published port through the host must get the answer back through the host too.
        if let Some(lo) = LOOPBACK {
            rules.push(rule().saddr(lo.into()).oif(&b.name).masquerade());
        }
        let published_family = |s: &&ipnetwork::IpNetwork| {
            publish.iter().any(|p| {
                p.bridge == b.name
                    && p.backends
                        .first()
                        .is_some_and(|ip| ip.is_ipv4() == s.is_ipv4())
            })
        };
        for s in b.subnets.iter().filter(published_family) {
            rules.push(rule().saddr(*s).oif(&b.name).dnat_ed().masquerade());
        }
    }
    for p in publish.iter().filter(|p| !p.remote.is_empty()) {
        // A connection sent on to another host's publication leaves from this host's own
        // address, so that the answer comes back through here to be translated back.
        let mut hosts: Vec<ipnetwork::IpNetwork> = p
            .remote
            .iter()
            .map(|ip| ipnetwork::IpNetwork::from(*ip))
            .collect();
        hosts.sort();
        hosts.dedup();
        rules.push(
            rule()
                .daddr_in(hosts)
                .dport(&p.protocol.to_string(), p.published.start, p.published.end)
                .dnat_ed()
                .masquerade(),
        );
    }
    Chain::base("postrouting", "nat", "postrouting", 100, rules)
}

/// 127.0.0.0/8 (built at compile time: the prefix is valid).
const LOOPBACK: Option<ipnetwork::Ipv4Network> =
    ipnetwork::Ipv4Network::new_checked(std::net::Ipv4Addr::new(127, 0, 0, 0), 8);

/// What a publication's packets are addressed to: its host address, else any local address
/// of its family. An IPv6 publication leaves out ::1: a DNATed packet from ::1 cannot leave
/// the host (IPv6 has no route_localnet), so the daemon relays [::1] instead
/// ([`crate::model::relay`]).
fn publish_match(p: &Publish) -> RuleBuilder {
    let base = match p.host_ip.filter(|i| !i.is_unspecified()) {
        Some(ip) => rule().daddr(ipnetwork::IpNetwork::from(ip)),
        None if p.backends.first().is_some_and(IpAddr::is_ipv6) => {
            rule().not_daddr(ipnetwork::IpNetwork::from(IpAddr::V6(Ipv6Addr::LOCALHOST)))
        }
        // IPv4 as before: in an inet table `dnat ip to` leaves IPv6 packets alone, so the two
        // families' rules of one port sit side by side.
        None => rule(),
    };
    base.local_daddr()
}

/// One publication: traffic to a local address on the host port goes to a random replica.
/// On a cluster ([`Publish::remote`]), a connection from another host is served by a local
/// replica; any other goes to a local replica with the local replicas' share of chance, else
/// to the publication of another host that runs one (one entry per remote replica).
fn publish_rules(p: &Publish) -> Vec<Rule> {
    if p.host_ip.is_some_and(|ip| ip.is_loopback() && ip.is_ipv6()) {
        return Vec::new();
    }
    let proto = p.protocol.to_string();
    // Same numbers on both sides: one rule for the whole range, the port kept.
    let ports: Vec<(u16, u16, Option<u16>)> = if p.published == p.target {
        vec![(p.published.start, p.published.end, None)]
    } else {
        (0..p.published.len())
            .map(|i| {
                let host_port = p.published.start + i as u16;
                let target = if p.target.start == p.target.end {
                    p.target.start
                } else {
                    p.target.start + i as u16
                };
                (host_port, host_port, Some(target))
            })
            .collect()
    };
    let local = |port| Verdict::DnatRandom {
        backends: p.backends.clone(),
        port,
    };
    let mut out = Vec::new();
    for (start, end, target) in ports {
        let base = || publish_match(p).dport(&proto, start, end);
        if p.remote.is_empty() {
            out.push(base().then(local(target)));
            continue;
        }
        let peers = p
            .peers
            .iter()
            .map(|ip| ipnetwork::IpNetwork::from(*ip))
            .collect();
        out.push(base().saddr_in(peers).then(local(target)));
        out.push(base().chance(local_share(p)).then(local(target)));
        // The other host publishes the same port: the connection keeps it.
        out.push(base().then(Verdict::DnatRandom {
            backends: p.remote.clone(),
            port: target.map(|_| start),
        }));
    }
    out
}

/// The local replicas' percentage of a cluster publication's new connections (at least 1
/// and at most 99: both sides have replicas).
fn local_share(p: &Publish) -> u8 {
    let (local, all) = (p.backends.len(), p.backends.len() + p.remote.len());
    ((local * 100 + all / 2) / all.max(1)).clamp(1, 99) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PortRange, Protocol};

    fn publish(host_ip: Option<&str>, backend: &str) -> Publish {
        Publish {
            service: "web".into(),
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|i| i.parse().unwrap()),
            published: PortRange {
                start: 8080,
                end: 8080,
            },
            target: PortRange { start: 80, end: 80 },
            backends: vec![backend.parse().unwrap()],
            bridge: "br".into(),
            remote: vec![],
            peers: vec![],
        }
    }

    fn text(p: &Publish) -> Vec<String> {
        publish_rules(p).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ipv6_publications_leave_loopback_to_the_relay() {
        assert_eq!(
            text(&publish(None, "fd00::2")),
            vec!["ip6 daddr != ::1/128 fib daddr type local meta l4proto tcp th dport 8080 dnat ip6 to numgen random mod 1 map { 0 : fd00::2 } : 80"]
        );
        assert_eq!(
            text(&publish(Some("::"), "fd00::2")),
            text(&publish(None, "fd00::2"))
        );
        assert!(text(&publish(Some("::1"), "fd00::2")).is_empty());
        assert_eq!(
            text(&publish(Some("fd00:1::5"), "fd00::2")),
            vec!["ip6 daddr fd00:1::5/128 fib daddr type local meta l4proto tcp th dport 8080 dnat ip6 to numgen random mod 1 map { 0 : fd00::2 } : 80"]
        );
    }

    #[test]
    fn a_cluster_publication_serves_peers_locally_and_shares_the_rest() {
        let mut p = publish(None, "10.0.0.2");
        p.remote = vec!["10.231.0.2".parse().unwrap(), "10.231.0.2".parse().unwrap()];
        p.peers = vec!["10.231.0.2".parse().unwrap(), "10.231.0.3".parse().unwrap()];
        assert_eq!(
            text(&p),
            vec![
                "fib daddr type local meta l4proto tcp th dport 8080 ip saddr { 10.231.0.2/32, 10.231.0.3/32 } dnat ip to numgen random mod 1 map { 0 : 10.0.0.2 } : 80",
                "fib daddr type local meta l4proto tcp th dport 8080 numgen random mod 100 < 33 dnat ip to numgen random mod 1 map { 0 : 10.0.0.2 } : 80",
                "fib daddr type local meta l4proto tcp th dport 8080 dnat ip to numgen random mod 2 map { 0 : 10.231.0.2, 1 : 10.231.0.2 } : 8080",
            ]
        );
        let post: Vec<String> = postrouting(&[], &[p])
            .rules
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            post,
            vec!["ip daddr { 10.231.0.2/32 } meta l4proto tcp th dport 8080 ct status dnat masquerade"]
        );
    }

    #[test]
    fn ipv4_publications_read_as_before() {
        assert_eq!(
            text(&publish(None, "10.0.0.2")),
            vec!["fib daddr type local meta l4proto tcp th dport 8080 dnat ip to numgen random mod 1 map { 0 : 10.0.0.2 } : 80"]
        );
    }
}
