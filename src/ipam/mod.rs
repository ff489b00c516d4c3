//! The `ipam` stage: deterministic, sticky address allocation. Subnets come from the file, or
//! from the previous allocation, or from the pools (skipping anything the host or another
//! project uses); addresses from static requests first, then the previous allocation, then
//! the lowest free address. The same inputs always give the same result, and an edit never
//! renumbers an endpoint whose own network did not change.

pub mod demand;
pub mod mac;
pub mod pool;
pub mod ports;
mod subnets;
pub mod vni;

pub use pool::AddressPool;
pub use subnets::{overlap, SubnetPools, Taken};

use ipnetwork::IpNetwork;
use mac::{derive_mac, format_mac, parse_mac};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use thiserror::Error;

/// What one network needs.
#[derive(Debug, Clone)]
pub struct NetworkRequest {
    pub key: String,
    /// Seed of the automatic IPv6 prefix: unique per project and network.
    pub seed: String,
    /// Explicit ipam config entries.
    pub pools: Vec<ExplicitPool>,
    pub ipv6: bool,
    /// False for an IPv6-only network (`enable_ipv4: false`): no IPv4 subnet is chosen.
    pub ipv4: bool,
    pub owners: Vec<AddressRequest>,
    /// Whether the network is an overlay, which needs a VNI.
    pub vni: vni::VniRequest,
}

#[derive(Debug, Clone, Default)]
pub struct ExplicitPool {
    pub subnet: Option<IpNetwork>,
    pub ip_range: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    pub aux: Vec<IpAddr>,
}

/// One holder of addresses on a network: an endpoint (`web[1]`) or a VIP (`web.vip`).
#[derive(Debug, Clone)]
pub struct AddressRequest {
    pub owner: String,
    pub static_v4: Option<IpAddr>,
    pub static_v6: Option<IpAddr>,
    /// A MAC is derived for endpoints, not for VIPs.
    pub wants_mac: bool,
    pub mac: Option<String>,
    /// Seed of the derived MAC (stable across runs).
    pub mac_seed: String,
}

/// The result, also what the state file keeps so that the next run is sticky.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocations {
    pub networks: BTreeMap<String, NetworkAllocation>,
    /// Host ports picked for target-only `ports:` entries, by `service/[host_ip:]target/proto`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub subnets: Vec<IpNetwork>,
    pub gateways: Vec<IpAddr>,
    /// Owner → addresses (IPv4 first).
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// Owner → MAC.
    #[serde(default)]
    pub macs: BTreeMap<String, String>,
    /// An overlay network's VXLAN identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

#[derive(Debug, Clone, Error, PartialEq)]
pub enum IpamError {
    #[error(
        "no free subnet left in the pools for network `{network}` ({needed} addresses needed)"
    )]
    PoolsExhausted { network: String, needed: u64 },
    #[error("network `{network}`: no free address left in {block} for `{owner}`")]
    Exhausted {
        network: String,
        block: String,
        owner: String,
    },
    #[error("no free host port left in {start}-{end} for `{key}`")]
    PortsExhausted { key: String, start: u16, end: u16 },
    #[error("subnet {subnet} of network `{network}` overlaps {what}")]
    Conflict {
        network: String,
        subnet: IpNetwork,
        what: String,
    },
    #[error("VNI {vni} of network `{network}` is already used by {what}")]
    VniTaken {
        network: String,
        vni: u32,
        what: String,
    },
    #[error("no free VNI left for network `{network}`")]
    VnisExhausted { network: String },
}

