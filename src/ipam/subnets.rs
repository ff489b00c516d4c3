//! Choosing each network's subnets: explicit ones as written; otherwise the previous run's
//! (sticky) if still free; otherwise the first free block of the pools that is large enough
//! and overlaps nothing the host, another project or this project uses. IPv6 without a subnet
//! gets a unique local /64 derived from the project and network names.

use super::demand::block_size;
use super::{ExplicitPool, IpamError, NetworkRequest};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::Ipv6Addr;

/// Where automatic IPv4 subnets come from.
#[derive(Debug, Clone)]
pub struct SubnetPools {
    pub v4: Vec<Ipv4Network>,
    /// The default block size: /24, so that hundreds of networks fit.
    pub prefix: u8,
}

impl Default for SubnetPools {
    fn default() -> Self {
        let v4 = ["172.16.0.0/12", "192.168.0.0/16"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        SubnetPools { v4, prefix: 24 }
    }
}

/// Subnets in use outside this project's networks, with what uses them (for messages).
#[derive(Debug, Clone, Default)]
pub struct Taken {
    pub entries: Vec<(IpNetwork, String)>,
    /// Other projects' VNIs, with who holds each (a shared store's overlays).
    pub vnis: std::collections::BTreeMap<u32, String>,
    /// Other projects' MACs.
    pub macs: std::collections::HashSet<String>,
}

impl Taken {
    fn conflict(&self, net: &IpNetwork) -> Option<&str> {
        self.entries
            .iter()
            .find(|(t, _)| overlap(t, net))
            .map(|(_, what)| what.as_str())
    }
}

type Chosen<'r> = HashMap<String, Vec<(IpNetwork, Option<&'r ExplicitPool>)>>;

pub(super) fn choose<'r>(
    requests: &'r [NetworkRequest],
    previous: &super::Allocations,
    taken: &Taken,
    pools: &SubnetPools,
    errors: &mut Vec<IpamError>,
) -> Chosen<'r> {
    let mut chosen: Chosen = HashMap::new();
    let mut used: Vec<IpNetwork> = Vec::new();
    for req in requests {
        for pool in &req.pools {
            let Some(subnet) = pool.subnet else { continue };
            if let Some(what) = taken.conflict(&subnet) {
                errors.push(IpamError::Conflict {
                    network: req.key.clone(),
                    subnet,
                    what: what.to_string(),
                });
            }
            used.push(subnet);
            chosen
                .entry(req.key.clone())
                .or_default()
                .push((subnet, Some(pool)));
        }
    }
    let needs_v4 = |r: &NetworkRequest| {
        r.ipv4
            && !r
                .pools
                .iter()
                .any(|p| p.subnet.is_some_and(|s| s.is_ipv4()))
    };
    let needs_v6 = |r: &NetworkRequest| {
        r.ipv6
            && !r
                .pools
                .iter()
                .any(|p| p.subnet.is_some_and(|s| s.is_ipv6()))
    };
    let mut fresh = Vec::new();
    for req in requests.iter().filter(|r| needs_v4(r)) {
        let prior = previous
            .networks
            .get(&req.key)
            .and_then(|p| p.subnets.iter().find(|s| s.is_ipv4()))
            .copied();
        let reusable = prior.filter(|p| {
            block_size(p) >= needed(req)
                && taken.conflict(p).is_none()
                && !used.iter().any(|u| overlap(u, p))
        });
        match reusable {
            Some(p) => {
                used.push(p);
                chosen.entry(req.key.clone()).or_default().push((p, None));
            }
            None => fresh.push(req),
        }
    }
    for req in fresh {
        match first_free(pools, needed(req), &used, taken) {
            Some(s) => {
                used.push(s);
                chosen.entry(req.key.clone()).or_default().push((s, None));
            }
            None => errors.push(IpamError::PoolsExhausted {
                network: req.key.clone(),
                needed: needed(req),
            }),
        }
    }
    for req in requests.iter().filter(|r| needs_v6(r)) {
        let prior = previous
            .networks
            .get(&req.key)
            .and_then(|p| p.subnets.iter().find(|s| s.is_ipv6()))
            .copied();
        let v6 = prior.unwrap_or_else(|| ula(&req.seed));
        chosen.entry(req.key.clone()).or_default().push((v6, None));
    }
    chosen
}

