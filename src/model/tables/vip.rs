//! Virtual IPs: one verdict map per address family sends each VIP to a chain of its own that
//! spreads new connections over the service's replicas of that family (`numgen random`).
//! DNAT happens in the client's own namespace (output hook), so the replica sees the client's
//! real address, and conntrack keeps established flows on their replica when the set changes.
//! A VIP forwards every port, as Swarm's do: Compose files rarely list all the ports a service
//! listens on. A dual-stack network gives a service an IPv4 and an IPv6 VIP, dispatched alike
//! (`ip daddr vmap` and `ip6 daddr vmap` in the same inet table).

use crate::firewall::rule::{rule, Chain, Rule, Verdict};
use crate::model::resource::Vip;
use std::net::IpAddr;

/// The VIPs one namespace (or the host) can reach, with their backends of the same family.
#[derive(Debug, Default, Clone)]
pub struct Dispatch {
    pub entries: Vec<(IpAddr, String, Vec<IpAddr>)>,
}

impl Dispatch {
    pub fn new<'a>(vips: impl IntoIterator<Item = &'a Vip>) -> Dispatch {
        let mut entries: Vec<_> = vips
            .into_iter()
            .flat_map(|v| {
                v.families()
                    .filter(|(_, backends)| !backends.is_empty())
                    .map(|(address, backends)| {
                        let chain = chain_name(&v.service, &v.network, address);
                        (address, chain, backends)
                    })
            })
            .collect();
        entries.sort();
        Dispatch { entries }
    }

    /// The dispatch rules: one verdict map per address family that has VIPs (IPv4 first).
    pub fn rules(&self) -> Vec<Rule> {
        [true, false]
            .into_iter()
            .filter_map(|v4| {
                let map: Vec<(IpAddr, String)> = self
                    .entries
                    .iter()
                    .filter(|(ip, _, _)| ip.is_ipv4() == v4)
                    .map(|(ip, c, _)| (*ip, c.clone()))
                    .collect();
                (!map.is_empty()).then(|| rule().then(Verdict::VipMap(map)))
            })
            .collect()
    }
}

/// `vip_<service>_<network>` for an IPv4 VIP, `vip6_<service>_<network>` for an IPv6 one, with
/// characters nft identifiers cannot hold replaced.
pub fn chain_name(service: &str, network: &str, address: IpAddr) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    };
    let prefix = if address.is_ipv4() { "vip" } else { "vip6" };
    format!("{prefix}_{}_{}", clean(service), clean(network))
}

/// One regular chain per VIP address.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(addresses: &[&str], backends: &[&str]) -> Vip {
        Vip {
            service: "web".into(),
            network: "front".into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            backends: backends.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_dual_stack_vip_is_dispatched_in_both_families() {
        let v = vip(
            &["172.16.0.9", "fd00::9"],
            &["172.16.0.2", "fd00::2", "172.16.0.3", "fd00::3"],
        );
        let d = Dispatch::new([&v]);
        let rules: Vec<String> = d.rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            vec![
                "ip daddr vmap { 172.16.0.9 : goto vip_web_front }",
                "ip6 daddr vmap { fd00::9 : goto vip6_web_front }",
            ]
        );
        let chains: Vec<String> = vip_chains(&d)
            .iter()
            .map(|c| format!("{} {}", c.name, c.rules[0]))
            .collect();
        assert_eq!(
            chains,
            vec![
                "vip_web_front dnat ip to numgen random mod 2 map { 0 : 172.16.0.2, 1 : 172.16.0.3 }",
                "vip6_web_front dnat ip6 to numgen random mod 2 map { 0 : fd00::2, 1 : fd00::3 }",
            ]
        );
    }

    #[test]
    fn an_ipv4_vip_reads_as_before() {
        let d = Dispatch::new([&vip(&["172.16.0.9"], &["172.16.0.2"])]);
        let rules: Vec<String> = d.rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            vec!["ip daddr vmap { 172.16.0.9 : goto vip_web_front }"]
        );
    }

    #[test]
    fn an_ipv6_only_vip_has_only_the_ip6_map() {
        let d = Dispatch::new([&vip(&["fd00::9"], &["fd00::2"])]);
        let rules: Vec<String> = d.rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            vec!["ip6 daddr vmap { fd00::9 : goto vip6_web_front }"]
        );
        let expr = crate::firewall::compile::compile(&d.rules()[0]).unwrap();
        assert!(
            expr.iter().any(|e| matches!(
                e,
                crate::kernel::nftables::expr::Expr::Payload {
                    offset: 24,
                    len: 16,
                    ..
                }
            )),
            "{expr:?}"
        );
    }
}