/// Allocate every network, in key order: fixed subnets first, then sticky ones, then new ones.
pub fn allocate(
    requests: &[NetworkRequest],
    previous: &Allocations,
    taken: &Taken,
    pools: &SubnetPools,
) -> Result<Allocations, Vec<IpamError>> {
    let mut errors = Vec::new();
    let mut chosen = subnets::choose(requests, previous, taken, pools, &mut errors);
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for req in requests {
        if let Some(subnets) = chosen.remove(&req.key) {
            match even.len() > odd.len() {
                true => odd.push((req, subnets)),
                false => even.push((req, subnets)),
            }
        }
    }
    let order: Vec<&NetworkRequest> = (0..even.len())
        .flat_map(|k| [even.get(k), odd.get(k)])
        .flatten()
        .map(|(req, _)| *req)
        .collect();
    // Each network's addresses and MACs are its own: every other network is allocated on a
    // second thread (a big project's are tens of thousands, on the model's path).
    let allocate = |work: Vec<(&NetworkRequest, _)>| -> Vec<Result<NetworkAllocation, IpamError>> {
        work.into_iter()
            .map(|(req, subnets)| {
                network(req, subnets, previous.networks.get(&req.key), &taken.macs)
            })
            .collect()
    };
    let (even, odd) = std::thread::scope(|s| {
        let odd = s.spawn(|| allocate(odd));
        (allocate(even), odd.join())
    });
    let odd = match odd {
        Ok(odd) => odd,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut out = Allocations::default();
    // In the requests' order, as the errors are reported.
    let mut odd = odd.into_iter();
    let allocated = even
        .into_iter()
        .flat_map(|first| std::iter::once(first).chain(odd.next()));
    for (req, allocated) in order.into_iter().zip(allocated) {
        match allocated {
            Ok(a) => {
                out.networks.insert(req.key.clone(), a);
            }
            Err(e) => errors.push(e),
        }
    }
    let vnis: Vec<(String, vni::VniRequest)> =
        requests.iter().map(|r| (r.key.clone(), r.vni)).collect();
    match vni::allocate(&vnis, previous, &taken.vnis) {
        Ok(vnis) => {
            for (key, v) in vnis {
                if let Some(n) = out.networks.get_mut(&key) {
                    n.vni = Some(v);
                }
            }
        }
        Err(e) => errors.extend(e),
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn network(
    req: &NetworkRequest,
    subnets: Vec<(IpNetwork, Option<&ExplicitPool>)>,
    previous: Option<&NetworkAllocation>,
    taken_macs: &HashSet<String>,
) -> Result<NetworkAllocation, IpamError> {
    let mut pools: Vec<AddressPool> = subnets
        .iter()
        .map(|(s, explicit)| AddressPool::new(*s, *explicit))
        .collect();
    let gateways = pools.iter().filter_map(AddressPool::gateway).collect();
    let mut alloc = NetworkAllocation {
        subnets: subnets.iter().map(|(s, _)| *s).collect(),
        gateways,
        ..Default::default()
    };
    let unchanged_subnets = previous.is_some_and(|p| p.subnets == alloc.subnets);
    let sticky = previous.filter(|_| unchanged_subnets);
    // Statics first, so that no dynamic address can take one of them.
    for r in &req.owners {
        for ip in [r.static_v4, r.static_v6].into_iter().flatten() {
            if let Some(p) = pools.iter_mut().find(|p| p.contains(ip)) {
                p.reserve(ip);
            }
        }
    }
    // Then every previous address that is still valid, so nobody is renumbered.
    let mut kept: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    if let Some(prev) = sticky {
        for r in &req.owners {
            for ip in prev.addresses.get(&r.owner).into_iter().flatten() {
                let static_same_family = [r.static_v4, r.static_v6]
                    .into_iter()
                    .flatten()
                    .any(|s| s.is_ipv4() == ip.is_ipv4());
                if static_same_family {
                    continue;
                }
                if let Some(p) = pools.iter_mut().find(|p| p.contains(*ip) && p.is_free(*ip)) {
                    p.reserve(*ip);
                    kept.entry(r.owner.as_str()).or_default().push(*ip);
                }
            }
        }
    }
    for r in &req.owners {
        let mut addrs = Vec::new();
        for pool in pools.iter_mut() {
            let family_static = [r.static_v4, r.static_v6]
                .into_iter()
                .flatten()
                .find(|s| pool.contains(*s));
            let prior = kept
                .get(r.owner.as_str())
                .and_then(|k| k.iter().find(|ip| pool.contains(**ip)).copied());
            let ip = match family_static.or(prior) {
                Some(ip) => ip,
                None => pool.next_free().ok_or_else(|| IpamError::Exhausted {
                    network: req.key.clone(),
                    block: pool.block().to_string(),
                    owner: r.owner.clone(),
                })?,
            };
            addrs.push(ip);
        }
        addrs.sort_by_key(|a| a.is_ipv6());
        alloc.addresses.insert(r.owner.clone(), addrs);
    }
    alloc.macs = macs(req, sticky, taken_macs);
    Ok(alloc)
}

/// MACs: given ones, else sticky ones, else derived from a stable seed; unique on the network
/// and, with a shared store, apart from every MAC another project holds (`taken`).
fn macs(
    req: &NetworkRequest,
    sticky: Option<&NetworkAllocation>,
    taken: &HashSet<String>,
) -> BTreeMap<String, String> {
    let mut used: HashSet<String> = req
        .owners
        .iter()
        .filter_map(|r| r.mac.as_deref().and_then(parse_mac))
        .map(|m| format_mac(&m))
        .chain(taken.iter().cloned())
        .collect();
    let mut out = BTreeMap::new();
    for r in req.owners.iter().filter(|r| r.wants_mac) {
        if let Some(m) = r.mac.as_deref().and_then(parse_mac) {
            out.insert(r.owner.clone(), format_mac(&m));
            continue;
        }
        if let Some(prev) = sticky
            .and_then(|s| s.macs.get(&r.owner))
            .filter(|m| !used.contains(*m))
        {
            used.insert(prev.clone());
            out.insert(r.owner.clone(), prev.clone());
            continue;
        }
        let mac = (0u32..)
            .map(|salt| format_mac(&derive_mac(&r.mac_seed, salt)))
            .find(|m| !used.contains(m))
            .unwrap_or_default();
        used.insert(mac.clone());
        out.insert(r.owner.clone(), mac);
    }
    out
}
