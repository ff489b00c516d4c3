//! One host's share of a cluster project, computed from the store as read at one revision
//! (pure: the agent's decisions, unit-tested without a store or a kernel): the placement the
//! live nodes call for, the [`ClusterView`] the reconciler builds from, and a fingerprint of
//! the inputs, so that an event that changes nothing of a project (another node's status,
//! our own writes) rebuilds nothing and writes nothing.
//!
//! Every host derives the other hosts' endpoints from `up`'s one write (placement and
//! allocations) and the live nodes' records (underlay and tunnel addresses), as flannel
//! derives its routes from the subnet leases: nobody publishes them, so a new replica is
//! programmed everywhere from that write, while its own host builds it. A remote host may
//! thus hold the FDB, neighbour, DNS and VIP entries of a replica whose namespace does not
//! exist yet (or failed to build): packets to it are dropped until it exists, as they are for
//! any replica starting up, and its own host's status says why it does not. A dead node's
//! endpoints go with its record, on its lease.

use crate::ipam::Allocations;
use crate::model::cluster::{ClusterView, RemoteEndpoint, TunnelEnd};
use crate::placement::{self, Demand, Node, Placement, ReplicaKey};
use crate::reconcile::Observation;
use crate::state::cluster::{ClusterSnapshot, NodeRecord, ProjectKeys, SpecRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// The live nodes as placement sees them (a node is live while its key, on its lease, is).
pub fn nodes(snapshot: &ClusterSnapshot) -> Vec<Node> {
    snapshot
        .nodes
        .iter()
        .map(|(name, n)| Node {
            name: name.clone(),
            id: format!("{:x}", n.lease),
            labels: n.record.value.labels.clone(),
            alive: true,
        })
        .collect()
}

/// The placement the live nodes call for, when it differs from the stored one: a node died
/// with replicas on it, a pending replica now fits. Sticky, so a stored placement that still
/// holds is kept as it is.
pub fn replace(
    snapshot: &ClusterSnapshot,
    keys: &ProjectKeys,
    demands: &[Demand],
) -> Option<Placement> {
    let current = keys
        .placement
        .as_ref()
        .map(|p| p.value.assignment.clone())
        .unwrap_or_default();
    let new = placement::place(&nodes(snapshot), demands, &current);
    let same = keys
        .placement
        .as_ref()
        .is_some_and(|p| p.value.assignment == new.assignment && p.value.pending == new.pending);
    (!same).then_some(new)
}

/// The project's overlay networks (not external), and which of them are encrypted: the
/// networks whose endpoints the hosts derive for each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlays {
    pub all: BTreeSet<String>,
    pub encrypted: BTreeSet<String>,
}

impl Overlays {
    pub fn of(project: &crate::spec::Project) -> Overlays {
        let names = |keep: fn(&crate::spec::Network) -> bool| -> BTreeSet<String> {
            project
                .networks
                .iter()
                .filter(|(_, n)| n.external.is_none() && keep(n))
                .map(|(k, _)| k.clone())
                .collect()
        };
        Overlays {
            all: names(crate::model::overlay::is_overlay),
            encrypted: names(crate::model::overlay::is_encrypted),
        }
    }
}

/// The replicas the stored placement puts on `node`.
fn placed_on(keys: &ProjectKeys, node: &str) -> BTreeSet<(String, u32)> {
    keys.placement
        .iter()
        .flat_map(|p| p.value.assignment.iter())
        .filter(|(_, n)| n.as_str() == node)
        .map(|(k, _)| (k.service.clone(), k.index))
        .collect()
}

