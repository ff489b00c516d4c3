//! One host's share of a cluster project, computed from the store as read at one revision
//! (pure: the agent's decisions, unit-tested without a store or a kernel): the placement the
//! live nodes call for, the [`ClusterView`] the reconciler builds from, the endpoints this
//! host publishes, and a fingerprint of the inputs, so that an event that changes nothing of
//! a project (another node's status, our own writes) rebuilds nothing and writes nothing.

use crate::ipam::Allocations;
use crate::model::cluster::{ClusterView, RemoteEndpoint, TunnelEnd};
use crate::placement::{self, Demand, Node, Placement, ReplicaKey};
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

/// What this host builds of the project (`tunnel`: this host's WireGuard end, if any).
pub fn view(
    snapshot: &ClusterSnapshot,
    keys: &ProjectKeys,
    me: &str,
    record: &NodeRecord,
    tunnel: Option<&TunnelEnd>,
) -> ClusterView {
    let local = keys
        .placement
        .iter()
        .flat_map(|p| p.value.assignment.iter())
        .filter(|(_, node)| node.as_str() == me)
        .map(|(k, _)| (k.service.clone(), k.index))
        .collect();
    let remote = keys
        .endpoints
        .iter()
        .filter(|((_, node), _)| node != me && snapshot.nodes.contains_key(node))
        .flat_map(|(_, eps)| eps.value.iter().cloned())
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
        local,
        remote,
        tunnel: tunnel.cloned(),
        assignment: keys.placement.as_ref().map(|p| p.value.assignment.clone()),
        allocations: keys
            .allocations
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default(),
    }
}

/// This host's endpoints on each overlay network (`overlays`: the networks' keys), as the
/// other hosts need them: every local replica with an address there, its MAC, and as the
/// VTEP this host's underlay address, or its tunnel address on an `encrypted` network (one
/// this host has no tunnel for gets nothing: its replicas are not on it). A network with no
/// local endpoint maps to nothing.
pub fn published(
    view: &ClusterView,
    overlays: &BTreeSet<String>,
    encrypted: &BTreeSet<String>,
) -> BTreeMap<String, Vec<RemoteEndpoint>> {
    let Some(underlay) = view.underlay else {
        return BTreeMap::new();
    };
    let tunnel = view.tunnel.as_ref().map(|t| t.address);
    overlays
        .iter()
        .map(|net| {
            let vtep = match encrypted.contains(net) {
                true => tunnel,
                false => Some(underlay),
            };
            let eps = vtep
                .map(|vtep| endpoints_on(&view.allocations, net, view, vtep))
                .unwrap_or_default();
            (net.clone(), eps)
        })
        .collect()
}

fn endpoints_on(
    allocations: &Allocations,
    net: &str,
    view: &ClusterView,
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
            if !view.is_local(&key.service, key.index) {
                return None;
            }
            Some(RemoteEndpoint {
                network: net.to_string(),
                service: key.service,
                index: key.index,
                node: view.node.clone(),
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

/// A digest of what `up`'s write asks of `me` in a project: the spec (less `--scale`, which
/// reaches a host only through the placement), the replicas placed on it, and the
/// allocations it builds from (every network's subnets, gateways and VNI, the addresses and
/// MACs of its replicas and of owners that are no replica, such as VIPs; the host ports).
/// Another host's replicas reach it as endpoints, not through this. A node reports again only
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
    let spec = keys.spec.as_ref().map(|s| SpecRecord {
        scale: Vec::new(),
        ..s.value.clone()
    });
    let local: Vec<String> = local.iter().map(|k| k.to_string()).collect();
    let share = (spec, local, allocations);
    // Every part was read from JSON (the spec, the allocations), so it serialises again.
    let json = serde_json::to_vec(&share).unwrap_or_default();
    let hash = Sha256::digest(&json);
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A hash of what this host's share of the project is built from: the spec, the
/// allocations (with their revision: every `up` rewrites them and waits for a report), the
/// placement, the live nodes and the other nodes' endpoints. Statuses and this host's own
/// endpoints are outputs, not inputs.
pub fn fingerprint(snapshot: &ClusterSnapshot, keys: &ProjectKeys, me: &str) -> u64 {
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
    for ((net, node), eps) in &keys.endpoints {
        if node != me && snapshot.nodes.contains_key(node) {
            (net, node, &eps.raw).hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
