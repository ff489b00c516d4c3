//! Each replica's own table, in its namespace: the VIP dispatch for every service it shares a
//! network with, and its `x-policy` (the service's, and each attached network's on that
//! network's interface). Enforced where the packets start and end, so a policy holds whatever
//! path a packet takes.

use super::rule::{rule, Chain, Rule, RuleBuilder};
use super::vip::{vip_chains, Dispatch};
use crate::model::endpoints::{Endpoint, Replica, Stack};
use crate::model::resource::{Firewall, Resource, Spec, Vip};
use crate::spec::{Peer, PolicyEntry, Project, Rules, Spanned};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;

/// The name of the table inside every replica namespace.
pub const REPLICA_TABLE: &str = "netcompose";

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

pub fn resources(
    project: &Project,
    replicas: &[Replica],
    eps: &[Endpoint],
    vips: &[&Vip],
) -> Vec<Resource> {
    replicas
        .iter()
        .filter(|r| r.stack == Stack::Own)
        .filter_map(|rep| {
            let mine: Vec<&Endpoint> = eps
                .iter()
                .filter(|e| e.service == rep.service && e.index == rep.index)
                .collect();
            let dispatch = Dispatch::new(
                vips.iter()
                    .copied()
                    .filter(|v| mine.iter().any(|e| e.network == v.network)),
            );
            let mut chains = Vec::new();
            if let Some(r) = dispatch.rule() {
                chains.push(Chain::base("vip", "nat", "output", -100, vec![r]));
                chains.extend(vip_chains(&dispatch));
            }
            for (dir, name, hook) in [
                (Direction::Ingress, "ingress", "input"),
                (Direction::Egress, "egress", "output"),
            ] {
                let rules = policy_rules(project, rep, &mine, eps, vips, dir);
                if !rules.is_empty() {
                    chains.push(Chain::base(name, "filter", hook, 0, rules));
                }
            }
            if chains.is_empty() {
                return None;
            }
            let ns = rep.netns.clone().unwrap_or_default();
            Some(Resource {
                address: format!("{}.firewall", rep.address()),
                spec: Spec::Firewall(Firewall {
                    namespace: Some(ns),
                    table: REPLICA_TABLE.into(),
                    sysctls: BTreeMap::new(),
                    chains,
                    foreign_rules: vec![],
                }),
                depends_on: mine
                    .iter()
                    .map(|e| format!("{}.link.{}", rep.address(), e.network))
                    .chain([rep.address()])
                    .collect(),
            })
        })
        .collect()
}

/// The service's policy, then each attached network's (limited to its interface). Denies
/// first, then allows, then catch-all denies (`0.0.0.0/0`, `::/0`), which act as the default:
/// deny wins over allow for the same match, and `deny: [0.0.0.0/0]` with allows is default-deny.
fn policy_rules(
    project: &Project,
    rep: &Replica,
    mine: &[&Endpoint],
    eps: &[Endpoint],
    vips: &[&Vip],
    dir: Direction,
) -> Vec<Rule> {
    let svc = &project.services[&rep.service];
    let mut scoped: Vec<(Option<&str>, &Rules)> = Vec::new();
    if let Some(p) = &svc.policy {
        scoped.push((
            None,
            if dir == Direction::Ingress {
                &p.ingress
            } else {
                &p.egress
            },
        ));
    }
    for e in mine {
        if let Some(p) = project
            .networks
            .get(&e.network)
            .and_then(|n| n.policy.as_ref())
        {
            scoped.push((
                Some(e.ifname.as_str()),
                if dir == Direction::Ingress {
                    &p.ingress
                } else {
                    &p.egress
                },
            ));
        }
    }
    if scoped.iter().all(|(_, r)| r.is_empty()) {
        return Vec::new();
    }
    let lo = if dir == Direction::Ingress {
        rule().iif("lo")
    } else {
        rule().oif("lo")
    };
    let mut out = vec![rule().established().accept(), lo.accept()];
    let catch_all = |e: &Spanned<PolicyEntry>| {
        matches!(e.value.peer, Peer::Cidr(c) if c.prefix() == 0) && e.value.port.is_none()
    };
    for (iface, rules) in &scoped {
        for e in rules.deny.iter().filter(|e| !catch_all(e)) {
            out.extend(
                entry(eps, vips, *iface, &e.value, dir)
                    .into_iter()
                    .map(RuleBuilder::drop),
            );
        }
    }
    for (iface, rules) in &scoped {
        for e in &rules.allow {
            out.extend(
                entry(eps, vips, *iface, &e.value, dir)
                    .into_iter()
                    .map(RuleBuilder::accept),
            );
        }
    }
    for (iface, rules) in &scoped {
        for e in rules.deny.iter().filter(|e| catch_all(e)) {
            out.extend(
                entry(eps, vips, *iface, &e.value, dir)
                    .into_iter()
                    .map(RuleBuilder::drop),
            );
        }
    }
    out
}

/// The matches of one policy entry: one rule per address family of the peer.
fn entry(
    eps: &[Endpoint],
    vips: &[&Vip],
    iface: Option<&str>,
    e: &PolicyEntry,
    dir: Direction,
) -> Vec<RuleBuilder> {
    let peers: Vec<IpNetwork> = match &e.peer {
        Peer::Cidr(c) => vec![*c],
        Peer::Service(s) => {
            let mut v: Vec<IpNetwork> = eps
                .iter()
                .filter(|x| &x.service == s)
                .flat_map(|x| x.ips())
                .map(IpNetwork::from)
                .collect();
            if dir == Direction::Egress {
                v.extend(
                    vips.iter()
                        .filter(|x| &x.service == s)
                        .map(|x| IpNetwork::from(x.address)),
                );
            }
            v
        }
    };
    let (v4, v6): (Vec<IpNetwork>, Vec<IpNetwork>) = peers.into_iter().partition(|p| p.is_ipv4());
    [v4, v6]
        .into_iter()
        .filter(|set| !set.is_empty())
        .map(|set| {
            let mut r = rule();
            if let Some(i) = iface {
                r = if dir == Direction::Ingress {
                    r.iif(i)
                } else {
                    r.oif(i)
                };
            }
            r = if dir == Direction::Ingress {
                r.saddr_in(set)
            } else {
                r.daddr_in(set)
            };
            match (e.port, e.protocol) {
                (Some(p), Some(proto)) => r.dport(&proto.to_string(), p.start, p.end),
                _ => r,
            }
        })
        .collect()
}