/// What this host builds of the project (`tunnel`: this host's WireGuard end, if any): its
/// replicas, and every other live node's endpoints on `overlays` as [`node_endpoints`]
/// derives them from the stored placement and allocations and that node's record.
pub fn view(
    snapshot: &ClusterSnapshot,
    keys: &ProjectKeys,
    me: &str,
    record: &NodeRecord,
    tunnel: Option<&TunnelEnd>,
    overlays: &Overlays,
) -> ClusterView {
    let allocations = keys
        .allocations
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_default();
    let remote = snapshot
        .nodes
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .flat_map(|(name, live)| {
            let r = &live.record.value;
            let at = Vtep {
                underlay: r.underlay,
                tunnel: r.wireguard.as_ref().map(|w| w.address),
            };
            node_endpoints(name, at, &placed_on(keys, name), &allocations, overlays)
                .into_values()
                .flatten()
        })
        .collect();
    let underlay_mtu = snapshot
        .nodes
        .values()
        .map(|n| n.record.value.underlay_mtu)
        .chain([record.underlay_mtu])
        .min()
        .unwrap_or(record.underlay_mtu);
    ClusterView {
        node: me.to_string(),
        underlay: Some(record.underlay),
        underlay_mtu,
        local: placed_on(keys, me),
        remote,
        tunnel: tunnel.cloned(),
        assignment: keys.placement.as_ref().map(|p| p.value.assignment.clone()),
        allocations,
    }
}

/// Where a node's VXLAN frames come from: its underlay address, and its tunnel address when
/// it has WireGuard (the source on encrypted networks).
#[derive(Debug, Clone, Copy)]
struct Vtep {
    underlay: std::net::IpAddr,
    tunnel: Option<std::net::IpAddr>,
}

/// The endpoints of `view`'s host on each overlay network, as the other hosts derive them
/// (see [`node_endpoints`]); a view without an underlay address has none.
pub fn published(
    view: &ClusterView,
    overlays: &BTreeSet<String>,
    encrypted: &BTreeSet<String>,
) -> BTreeMap<String, Vec<RemoteEndpoint>> {
    let Some(underlay) = view.underlay else {
        return BTreeMap::new();
    };
    let at = Vtep {
        underlay,
        tunnel: view.tunnel.as_ref().map(|t| t.address),
    };
    let overlays = Overlays {
        all: overlays.clone(),
        encrypted: encrypted.clone(),
    };
    node_endpoints(&view.node, at, &view.local, &view.allocations, &overlays)
}

/// Node `node`'s endpoints on each overlay network: every replica placed on it (`local`) with
/// an address there, its MAC, and as VTEP the node's underlay address, or its tunnel address
/// on an `encrypted` network (a node without a tunnel gets nothing there: its replicas are not
/// on it). A network with no endpoint of the node maps to nothing.
fn node_endpoints(
    node: &str,
    at: Vtep,
    local: &BTreeSet<(String, u32)>,
    allocations: &Allocations,
    overlays: &Overlays,
) -> BTreeMap<String, Vec<RemoteEndpoint>> {
    overlays
        .all
        .iter()
        .map(|net| {
            let vtep = match overlays.encrypted.contains(net) {
                true => at.tunnel,
                false => Some(at.underlay),
            };
            let eps = vtep
                .map(|vtep| endpoints_on(allocations, net, node, local, vtep))
                .unwrap_or_default();
            (net.clone(), eps)
        })
        .collect()
}

fn endpoints_on(
    allocations: &Allocations,
    net: &str,
    node: &str,
    local: &BTreeSet<(String, u32)>,
    vtep: std::net::IpAddr,
) -> Vec<RemoteEndpoint> {
    let Some(a) = allocations.networks.get(net) else {
        return Vec::new();
    };
    let mut out: Vec<RemoteEndpoint> = a
        .addresses
        .iter()
        .filter_map(|(owner, addrs)| {
            let key: ReplicaKey = owner.parse().ok()?;
            if !local.contains(&(key.service.clone(), key.index)) {
                return None;
            }
            Some(RemoteEndpoint {
                network: net.to_string(),
                service: key.service,
                index: key.index,
                node: node.to_string(),
                vtep,
                mac: a.macs.get(owner)?.clone(),
                ipv4: addrs.iter().find_map(|ip| match ip {
                    std::net::IpAddr::V4(v4) => Some(*v4),
                    std::net::IpAddr::V6(_) => None,
                }),
                ipv6: addrs.iter().find_map(|ip| match ip {
                    std::net::IpAddr::V6(v6) => Some(*v6),
                    std::net::IpAddr::V4(_) => None,
                }),
            })
        })
        .collect();
    out.sort();
    out
}

