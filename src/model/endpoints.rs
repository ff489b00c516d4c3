//! Replicas, endpoints (service × replica × network) and the network, namespace, link, route
//! and VIP resources built from them.

use super::names::{bridge_name, netns_name, veth_host_name};
use super::resource::{self as r, LinkType, ReplicaId, Resource, ResourceId, RouteFamily, Spec};
use crate::ipam::{AddressRequest, Allocations, ExplicitPool, NetworkRequest};
use crate::spec::{EndpointMode, Network, NetworkMode, Project, Service};
use ahash::AHashMap;
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

/// Default MTU of bridges and links when the file sets none.
pub const DEFAULT_MTU: u32 = 1500;

/// How a replica gets its network stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Stack {
    /// Its own namespace, with its networks (none: only lo).
    Own,
    /// The host's stack (`network_mode: host`).
    Host,
    /// Another replica's namespace (`service:X`, `container:X`).
    Shared(String),
}

#[derive(Debug, Clone)]
pub struct Replica {
    pub service: String,
    pub index: u32,
    /// The namespace its processes run in (None for host mode).
    pub netns: Option<String>,
    pub stack: Stack,
}

impl Replica {
    pub fn id(&self) -> ReplicaId {
        ReplicaId::new(&self.service, self.index)
    }
    pub fn owner(&self) -> String {
        self.id().to_string()
    }
    pub fn address(&self) -> ResourceId {
        ResourceId::Replica(self.id())
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub service: String,
    pub index: u32,
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub mac: String,
    pub addresses: Vec<IpNetwork>,
}

impl Endpoint {
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.iter().map(|a| a.ip())
    }
}

/// Endpoints grouped by replica and by service, so that building resources stays linear in
/// the number of endpoints. Hashed with aHash: a plan of 15,000 replicas looks a replica up
/// 100,000 times.
pub struct EndpointIndex<'a> {
    /// By service, then index, keyed by the endpoints' own names: a lookup allocates nothing.
    by_replica: AHashMap<&'a str, AHashMap<u32, Vec<&'a Endpoint>>>,
    by_service: AHashMap<&'a str, Vec<&'a Endpoint>>,
}

impl<'a> EndpointIndex<'a> {
    pub fn new(eps: &'a [Endpoint]) -> Self {
        let mut by_replica: AHashMap<&str, AHashMap<u32, Vec<&Endpoint>>> = AHashMap::new();
        let mut by_service: AHashMap<&str, Vec<&Endpoint>> = AHashMap::new();
        for e in eps {
            by_replica
                .entry(e.service.as_str())
                .or_default()
                .entry(e.index)
                .or_default()
                .push(e);
            by_service.entry(e.service.as_str()).or_default().push(e);
        }
        EndpointIndex {
            by_replica,
            by_service,
        }
    }

    /// A replica's endpoints, in interface order.
    pub fn replica(&self, service: &str, index: u32) -> &[&'a Endpoint] {
        self.by_replica
            .get(service)
            .and_then(|replicas| replicas.get(&index))
            .map_or(&[], Vec::as_slice)
    }

    /// Every endpoint of a service (all replicas, all networks).
    pub fn service(&self, service: &str) -> &[&'a Endpoint] {
        self.by_service.get(service).map_or(&[], Vec::as_slice)
    }
}

