//! A host's share of a cluster project ([`ClusterView`]): which replicas are built here, the
//! endpoints of the other hosts that DNS and VIPs include, each overlay network's VXLAN port
//! and one resource per remote endpoint (its FDB and neighbour entries), and the overlay MTU
//! (the underlay's less VXLAN's headers). `bridge` and `macvlan` networks stay local: only
//! this host's replicas are on them, as Docker's local-scope networks. An `encrypted` overlay
//! runs its VXLAN between the hosts' WireGuard tunnel addresses, loses WireGuard's overhead
//! from its MTU too, and drops plain VXLAN for its VNI that arrives outside the tunnel.

use super::cluster::{ClusterView, TunnelEnd};
use super::endpoints::{bridge_ifname, mtu, Endpoint, Replica};
use super::names::short_ifname;
use super::resource::{RemoteEndpoint, Resource, ResourceId, Spec, Vxlan};
use crate::firewall::rule::{rule, Chain};
use crate::ipam::Allocations;
use crate::spec::{Network, Project};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// VXLAN's IANA port, unless the network's `vxlan_port` driver option sets another (every
/// host of the overlay reads the same file, so they agree on it).
pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_PORT_OPT: &str = "vxlan_port";
/// Headers VXLAN adds over an IPv4 underlay (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14); an IPv6 underlay adds 20 more.
pub const OVERHEAD_V4: u32 = 50;
pub const OVERHEAD_V6: u32 = 70;
/// Docker's spelling: any value (even empty) encrypts the overlay.
pub const ENCRYPTED_OPT: &str = "encrypted";
/// WireGuard's headers over IPv6 (outer IPv6 40 + UDP 8 + WireGuard 32); over IPv4 they are 20
/// less, and one figure for both keeps every host's arithmetic the same.
pub const WIREGUARD_OVERHEAD: u32 = 80;
/// The underlay MTU assumed when the view gives none.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

pub fn is_overlay(net: &Network) -> bool {
    net.driver_name() == "overlay"
}

/// An overlay whose traffic between hosts runs inside WireGuard.
pub fn is_encrypted(net: &Network) -> bool {
    is_overlay(net) && net.driver_opts.contains_key(ENCRYPTED_OPT)
}

/// The tunnel device's MTU: the underlay's less WireGuard's overhead.
pub fn tunnel_mtu(underlay_mtu: u32) -> u32 {
    match underlay_mtu {
        0 => DEFAULT_UNDERLAY_MTU,
        m => m,
    }
    .saturating_sub(WIREGUARD_OVERHEAD)
}

/// A `vxlan_port` value: a UDP port from 1 to 65535 (validate reports anything else).
pub fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse().ok().filter(|p| *p != 0)
}

fn vxlan_port(net: &Network) -> u16 {
    net.driver_opts
        .get(VXLAN_PORT_OPT)
        .and_then(|p| parse_port(&p.value))
        .unwrap_or(VXLAN_PORT)
}

/// The VXLAN device of an overlay network on this host.
pub fn vxlan_name(project: &str, network: &str) -> String {
    short_ifname("ncvx", &format!("{project}/{network}"))
}

/// The MTU of an overlay's bridge, VXLAN port and veths: the underlay's less VXLAN's overhead
/// (and WireGuard's, when encrypted), or the file's MTU when that is lower.
pub fn overlay_mtu(view: &ClusterView, net: &Network) -> u32 {
    let underlay = match view.underlay_mtu {
        0 => DEFAULT_UNDERLAY_MTU,
        m => m,
    };
    let overhead = match view.underlay {
        Some(IpAddr::V6(_)) => OVERHEAD_V6,
        Some(IpAddr::V4(_)) | None => OVERHEAD_V4,
    };
    let file = net
        .driver_opts
        .contains_key("com.docker.network.driver.mtu")
        .then(|| mtu(net));
    let wireguard = if is_encrypted(net) {
        WIREGUARD_OVERHEAD
    } else {
        0
    };
    let max = underlay.saturating_sub(overhead + wireguard);
    file.map_or(max, |f| f.min(max))
}