/// The project's files as `up` loaded them, less `--scale` (which reaches a host only
/// through the placement).
pub fn files(keys: &ProjectKeys) -> Option<SpecRecord> {
    keys.spec.as_ref().map(|s| SpecRecord {
        scale: Vec::new(),
        ..s.value.clone()
    })
}

/// Where the reconciler starts this host's next run of a project, given the [`files`] and
/// the view it last built from without error (`last`): from its record when the files are the
/// same and the view changed (replicas placed on it or taken off, other hosts' endpoints, the
/// smallest MTU): the difference is what `up` asked of it; in full otherwise: a first run,
/// one after an error, edited files, or the same view again (an `up` that asks nothing new of
/// this host is checked in full, as `up` on one host repairs what drifted).
pub fn observation(
    last: Option<(&SpecRecord, &ClusterView)>,
    files: &SpecRecord,
    view: &ClusterView,
) -> Observation {
    match last {
        Some((built, seen)) if built == files && seen != view => Observation::Recorded,
        Some(_) | None => Observation::Full,
    }
}

/// A digest of what `up`'s write asks of `me` in a project: the spec (less `--scale`, which
/// reaches a host only through the placement), the replicas placed on it, and the
/// allocations it builds from (every network's subnets, gateways and VNI, the addresses and
/// MACs of its replicas and of owners that are no replica, such as VIPs; the host ports).
/// Another host's replicas reach it as derived endpoints, not through this. A node reports again only
/// when it changes, and `up` waits only for the nodes whose report does not match it: a scale
/// on one host is reported by that host alone. Stable across builds and hosts (SHA-256 of
/// the JSON), since `up` and every agent compute it.
pub fn share_digest(keys: &ProjectKeys, me: &str) -> String {
    use sha2::{Digest, Sha256};
    let local: BTreeSet<&ReplicaKey> = keys
        .placement
        .iter()
        .flat_map(|p| p.value.assignment.iter())
        .filter(|(_, node)| node.as_str() == me)
        .map(|(k, _)| k)
        .collect();
    let mine = |owner: &String| match owner.parse::<ReplicaKey>() {
        Ok(k) => local.contains(&k),
        Err(_) => true,
    };
    let mut allocations = keys
        .allocations
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_default();
    for net in allocations.networks.values_mut() {
        net.addresses.retain(|owner, _| mine(owner));
        net.macs.retain(|owner, _| mine(owner));
    }
    let spec = files(keys);
    let local: Vec<String> = local.iter().map(|k| k.to_string()).collect();
    let share = (spec, local, allocations);
    // Every part was read from JSON (the spec, the allocations), so it serialises again.
    let json = serde_json::to_vec(&share).unwrap_or_default();
    let hash = Sha256::digest(&json);
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A hash of what this host's share of the project and the endpoints it derives are built
/// from: the spec, the allocations (with their revision: every `up` rewrites them), the
/// placement and the live nodes' records. Statuses are outputs, not inputs.
pub fn fingerprint(snapshot: &ClusterSnapshot, keys: &ProjectKeys) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    keys.spec.as_ref().map(|s| &s.raw).hash(&mut h);
    keys.allocations
        .as_ref()
        .map(|a| (&a.raw, a.mod_revision))
        .hash(&mut h);
    keys.placement.as_ref().map(|p| &p.raw).hash(&mut h);
    for (name, n) in &snapshot.nodes {
        (name, &n.record.raw).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