fn sorted_services(project: &Project) -> Vec<(&String, &Service)> {
    let mut v: Vec<_> = project.services.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn sorted_networks(project: &Project) -> Vec<(&String, &Network)> {
    let mut v: Vec<_> = project.networks.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

pub fn replicas(project: &Project) -> Vec<Replica> {
    let mut out = Vec::new();
    for (key, svc) in sorted_services(project) {
        for index in svc.indexes() {
            let (stack, netns) = match svc.network_mode.as_ref().map(|m| &m.value) {
                Some(NetworkMode::Host) => (Stack::Host, None),
                Some(NetworkMode::Service(target)) => shared(project, target, 1),
                Some(NetworkMode::Container(name)) => container(project, name),
                _ => (Stack::Own, Some(netns_name(&project.name, key, index))),
            };
            out.push(Replica {
                service: key.clone(),
                index,
                netns,
                stack,
            });
        }
    }
    out
}

fn shared(project: &Project, service: &str, index: u32) -> (Stack, Option<String>) {
    let ns = netns_name(&project.name, service, index);
    (Stack::Shared(ns.clone()), Some(ns))
}

/// `container:NAME`: a service's container_name (its first replica) or a replica's name.
fn container(project: &Project, name: &str) -> (Stack, Option<String>) {
    for (key, svc) in &project.services {
        if svc.container_name.as_ref().is_some_and(|c| c.value == name) {
            return shared(project, key, 1);
        }
    }
    (Stack::Shared(name.to_string()), Some(name.to_string()))
}

/// A replica's attachments in interface order: priority (highest first), then network name.
fn ordered_attachments(svc: &Service) -> Vec<(&String, &crate::spec::Attachment)> {
    let mut v: Vec<_> = svc.networks.iter().collect();
    v.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.0.cmp(b.0)));
    v
}

fn vip_mode(svc: &Service) -> bool {
    svc.deploy
        .endpoint_mode
        .as_ref()
        .map_or(EndpointMode::Vip, |m| m.value)
        == EndpointMode::Vip
}

pub fn network_requests(project: &Project, replicas: &[Replica]) -> Vec<NetworkRequest> {
    // Every network's holders in one pass over the replicas (in replica order), then the VIPs
    // (in service order).
    let mut holders: AHashMap<&str, Vec<AddressRequest>> = AHashMap::new();
    for rep in replicas.iter().filter(|r| r.stack == Stack::Own) {
        let svc = &project.services[&rep.service];
        let first = ordered_attachments(svc).first().map(|(k, _)| *k);
        let owner = rep.owner();
        for (key, att) in &svc.networks {
            let service_mac = svc.mac_address.as_ref().filter(|_| first == Some(key));
            holders
                .entry(key.as_str())
                .or_default()
                .push(AddressRequest {
                    owner: owner.clone(),
                    static_v4: att
                        .ipv4_address
                        .as_ref()
                        .map(|a| a.value)
                        .filter(|_| rep.index == 1),
                    static_v6: att
                        .ipv6_address
                        .as_ref()
                        .map(|a| a.value)
                        .filter(|_| rep.index == 1),
                    wants_mac: true,
                    mac: att
                        .mac_address
                        .as_ref()
                        .or(service_mac)
                        .map(|m| m.value.clone()),
                    mac_seed: format!("{}/{owner}/{key}", project.name),
                });
        }
    }
    for (svc_key, svc) in sorted_services(project) {
        if svc.network_mode.is_none() && vip_mode(svc) {
            for key in svc.networks.keys() {
                holders
                    .entry(key.as_str())
                    .or_default()
                    .push(AddressRequest {
                        owner: format!("{svc_key}.vip"),
                        static_v4: None,
                        static_v6: None,
                        wants_mac: false,
                        mac: None,
                        mac_seed: String::new(),
                    });
            }
        }
    }
    sorted_networks(project)
        .into_iter()
        .filter(|(_, n)| n.external.is_none())
        .map(|(key, net)| {
            let owners = holders.remove(key.as_str()).unwrap_or_default();
            let pools = net
                .ipam
                .config
                .iter()
                .map(|c| ExplicitPool {
                    subnet: c.subnet.as_ref().map(|s| s.value),
                    ip_range: c.ip_range.as_ref().map(|s| s.value),
                    gateway: c.gateway.as_ref().map(|s| s.value),
                    aux: c.aux_addresses.values().map(|a| a.value).collect(),
                })
                .collect();
            let ipv6 = net.enable_ipv6.as_ref().is_some_and(|e| e.value);
            NetworkRequest {
                key: key.clone(),
                seed: format!("{}/{key}", project.name),
                pools,
                ipv6,
                ipv4: net.ipv4_enabled(),
                owners,
                vni: vni_request(net),
            }
        })
        .collect()
}