/// The replicas built on this host.
pub fn local_replicas(view: &ClusterView, replicas: &[Replica]) -> Vec<Replica> {
    replicas
        .iter()
        .filter(|r| view.is_local(&r.service, r.index))
        .cloned()
        .collect()
}

/// The endpoints of other hosts' replicas on this project's overlay networks, as their agents
/// published them (a replica the view says is local is this host's, whatever was published).
pub fn remote_endpoints(project: &Project, view: &ClusterView) -> Vec<Endpoint> {
    view.remote
        .iter()
        .filter(|e| project.networks.get(&e.network).is_some_and(is_overlay))
        .filter(|e| project.services.contains_key(&e.service))
        .filter(|e| !view.is_local(&e.service, e.index))
        .map(|e| Endpoint {
            service: e.service.clone(),
            index: e.index,
            network: e.network.clone(),
            netns: String::new(),
            ifname: String::new(),
            mac: e.mac.clone(),
            addresses: addresses(e).into_iter().map(IpNetwork::from).collect(),
        })
        .collect()
}

fn addresses(e: &super::cluster::RemoteEndpoint) -> Vec<IpAddr> {
    e.ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(e.ipv6.map(IpAddr::V6))
        .collect()
}

/// Per overlay network: its VXLAN port, and one resource per remote endpoint on it.
pub fn resources(project: &Project, view: &ClusterView, alloc: &Allocations) -> Vec<Resource> {
    let mut out = Vec::new();
    let mut nets: Vec<(&String, &Network)> = project
        .networks
        .iter()
        .filter(|(_, n)| is_overlay(n) && n.external.is_none())
        .collect();
    nets.sort_by(|a, b| a.0.cmp(b.0));
    for (key, net) in nets {
        let Some(vni) = alloc.networks.get(key).and_then(|a| a.vni) else {
            continue;
        };
        // Never a plain VXLAN for an encrypted network: without a tunnel here it is not built
        // (the agent reports why).
        let local = match (is_encrypted(net), &view.tunnel) {
            (true, Some(t)) => Some(t.address),
            (true, None) => continue,
            (false, _) => view.underlay,
        };
        let device = vxlan_name(&project.name, key);
        out.push(Resource {
            address: ResourceId::vxlan(key),
            spec: Spec::Vxlan(Vxlan {
                network: key.clone(),
                name: device.clone(),
                bridge: bridge_ifname(project, key),
                vni,
                port: vxlan_port(net),
                local,
                proxy: true,
                mtu: overlay_mtu(view, net),
            }),
            depends_on: vec![ResourceId::network(key)],
        });
        for e in view.remote.iter().filter(|e| &e.network == key) {
            if view.is_local(&e.service, e.index) || !project.services.contains_key(&e.service) {
                continue;
            }
            let ips = addresses(e);
            let Some(first) = ips.first() else { continue };
            out.push(Resource {
                address: ResourceId::remote(key, *first),
                spec: Spec::Remote(Box::new(RemoteEndpoint {
                    network: key.clone(),
                    device: device.clone(),
                    service: e.service.clone(),
                    replica: e.index,
                    node: e.node.clone(),
                    vtep: e.vtep,
                    mac: e.mac.to_ascii_lowercase(),
                    addresses: ips,
                })),
                depends_on: vec![ResourceId::vxlan(key)],
            });
        }
    }
    out
}

/// The encrypted networks of the project that this host builds, with their VNI and port.
fn encrypted_vnis(project: &Project, alloc: &Allocations) -> Vec<(u32, u16)> {
    encrypted(project)
        .into_iter()
        .filter_map(|(k, n)| Some((alloc.networks.get(k)?.vni?, vxlan_port(n))))
        .collect()
}

