//! Published ports: each `ports:` entry becomes a publication per address family (both
//! without a host address, as Docker publishes on 0.0.0.0 and ::; else the host address's),
//! balanced over the service's replicas of that family, reached through the first
//! non-internal bridge network of the service (in interface order). A target-only entry
//! (`"80"`, `"8080-8081"`) gets one ephemeral host port per target port, picked by
//! [`crate::ipam::ports`] and kept in the allocations. On a cluster a host publishes the ports
//! of the services it runs replicas of, balanced over every replica: its own directly, the
//! others' through their hosts' publications of the same port (see [`Publish::remote`]).

use super::cluster::ClusterView;
use super::endpoints::{Endpoint, EndpointIndex};
use super::resource::{Bridge, Publish};
use crate::ipam::ports::{BusyPorts, PortRequest};
use crate::ipam::Allocations;
use crate::spec::{NetworkMode, Port, PortRange, Project, Protocol, Service};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Whether Docker would publish the service's ports: not in the host's namespace (where the
/// ports are the host's own) and not only on internal networks.
pub fn publishes(project: &Project, svc: &Service) -> bool {
    let host = matches!(
        svc.network_mode.as_ref().map(|m| &m.value),
        Some(NetworkMode::Host)
    );
    !host && !internal_only(project, svc)
}

/// A service attached only to internal networks: Docker publishes none of its ports.
pub fn internal_only(project: &Project, svc: &Service) -> bool {
    !svc.networks.is_empty()
        && svc
            .networks
            .keys()
            .all(|k| project.networks.get(k).is_some_and(|n| n.internal))
}

/// The allocation key of one target port of a target-only entry.
pub fn port_key(service: &str, p: &Port, target: u16) -> String {
    match p.host_ip {
        Some(ip) => format!("{service}/{ip}:{target}/{}", p.protocol),
        None => format!("{service}/{target}/{}", p.protocol),
    }
}

/// The target ports that need an ephemeral host port, in file order.
pub fn requests(project: &Project) -> Vec<PortRequest> {
    let mut out = Vec::new();
    for (key, svc) in &project.services {
        if !publishes(project, svc) {
            continue;
        }
        for p in svc.ports.iter().filter(|p| p.published.is_none()) {
            for target in p.target.start..=p.target.end {
                out.push(PortRequest {
                    key: port_key(key, p, target),
                    protocol: p.protocol,
                });
            }
        }
    }
    out
}

/// Ports an ephemeral one may not take: the host's sockets, the project's explicit ones and
/// those given to other projects.
pub fn busy(project: &Project, ctx: &super::Context) -> BusyPorts {
    let mut busy = BusyPorts::default();
    for l in &ctx.listening {
        busy.insert(l.protocol, l.port);
    }
    for &(protocol, port) in &ctx.other_ports {
        busy.insert(protocol, port);
    }
    for svc in project.services.values() {
        for p in &svc.ports {
            if let Some(r) = p.published {
                for port in r.start..=r.end {
                    busy.insert(p.protocol, port);
                }
            }
        }
    }
    busy
}

/// One published port as `docker compose ps` and `port` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub service: String,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub target: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for Published {
    /// `0.0.0.0:8080->80/tcp`, `[::1]:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = std::net::SocketAddr::new(
            self.host_ip
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            self.host_port,
        );
        write!(f, "{addr}->{}/{}", self.target, self.protocol)
    }
}

/// Every port a service publishes, one per target port, with the host port chosen for
/// target-only entries (those not yet allocated are left out).
pub fn published(project: &Project, alloc: &Allocations) -> Vec<Published> {
    let mut out = Vec::new();
    for (key, svc) in &project.services {
        if !publishes(project, svc) {
            continue;
        }
        for p in &svc.ports {
            for (i, target) in (p.target.start..=p.target.end).enumerate() {
                let host_port = match p.published {
                    // A single host port for a range maps every target onto it (8080:80-81 is
                    // refused by Docker); a range maps port for port.
                    Some(r) if r.len() == 1 => Some(r.start),
                    Some(r) => u16::try_from(i)
                        .ok()
                        .and_then(|i| r.start.checked_add(i))
                        .filter(|h| *h <= r.end),
                    None => alloc.ports.get(&port_key(key, p, target)).copied(),
                };
                if let Some(host_port) = host_port {
                    out.push(Published {
                        service: key.clone(),
                        host_ip: p.host_ip,
                        host_port,
                        target,
                        protocol: p.protocol,
                    });
                }
            }
        }
    }
    out
}