pub fn endpoints(project: &Project, replicas: &[Replica], alloc: &Allocations) -> Vec<Endpoint> {
    // Each replica's endpoints are its own: the second half of the replicas is done on a
    // second thread (a big project's thirty thousand endpoints, each looked up in its
    // network's allocations, are on the model's path before it splits in two).
    let (first, second) = replicas.split_at(replicas.len() / 2);
    let (mut out, rest) = std::thread::scope(|s| {
        let rest = s.spawn(|| endpoints_of(project, second, alloc));
        (endpoints_of(project, first, alloc), rest.join())
    });
    match rest {
        Ok(rest) => out.extend(rest),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    out
}

/// [`endpoints`] of `replicas`, in their order.
fn endpoints_of(project: &Project, replicas: &[Replica], alloc: &Allocations) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for rep in replicas.iter().filter(|r| r.stack == Stack::Own) {
        let svc = &project.services[&rep.service];
        let owner = rep.owner();
        for (i, (key, att)) in ordered_attachments(svc).into_iter().enumerate() {
            let Some(net_alloc) = alloc.networks.get(key) else {
                continue;
            };
            let addresses = net_alloc
                .addresses
                .get(&owner)
                .into_iter()
                .flatten()
                .filter_map(|ip| {
                    net_alloc
                        .subnets
                        .iter()
                        .find(|s| s.contains(*ip))
                        .and_then(|s| IpNetwork::new(*ip, s.prefix()).ok())
                })
                .collect();
            out.push(Endpoint {
                service: rep.service.clone(),
                index: rep.index,
                network: key.clone(),
                netns: rep.netns.clone().unwrap_or_default(),
                ifname: att
                    .ifname()
                    .map_or_else(|| format!("eth{i}"), |n| n.value.clone()),
                mac: net_alloc.macs.get(&owner).cloned().unwrap_or_default(),
                addresses,
            });
        }
    }
    out
}

pub fn mtu(net: &Network) -> u32 {
    net.driver_opts
        .get("com.docker.network.driver.mtu")
        .and_then(|m| m.value.parse().ok())
        .unwrap_or(DEFAULT_MTU)
}

fn opt_flag(net: &Network, key: &str, default: bool) -> bool {
    net.driver_opts
        .get(key)
        .map_or(default, |v| v.value == "true" || v.value == "1")
}

pub fn bridge_ifname(project: &Project, key: &str) -> String {
    project
        .networks
        .get(key)
        .and_then(|n| n.driver_opts.get("com.docker.network.bridge.name"))
        .map_or_else(|| bridge_name(&project.name, key), |n| n.value.clone())
}

pub fn network_resources(project: &Project, alloc: &Allocations) -> Vec<Resource> {
    sorted_networks(project)
        .into_iter()
        .filter_map(|(key, net)| {
            let spec = if net.external.is_some() {
                Spec::External(r::ExternalNetwork {
                    network: key.clone(),
                    name: net.name.value.clone(),
                })
            } else {
                let a = alloc.networks.get(key)?;
                network_spec(project, key, net, a)
            };
            Some(Resource {
                address: ResourceId::network(key),
                spec,
                depends_on: vec![],
            })
        })
        .collect()
}