/// Addresses a network's automatic subnet must hold: its owners plus network, gateway and
/// broadcast.
/// Two subnets of the same family share an address.
pub fn overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

fn needed(req: &NetworkRequest) -> u64 {
    req.owners.len() as u64 + 3
}

fn first_free(
    pools: &SubnetPools,
    needed: u64,
    used: &[IpNetwork],
    taken: &Taken,
) -> Option<IpNetwork> {
    let bits = 64 - needed.saturating_sub(1).leading_zeros();
    let prefix = pools.prefix.min(32u8.saturating_sub(bits as u8));
    for pool in &pools.v4 {
        if prefix < pool.prefix() {
            continue;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let start = u64::from(u32::from(pool.network()));
        let end = start + block_size(&IpNetwork::V4(*pool));
        let mut at = start;
        while at < end {
            let candidate = Ipv4Network::new(u32::try_from(at).ok()?.into(), prefix)
                .ok()
                .map(IpNetwork::V4)?;
            if !used.iter().any(|u| overlap(u, &candidate)) && taken.conflict(&candidate).is_none()
            {
                return Some(candidate);
            }
            at += step;
        }
    }
    None
}

/// A unique local /64 (RFC 4193) whose global ID is a hash of the network key.
fn ula(seed: &str) -> IpNetwork {
    let digest = Sha256::digest(seed.as_bytes());
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&digest[..5]);
    let addr = Ipv6Addr::from(octets);
    Ipv6Network::new(addr, 64)
        .map(IpNetwork::V6)
        .unwrap_or_else(|_| IpNetwork::V6(Ipv6Network::from(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{allocate, AddressRequest, Allocations};

    fn req(key: &str, owners: usize) -> NetworkRequest {
        let owners = (0..owners)
            .map(|i| AddressRequest {
                owner: format!("s[{i}]"),
                static_v4: None,
                static_v6: None,
                wants_mac: true,
                mac: None,
                mac_seed: format!("{key}/{i}"),
            })
            .collect();
        NetworkRequest {
            key: key.into(),
            seed: key.into(),
            pools: vec![],
            ipv6: false,
            ipv4: true,
            owners,
            vni: crate::ipam::vni::VniRequest::None,
        }
    }

    #[test]
    fn skips_taken_and_grows_for_demand() {
        let taken = Taken {
            entries: vec![("172.16.0.0/24".parse().unwrap(), "host route".into())],
            ..Default::default()
        };
        let a = allocate(
            &[req("a", 2), req("b", 600)],
            &Allocations::default(),
            &taken,
            &SubnetPools::default(),
        )
        .unwrap();
        assert_eq!(a.networks["a"].subnets[0].to_string(), "172.16.1.0/24");
        assert_eq!(a.networks["b"].subnets[0].to_string(), "172.16.4.0/22");
    }

    #[test]
    fn sticky_subnet_survives_a_new_network() {
        let first = allocate(
            &[req("m", 2)],
            &Allocations::default(),
            &Taken::default(),
            &SubnetPools::default(),
        )
        .unwrap();
        let second = allocate(
            &[req("a", 2), req("m", 2)],
            &first,
            &Taken::default(),
            &SubnetPools::default(),
        )
        .unwrap();
        assert_eq!(first.networks["m"].subnets, second.networks["m"].subnets);
        assert_ne!(second.networks["a"].subnets, second.networks["m"].subnets);
    }

    #[test]
    fn ula_is_stable() {
        assert_eq!(ula("p/n"), ula("p/n"));
        assert_eq!(ula("p/n").prefix(), 64);
    }
}