/// CVE-2023-28841's lesson: VXLAN for an encrypted network's VNI is taken only from the
/// tunnel device, so a forged plain packet on the underlay never reaches the overlay. One
/// rule per encrypted network in the host table's input chain.
pub fn guard_encrypted(
    project: &Project,
    tunnel: &TunnelEnd,
    alloc: &Allocations,
    resources: &mut [Resource],
) {
    let rules: Vec<_> = encrypted_vnis(project, alloc)
        .into_iter()
        .map(|(vni, port)| {
            rule()
                .not_iif(&tunnel.device)
                .dport("udp", port, port)
                .vni(vni)
                .drop()
        })
        .collect();
    if rules.is_empty() {
        return;
    }
    let host = resources.iter_mut().find_map(|r| match &mut r.spec {
        Spec::Firewall(f) if r.address == ResourceId::HostFirewall => Some(f),
        _ => None,
    });
    if let Some(table) = host {
        table
            .chains
            .make_mut()
            .push(Chain::base("input", "filter", "input", 0, rules));
    }
}

/// Overlay bridges and the veths on them get the overlay MTU.
pub fn clamp_mtu(project: &Project, view: &ClusterView, resources: &mut [Resource]) {
    let mtu_of = |network: &str| {
        project
            .networks
            .get(network)
            .filter(|n| is_overlay(n))
            .map(|n| overlay_mtu(view, n))
    };
    for r in resources {
        match &mut r.spec {
            Spec::Bridge(b) => b.mtu = mtu_of(&b.network).unwrap_or(b.mtu),
            Spec::Link(l) => l.mtu = mtu_of(&l.network).unwrap_or(l.mtu),
            Spec::Macvlan(_)
            | Spec::External(_)
            | Spec::Vxlan(_)
            | Spec::Remote(_)
            | Spec::Namespace(_)
            | Spec::Route(_)
            | Spec::Files(_)
            | Spec::Vip(_)
            | Spec::Dns(_)
            | Spec::Firewall(_) => {}
        }
    }
}

/// What the plan says about a host's share: local networks stay on this host.
pub fn notes(project: &Project, view: &ClusterView) -> Vec<String> {
    let mut local: Vec<&String> = project
        .networks
        .iter()
        .filter(|(_, n)| !is_overlay(n))
        .map(|(k, _)| k)
        .collect();
    local.sort();
    let mut out = vec![format!(
        "node {}: {} of the project's replicas run here; {} endpoints of other hosts are \
         reached over the overlay",
        view.node,
        view.local.len(),
        view.remote.len()
    )];
    for (key, net) in encrypted(project) {
        out.push(match &view.tunnel {
            Some(t) => format!(
                "network `{key}` is encrypted: its VXLAN runs between the hosts' WireGuard \
                 addresses ({} here, device {}), its MTU is {}, and plain VXLAN for it that \
                 arrives outside {} is dropped",
                t.address,
                t.device,
                overlay_mtu(view, net),
                t.device
            ),
            None => format!(
                "network `{key}` is encrypted but this host has no WireGuard tunnel: it is not \
                 built here"
            ),
        });
    }
    if !local.is_empty() {
        let one = local.len() == 1;
        let names: Vec<String> = local.iter().map(|s| format!("`{s}`")).collect();
        out.push(format!(
            "{} {} {} local to each host (bridge and macvlan networks are): only this host's \
             replicas are on {them} here, and names on {them} resolve to them",
            if one { "network" } else { "networks" },
            names.join(", "),
            if one { "stays" } else { "stay" },
            them = if one { "it" } else { "them" },
        ));
    }
    out
}

fn encrypted(project: &Project) -> Vec<(&String, &Network)> {
    let mut out: Vec<(&String, &Network)> = project
        .networks
        .iter()
        .filter(|(_, n)| is_encrypted(n) && n.external.is_none())
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// What the plan says about encrypted networks on one host (no store): nothing crosses a wire.
pub fn single_host_notes(project: &Project) -> Vec<String> {
    encrypted(project)
        .into_iter()
        .map(|(key, _)| {
            format!(
                "network `{key}` is encrypted: on one host (no --store) its traffic never \
                 leaves the machine, so there is nothing to encrypt; between hosts it runs \
                 inside WireGuard"
            )
        })
        .collect()
}