fn network_spec(
    project: &Project,
    key: &str,
    net: &Network,
    a: &crate::ipam::NetworkAllocation,
) -> Spec {
    if net.driver_name() == "macvlan" {
        return Spec::Macvlan(r::MacvlanNetwork {
            network: key.to_string(),
            parent: net
                .driver_opts
                .get("parent")
                .map(|p| p.value.clone())
                .unwrap_or_default(),
            mode: net
                .driver_opts
                .get("macvlan_mode")
                .or_else(|| net.driver_opts.get("mode"))
                .map_or_else(|| "bridge".into(), |m| m.value.clone()),
            subnets: a.subnets.clone(),
            gateways: a.gateways.clone(),
            mtu: mtu(net),
        });
    }
    let gateways = a
        .gateways
        .iter()
        .filter_map(|g| {
            a.subnets
                .iter()
                .find(|s| s.contains(*g))
                .and_then(|s| IpNetwork::new(*g, s.prefix()).ok())
        })
        .collect();
    Spec::Bridge(r::Bridge {
        network: key.to_string(),
        name: bridge_ifname(project, key),
        subnets: a.subnets.clone(),
        gateways,
        mtu: mtu(net),
        internal: net.internal,
        icc: opt_flag(net, "com.docker.network.bridge.enable_icc", true),
        masquerade: !net.internal
            && opt_flag(net, "com.docker.network.bridge.enable_ip_masquerade", true),
    })
}

pub fn namespace_resources(
    project: &Project,
    replicas: &[Replica],
    index: &EndpointIndex,
    alloc: &Allocations,
) -> Vec<Resource> {
    let mut out = Vec::new();
    // Derived from a hash: computed once per network, not once per link.
    let bridges: HashMap<&str, String> = project
        .networks
        .keys()
        .map(|k| (k.as_str(), bridge_ifname(project, k)))
        .collect();
    for rep in replicas.iter().filter(|r| r.stack == Stack::Own) {
        let svc = &project.services[&rep.service];
        // depends_on orders namespaces (and so the processes started in them) after their
        // dependencies' first replica.
        let depends_on = svc
            .depends_on
            .iter()
            .filter(|d| {
                project
                    .services
                    .get(&d.service.value)
                    .is_some_and(|s| s.network_mode.is_none())
            })
            .map(|d| ResourceId::Replica(ReplicaId::new(&d.service.value, 1)))
            .collect();
        out.push(Resource {
            address: rep.address(),
            spec: Spec::Namespace(r::Namespace {
                name: rep.netns.clone().unwrap_or_default(),
                service: rep.service.clone(),
                replica: rep.index,
                sysctls: svc
                    .sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect(),
            }),
            depends_on,
        });
        let mine: Vec<&Endpoint> = index.replica(&rep.service, rep.index).to_vec();
        for ep in &mine {
            out.push(link_resource(project, rep, ep, &bridges));
        }
        out.extend(default_routes(project, rep, &mine, alloc));
    }
    out
}

fn link_resource(
    project: &Project,
    rep: &Replica,
    ep: &Endpoint,
    bridges: &HashMap<&str, String>,
) -> Resource {
    let net = &project.networks[&ep.network];
    let network_address = ResourceId::network(&ep.network);
    let macvlan = net.driver_name() == "macvlan";
    let external_bridge = net.external.as_ref().map(|_| net.name.value.clone());
    let link = r::Link {
        link_type: if macvlan {
            LinkType::Macvlan
        } else {
            LinkType::Veth
        },
        network: ep.network.clone(),
        namespace: ep.netns.clone(),
        ifname: ep.ifname.clone(),
        host_ifname: (!macvlan)
            .then(|| veth_host_name(&project.name, &rep.service, rep.index, &ep.network)),
        bridge: (!macvlan).then(|| {
            external_bridge.unwrap_or_else(|| {
                bridges
                    .get(ep.network.as_str())
                    .cloned()
                    .unwrap_or_else(|| bridge_ifname(project, &ep.network))
            })
        }),
        parent: macvlan.then(|| {
            net.driver_opts
                .get("parent")
                .map(|p| p.value.clone())
                .unwrap_or_default()
        }),
        mode: macvlan.then(|| {
            net.driver_opts
                .get("macvlan_mode")
                .or_else(|| net.driver_opts.get("mode"))
                .map_or_else(|| "bridge".into(), |m| m.value.clone())
        }),
        mac: ep.mac.clone(),
        addresses: ep.addresses.clone(),
        mtu: mtu(net),
        qos: project.services[&rep.service]
            .networks
            .get(&ep.network)
            .and_then(|att| super::qos::link_qos(&project.services[&rep.service], att)),
        down: false,
    };
    Resource {
        address: ResourceId::Link(rep.id(), ep.network.clone()),
        spec: Spec::Link(Box::new(link)),
        depends_on: vec![rep.address(), network_address],
    }
}

