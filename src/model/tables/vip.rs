//! Virtual IPs: one verdict map sends each VIP to a chain of its own that spreads new
//! connections over the service's replicas (`numgen random`). DNAT happens in the client's own
//! namespace (output hook), so the replica sees the client's real address, and conntrack keeps
//! established flows on their replica when the set changes. A VIP forwards every port, as
//! Swarm's do: Compose files rarely list all the ports a service listens on.

use crate::firewall::rule::{rule, Chain, Rule, Verdict};
use crate::model::resource::Vip;
use std::net::IpAddr;

/// The VIPs one namespace (or the host) can reach, with their backends.
#[derive(Debug, Default, Clone)]
pub struct Dispatch {
    pub entries: Vec<(IpAddr, String, Vec<IpAddr>)>,
}

impl Dispatch {
    pub fn new<'a>(vips: impl IntoIterator<Item = &'a Vip>) -> Dispatch {
        let mut entries: Vec<_> = vips
            .into_iter()
            .filter(|v| !v.backends.is_empty() && v.address.is_ipv4())
            .map(|v| {
                (
                    v.address,
                    chain_name(&v.service, &v.network),
                    v.backends.clone(),
                )
            })
            .collect();
        entries.sort();
        Dispatch { entries }
    }

    /// The dispatch rule (none when there is no VIP).
    pub fn rule(&self) -> Option<Rule> {
        (!self.entries.is_empty()).then(|| {
            rule().then(Verdict::VipMap(
                self.entries
                    .iter()
                    .map(|(ip, c, _)| (*ip, c.clone()))
                    .collect(),
            ))
        })
    }
}

/// `vip_<service>_<network>`, with characters nft identifiers cannot hold replaced.
pub fn chain_name(service: &str, network: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    };
    format!("vip_{}_{}", clean(service), clean(network))
}

/// One regular chain per VIP.
pub fn vip_chains(d: &Dispatch) -> Vec<Chain> {
    d.entries
        .iter()
        .map(|(_, name, backends)| {
            Chain::regular(
                name,
                vec![rule().then(Verdict::DnatRandom {
                    backends: backends.clone(),
                    port: None,
                })],
            )
        })
        .collect()
}
