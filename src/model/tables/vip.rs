//! Virtual IPs: one verdict map per address family sends each VIP to a chain of its own that
//! spreads new connections over the service's replicas of that family, held in a named map
//! of the VIP (`numgen random` over its slots), so that a scale changes map elements only.
//! DNAT happens in the client's own namespace (output hook), so the replica sees the client's
//! real address, and conntrack keeps established flows on their replica when the set changes.
//! A VIP forwards every port, as Swarm's do: Compose files rarely list all the ports a service
//! listens on. A dual-stack network gives a service an IPv4 and an IPv6 VIP, dispatched alike
//! (`ip daddr vmap` and `ip6 daddr vmap` in the same inet table). A VIP whose service's
//! policy refuses the table's replica is dropped by the dispatch itself ([`super::reach`]).

use crate::firewall::rule::{rule, Chain, Map, Rule, Verdict};
use crate::model::resource::{RefusedVip, Vip};
use std::net::IpAddr;

/// The VIPs one namespace (or the host) can reach, with their backends of the same family.
#[derive(Debug, Default, Clone)]
pub struct Dispatch {
    pub entries: Vec<Entry>,
}

/// One VIP address and what the dispatch does with it: balance it over its backends, or, refused,
/// drop it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub address: IpAddr,
    /// None for a refused VIP, which has no chain or map: only its address is dispatched (most
    /// of a replica's VIPs under default-deny policies, so their names are not worked out).
    pub balanced: Option<Balanced>,
}

/// A VIP's chain, its map and its backends of the VIP's family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Balanced {
    pub chain: String,
    pub map: String,
    pub backends: Vec<IpAddr>,
}

impl Dispatch {
    pub fn new<'a>(vips: impl IntoIterator<Item = &'a Vip>) -> Dispatch {
        Dispatch::refusing(vips, &[])
    }

    /// The dispatch of `vips` with those in `refused` dropped.
    pub fn refusing<'a>(
        vips: impl IntoIterator<Item = &'a Vip>,
        refused: &[RefusedVip],
    ) -> Dispatch {
        let is_refused = |service: &str, address: IpAddr| {
            refused
                .iter()
                .any(|r| r.service == service && r.ipv6 == address.is_ipv6())
        };
        let mut entries: Vec<_> = vips
            .into_iter()
            .flat_map(|v| {
                v.families()
                    .filter(|(_, backends)| !backends.is_empty())
                    .map(|(address, backends)| Entry {
                        address,
                        balanced: (!is_refused(&v.service, address)).then(|| Balanced {
                            chain: chain_name(&v.service, &v.network, address),
                            map: map_name(&v.service, &v.network, address),
                            backends,
                        }),
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
                let map: Vec<(IpAddr, Option<String>)> = self
                    .entries
                    .iter()
                    .filter(|e| e.address.is_ipv4() == v4)
                    .map(|e| (e.address, e.balanced.as_ref().map(|b| b.chain.clone())))
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

/// One regular chain per VIP address not refused, which DNATs to a backend of the VIP's map.
pub fn vip_chains(d: &Dispatch) -> Vec<Chain> {
    d.entries
        .iter()
        .filter_map(|e| {
            let b = e.balanced.as_ref()?;
            Some(Chain::regular(
                &b.chain,
                vec![rule().then(Verdict::DnatMap {
                    map: b.map.clone(),
                    ipv6: e.address.is_ipv6(),
                })],
            ))
        })
        .collect()
}

/// A VIP's map is named as the plan shows it, `vip.<service>.<network>` (`vip6.` for an IPv6
/// VIP): nft names may hold the dots, dashes and underscores of Compose names, and the `vip`
/// prefix starts it with a letter.
pub fn map_name(service: &str, network: &str, address: IpAddr) -> String {
    let prefix = if address.is_ipv4() { "vip" } else { "vip6" };
    format!("{prefix}.{service}.{network}")
}

/// One map per VIP address not refused: its backends, which a scale changes element by element.
pub fn vip_maps(d: &Dispatch) -> Vec<Map> {
    d.entries
        .iter()
        .filter_map(|e| e.balanced.as_ref())
        .map(|b| Map {
            name: b.map.clone(),
            backends: b.backends.clone(),
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
                "vip_web_front dnat ip to numgen random mod 65536 map @vip.web.front",
                "vip6_web_front dnat ip6 to numgen random mod 65536 map @vip6.web.front",
            ]
        );
        let maps: Vec<(String, Vec<String>)> = vip_maps(&d)
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.backends.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            maps,
            vec![
                (
                    "vip.web.front".into(),
                    vec!["172.16.0.2".into(), "172.16.0.3".into()]
                ),
                (
                    "vip6.web.front".into(),
                    vec!["fd00::2".into(), "fd00::3".into()]
                ),
            ]
        );
    }

    #[test]
    fn names_keep_what_nft_allows_of_compose_names() {
        let (v4, v6): (IpAddr, IpAddr) =
            ("172.16.0.9".parse().unwrap(), "fd00::9".parse().unwrap());
        assert_eq!(
            chain_name("my-web.1", "front_2", v4),
            "vip_my_web_1_front_2"
        );
        assert_eq!(
            chain_name("my-web.1", "front_2", v6),
            "vip6_my_web_1_front_2"
        );
        assert_eq!(map_name("my-web.1", "front_2", v4), "vip.my-web.1.front_2");
        assert_eq!(map_name("my-web.1", "front_2", v6), "vip6.my-web.1.front_2");
    }

    #[test]
    fn a_refused_vip_is_dropped_with_no_chain_or_map() {
        let mut other = vip(&["172.16.0.8"], &["172.16.0.4"]);
        other.service = "db".into();
        let web = vip(&["172.16.0.9", "fd00::9"], &["172.16.0.2", "fd00::2"]);
        let refused = [RefusedVip {
            service: "web".into(),
            ipv6: false,
        }];
        let d = Dispatch::refusing([&web, &other], &refused);
        let rules: Vec<String> = d.rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            vec![
                "ip daddr vmap { 172.16.0.8 : goto vip_db_front, 172.16.0.9 : drop }",
                "ip6 daddr vmap { fd00::9 : goto vip6_web_front }",
            ]
        );
        let chains: Vec<String> = vip_chains(&d).into_iter().map(|c| c.name).collect();
        assert_eq!(chains, ["vip_db_front", "vip6_web_front"]);
        let maps: Vec<String> = vip_maps(&d).into_iter().map(|m| m.name).collect();
        assert_eq!(maps, ["vip.db.front", "vip6.web.front"]);
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
        // The lookup reads the IPv6 destination (16 bytes at offset 24).
        let expr = format!(
            "{:?}",
            crate::firewall::compile::compile(&d.rules()[0]).unwrap()
        );
        assert!(expr.contains("offset: 24, len: 16"), "{expr}");
    }
}