/// One default route per family through the gateway network: highest gw_priority, then a
/// non-internal network, then by name. Internal networks never carry a default route.
fn default_routes(
    project: &Project,
    rep: &Replica,
    mine: &[&Endpoint],
    alloc: &Allocations,
) -> Vec<Resource> {
    let svc = &project.services[&rep.service];
    let mut candidates: Vec<&&Endpoint> = mine
        .iter()
        .filter(|e| {
            project
                .networks
                .get(&e.network)
                .is_some_and(|n| !n.internal)
        })
        .collect();
    candidates.sort_by(|a, b| {
        let pa = svc.networks.get(&a.network).map_or(0, |x| x.gw_priority);
        let pb = svc.networks.get(&b.network).map_or(0, |x| x.gw_priority);
        pb.cmp(&pa).then(a.network.cmp(&b.network))
    });
    let Some(ep) = candidates.first() else {
        return Vec::new();
    };
    let gateways = alloc
        .networks
        .get(&ep.network)
        .map(|a| a.gateways.clone())
        .unwrap_or_default();
    ep.addresses
        .iter()
        .filter_map(|a| {
            let gw = gateways.iter().find(|g| a.contains(**g)).copied()?;
            let (family, dst) = if a.is_ipv4() {
                (RouteFamily::V4, "0.0.0.0/0")
            } else {
                (RouteFamily::V6, "::/0")
            };
            Some(Resource {
                address: ResourceId::Route(rep.id(), family),
                spec: Spec::Route(r::Route {
                    namespace: ep.netns.clone(),
                    destination: dst.parse().ok()?,
                    gateway: gw,
                    ifname: ep.ifname.clone(),
                }),
                depends_on: vec![ResourceId::Link(rep.id(), ep.network.clone())],
            })
        })
        .collect()
}

pub fn vip_resources(
    project: &Project,
    alloc: &Allocations,
    index: &EndpointIndex,
) -> Vec<Resource> {
    let mut out = Vec::new();
    for (key, svc) in sorted_services(project)
        .into_iter()
        .filter(|(_, s)| s.network_mode.is_none() && vip_mode(s))
    {
        for net in svc.networks.keys() {
            let Some(addresses) = alloc
                .networks
                .get(net)
                .and_then(|a| a.addresses.get(&format!("{key}.vip")))
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            let backends = index
                .service(key)
                .iter()
                .filter(|e| &e.network == net)
                .flat_map(|e| e.ips())
                .collect();
            out.push(Resource {
                address: ResourceId::vip(key, net),
                spec: Spec::Vip(r::Vip {
                    service: key.clone(),
                    network: net.clone(),
                    addresses: addresses.clone(),
                    backends,
                }),
                depends_on: vec![ResourceId::network(net)],
            });
        }
    }
    out
}

/// An overlay needs a VNI: the first of `vxlanid_list` when the file gives one (validate
/// reports a bad list), else any free one.
fn vni_request(net: &crate::spec::Network) -> crate::ipam::vni::VniRequest {
    use crate::ipam::vni::{parse_list, VniRequest, VXLANID_LIST};
    if net.driver_name() != "overlay" {
        return VniRequest::None;
    }
    net.driver_opts
        .get(VXLANID_LIST)
        .and_then(|l| parse_list(&l.value).ok())
        .and_then(|l| l.first().copied())
        .map_or(VniRequest::Any, VniRequest::Given)
}