/// The publications of this host: balanced over its replicas (`index`: this host's
/// endpoints) and, on a cluster, over the other hosts' replicas of the service through those
/// hosts' own publications ([`Publish::remote`]). A host that runs no replica of a service
/// does not publish its ports.
pub fn publications(
    project: &Project,
    index: &EndpointIndex,
    bridges: &[&Bridge],
    alloc: &Allocations,
    cluster: Option<&ClusterView>,
) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = project.services.keys().collect();
    keys.sort();
    for key in keys {
        let svc = &project.services[key];
        if matches!(
            svc.network_mode.as_ref().map(|m| &m.value),
            Some(NetworkMode::Host)
        ) {
            continue;
        }
        // Interface order: eth0 first. The first replica on this host (replica 1 on one
        // host; on a cluster it may run elsewhere).
        let first = index
            .service(key)
            .iter()
            .map(|e| e.index)
            .min()
            .unwrap_or(1);
        let mut mine: Vec<&Endpoint> = index.replica(key, first).to_vec();
        mine.sort_by_key(|e| e.ifname.clone());
        let Some(bridge) = mine.iter().find_map(|e| {
            bridges
                .iter()
                .find(|b| b.network == e.network && !b.internal)
        }) else {
            continue;
        };
        for p in &svc.ports {
            // Without a host address Docker publishes on both families (0.0.0.0 and ::);
            // with one, on its family only.
            let families = match p.host_ip {
                Some(ip) => vec![ip.is_ipv6()],
                None => vec![false, true],
            };
            for v6 in families {
                let backends = index
                    .service(key)
                    .iter()
                    .filter(|e| e.network == bridge.network)
                    .flat_map(|e| e.ips())
                    .filter(|ip| ip.is_ipv6() == v6)
                    .collect::<Vec<_>>();
                if backends.is_empty() {
                    continue;
                }
                let (remote, peers) = cluster
                    .map(|view| mesh(view, key, &bridge.network, v6))
                    .unwrap_or_default();
                for (published, target) in pairs(key, p, alloc) {
                    out.push(Publish {
                        service: key.clone(),
                        protocol: p.protocol,
                        host_ip: p.host_ip,
                        published,
                        target,
                        backends: backends.clone(),
                        bridge: bridge.name.clone(),
                        remote: remote.clone(),
                        peers: peers.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The underlay address of the host of each replica of `service` on another host that has
/// an address of the family on `network`, and every other host's underlay address of that
/// family (the routing mesh is reached over the underlay, one family end to end).
fn mesh(view: &ClusterView, service: &str, network: &str, v6: bool) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let family = |ip: &IpAddr| ip.is_ipv6() == v6 && Some(*ip) != view.underlay;
    let remote: Vec<IpAddr> = view
        .remote
        .iter()
        .filter(|e| e.service == service && e.network == network)
        .filter(|e| !view.is_local(&e.service, e.index))
        .filter(|e| {
            if v6 {
                e.ipv6.is_some()
            } else {
                e.ipv4.is_some()
            }
        })
        .map(|e| e.vtep)
        .filter(family)
        .collect();
    let peers: std::collections::BTreeSet<IpAddr> =
        view.remote.iter().map(|e| e.vtep).filter(family).collect();
    (remote, peers.into_iter().collect())
}

/// (host, target) ranges of one entry: as written, or one pair per target port with its
/// allocated host port.
fn pairs(service: &str, p: &Port, alloc: &Allocations) -> Vec<(PortRange, PortRange)> {
    if let Some(published) = p.published {
        return vec![(published, p.target)];
    }
    let one = |port| PortRange {
        start: port,
        end: port,
    };
    (p.target.start..=p.target.end)
        .filter_map(|t| {
            let host = *alloc.ports.get(&port_key(service, p, t))?;
            Some((one(host), one(t)))
        })
        .collect()
}

/// The allocated ports keyed for the state, the keys of requests left without one.
pub fn allocate(project: &Project, ctx: &super::Context) -> (BTreeMap<String, u16>, Vec<String>) {
    crate::ipam::ports::allocate(
        &requests(project),
        &ctx.previous.ports,
        ctx.port_range.unwrap_or(crate::ipam::ports::DEFAULT_RANGE),
        &busy(project, ctx),
    )
}
