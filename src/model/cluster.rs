//! A host's share of a project that runs on a cluster: which replicas run on this host, and
//! the endpoints that the other hosts' agents published. With a [`ClusterView`] in the model's
//! [`Context`](super::Context), IPAM still allocates for every replica of the project (so an
//! address is unique across hosts and a moved replica keeps it), but only local replicas are
//! built here; remote ones are reached through the overlay (VXLAN forwarding and neighbour
//! entries), and answered in DNS and balanced to by VIPs, only while their host's lease lives
//! (an endpoint is in `remote` only while its agent's key exists). Without a view (one host,
//! no store) every replica is local, as before.

use crate::ipam::Allocations;
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the agents' WireGuard tunnel addresses come from: one per node, sticky per node name.
/// Private (RFC 1918) and outside the automatic subnet pools (172.16.0.0/12, 192.168.0.0/16);
/// validate refuses an overlay subnet that overlaps it.
pub const TUNNEL_RANGE: Ipv4Network =
    match Ipv4Network::new_checked(Ipv4Addr::new(10, 232, 0, 0), 16) {
        Some(n) => n,
        None => panic!("10.232.0.0/16 is a valid network"),
    };

/// This host's end of the WireGuard mesh that encrypted overlays run over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelEnd {
    /// The tunnel device (VXLAN packets of an encrypted network arrive through it only).
    pub device: String,
    /// This host's tunnel address: the source of its encrypted networks' VXLAN.
    pub address: IpAddr,
}

/// This host, seen from the cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// This host's node name (`agent --node`).
    pub node: String,
    /// This host's underlay address: the source address of its VXLAN tunnels (`--underlay`).
    pub underlay: Option<IpAddr>,
    /// The smallest underlay MTU of the cluster's hosts; overlay links get it minus VXLAN's
    /// overhead (50 over IPv4, 70 over IPv6) unless the file sets a lower MTU.
    pub underlay_mtu: u32,
    /// Replicas placed on this host: (service, index from 1).
    pub local: BTreeSet<(String, u32)>,
    /// Endpoints of replicas on other hosts, as their agents published them.
    pub remote: Vec<RemoteEndpoint>,
    /// The project's allocations as `up` wrote them to the store, for every replica on every
    /// host: the model honours them first (they replace this host's own previous ones), so
    /// every host computes the same addresses, MACs and VNIs.
    pub allocations: Allocations,
    /// This host's tunnel (None: no WireGuard here, so no encrypted network is built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelEnd>,
    /// Where every replica of the project runs, on any host: a global service's replicas
    /// are numbered from it ([`crate::placement::number_global`]). None: Compose's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<crate::placement::Assignment>,
}

/// One attachment of a replica on another host to an overlay network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub network: String,
    pub service: String,
    /// From 1, as Compose numbers containers.
    pub index: u32,
    /// The node it runs on.
    pub node: String,
    /// Where VXLAN frames for this endpoint go: its node's underlay address, or on an
    /// encrypted network its node's tunnel address.
    pub vtep: IpAddr,
    /// The endpoint's MAC, as `aa:bb:cc:dd:ee:ff` (stored, not derived from the address).
    pub mac: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl ClusterView {
    /// Whether replica `index` of `service` runs on this host.
    pub fn is_local(&self, service: &str, index: u32) -> bool {
        self.local.contains(&(service.to_string(), index))
    }
}
