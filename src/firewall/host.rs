//! The project's host table: forwarding out of non-internal bridges with masquerade, no way
//! out of internal ones, nothing into a network from another network or project unless it
//! answers a connection that network started (or was published, DNAT), and `enable_icc`.

use super::host_table;
use super::rule::{rule, Chain, Rule};
use crate::model::resource::{Bridge, Firewall, Resource, Spec};

pub fn resources(project: &str, bridges: &[&Bridge]) -> Vec<Resource> {
    if bridges.is_empty() {
        return Vec::new();
    }
    let depends_on = bridges
        .iter()
        .map(|b| format!("network.{}", b.network))
        .collect();
    let chains = vec![forward(bridges), postrouting(bridges)];
    vec![Resource {
        address: "firewall.host".into(),
        spec: Spec::Firewall(Firewall {
            namespace: None,
            table: host_table(project),
            forwarding: bridges.iter().any(|b| b.masquerade),
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
    Chain {
        name: "forward".into(),
        chain_type: "filter".into(),
        hook: "forward".into(),
        priority: 0,
        rules,
    }
}

fn postrouting(bridges: &[&Bridge]) -> Chain {
    let rules = bridges
        .iter()
        .filter(|b| b.masquerade)
        .flat_map(|b| {
            b.subnets
                .iter()
                .map(move |s| rule().saddr(*s).not_oif(&b.name).masquerade())
        })
        .collect();
    Chain {
        name: "postrouting".into(),
        chain_type: "nat".into(),
        hook: "postrouting".into(),
        priority: 100,
        rules,
    }
}
