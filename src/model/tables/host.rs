//! The project's host table: forwarding out of non-internal bridges with masquerade, no way
//! out of internal ones, nothing into a network from another network or project unless it
//! answers a connection that network started or was published (DNAT), `enable_icc`; published
//! ports (from outside, from the host and from 127.0.0.1) and the host's way to every VIP.

use super::vip::{vip_chains, Dispatch};
use crate::firewall::host_table;
use crate::firewall::rule::{rule, Chain, Rule, Verdict};
use crate::model::resource::{Bridge, Firewall, Publish, Resource, ResourceId, Spec};
use std::collections::BTreeMap;

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
        spec: Spec::Firewall(Firewall {
            namespace: None,
            table: host_table(project),
            sysctls,
            vip_networks: vec![],
            vip_digest: String::new(),
            chains,
            foreign_rules: vec![],
        }),
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
        for s in b.subnets.iter().filter(|s| s.is_ipv4()) {
            rules.push(rule().saddr(*s).oif(&b.name).dnat_ed().masquerade());
        }
    }
    Chain::base("postrouting", "nat", "postrouting", 100, rules)
}

/// 127.0.0.0/8 (built at compile time: the prefix is valid).
const LOOPBACK: Option<ipnetwork::Ipv4Network> =
    ipnetwork::Ipv4Network::new_checked(std::net::Ipv4Addr::new(127, 0, 0, 0), 8);

/// One publication: traffic to a local address on the host port goes to a random replica.
fn publish_rules(p: &Publish) -> Vec<Rule> {
    let proto = p.protocol.to_string();
    let mut base = rule();
    if let Some(ip) = p.host_ip.filter(|i| !i.is_unspecified()) {
        base = base.daddr(ipnetwork::IpNetwork::from(ip));
    }
    let base = base.local_daddr();
    // Same numbers on both sides: one rule for the whole range, the port kept.
    if p.published == p.target {
        return vec![base.dport(&proto, p.published.start, p.published.end).then(
            Verdict::DnatRandom {
                backends: p.backends.clone(),
                port: None,
            },
        )];
    }
    (0..p.published.len())
        .map(|i| {
            let host_port = p.published.start + i as u16;
            let target = if p.target.start == p.target.end {
                p.target.start
            } else {
                p.target.start + i as u16
            };
            let mut r = rule();
            r = match p.host_ip.filter(|i| !i.is_unspecified()) {
                Some(ip) => r.daddr(ipnetwork::IpNetwork::from(ip)),
                None => r,
            };
            r.local_daddr()
                .dport(&proto, host_port, host_port)
                .then(Verdict::DnatRandom {
                    backends: p.backends.clone(),
                    port: Some(target),
                })
        })
        .collect()
}
