//! The `model` stage: the validated project normalized into the desired state, a list of
//! [`Resource`]s with every address, MAC, name and rule spelled out. Pure: everything it needs
//! from the machine (previous allocations, subnets in use, host nameservers) comes in
//! [`Context`].

pub mod cluster;
pub mod daemon;
mod dns;
pub mod endpoints;
mod files;
pub mod id;
pub mod names;
pub mod overlay;
pub mod ports;
pub mod qos;
pub mod relay;
pub mod resource;
pub mod tables;

use crate::ipam::{self, Allocations, IpamError, SubnetPools, Taken};
use crate::spec::Project;
pub use endpoints::{bridge_ifname as endpoints_bridge_name, Endpoint, Replica, Stack};
pub use resource::{ReplicaId, Resource, ResourceId, Spec};

/// What the model needs from outside the file.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The last applied allocations, so that nothing is renumbered.
    pub previous: Allocations,
    /// Subnets the host or other projects use.
    pub taken: Taken,
    pub pools: SubnetPools,
    /// The host's upstream nameservers, for replicas' resolv.conf.
    pub host_nameservers: Vec<String>,
    /// Sockets bound on the host, which published ports must not collide with.
    pub listening: Vec<Listening>,
    /// The kernel's ephemeral port range (None: Linux's default), for target-only ports.
    pub port_range: Option<(u16, u16)>,
    /// Host ports other projects were given for their target-only ports.
    pub other_ports: Vec<(crate::spec::Protocol, u16)>,
    /// This host's share of a cluster project (None: one host, every replica is local).
    pub cluster: Option<cluster::ClusterView>,
}

/// A socket bound on the host: protocol, address and port.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Listening {
    pub protocol: crate::spec::Protocol,
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// The desired state of a project.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    pub project: String,
    pub resources: Vec<Resource>,
    pub allocations: Allocations,
}

pub fn build(project: &Project, ctx: &Context) -> Result<Desired, Vec<IpamError>> {
    let replicas = endpoints::replicas(project);
    let requests = endpoints::network_requests(project, &replicas);
    let mut allocations = ipam::allocate(&requests, &ctx.previous, &ctx.taken, &ctx.pools)?;
    let (ports, full) = ports::allocate(project, ctx);
    if !full.is_empty() {
        let (start, end) = ctx.port_range.unwrap_or(ipam::ports::DEFAULT_RANGE);
        return Err(full
            .into_iter()
            .map(|key| IpamError::PortsExhausted { key, start, end })
            .collect());
    }
    allocations.ports = ports;
    // On a cluster, IPAM above numbered every replica of the project; only this host's are
    // built here, and the other hosts' endpoints join DNS and the VIPs.
    let (replicas, remote) = match &ctx.cluster {
        Some(view) => (
            overlay::local_replicas(view, &replicas),
            overlay::remote_endpoints(project, view),
        ),
        None => (replicas, Vec::new()),
    };
    let local_eps = endpoints::endpoints(project, &replicas, &allocations);
    let local_index = endpoints::EndpointIndex::new(&local_eps);
    let mut eps = local_eps.clone();
    eps.extend(remote);
    let index = endpoints::EndpointIndex::new(&eps);
    let networks = endpoints::network_resources(project, &allocations);
    let vips = endpoints::vip_resources(project, &allocations, &index);
    let vip_specs: Vec<&resource::Vip> = vips
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Vip(v) => Some(v),
            _ => None,
        })
        .collect();
    let bridges: Vec<&resource::Bridge> = networks
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Bridge(b) => Some(b),
            _ => None,
        })
        .collect();
    // Published ports balance over this host's replicas directly, and over remote ones through
    // their hosts' publications: DNATed straight to a remote replica, a connection would be
    // answered through that host's gateway, not back through this one.
    let publish = ports::publications(
        project,
        &local_index,
        &bridges,
        &allocations,
        ctx.cluster.as_ref(),
    );
    let dispatch = tables::vip::Dispatch::new(vip_specs.iter().copied());
    let mut resources = tables::host::resources(&project.name, &bridges, &dispatch, &publish);
    resources.extend(tables::replica::resources(
        project, &replicas, &index, &vip_specs,
    ));
    resources.extend(endpoints::namespace_resources(
        project,
        &replicas,
        &local_index,
        &allocations,
    ));
    resources.extend(files::resources(project, &replicas, &local_index, ctx));
    resources.extend(dns::resources(project, &replicas, &eps, &allocations));
    resources.extend(vips);
    resources.extend(networks);
    if let Some(view) = &ctx.cluster {
        resources.extend(overlay::resources(project, view, &allocations));
        overlay::clamp_mtu(project, view, &mut resources);
        if let Some(tunnel) = &view.tunnel {
            overlay::guard_encrypted(project, tunnel, &allocations, &mut resources);
        }
    }
    let resources = sorted_by_address(resources);
    Ok(Desired {
        project: project.name.clone(),
        resources,
        allocations,
    })
}

/// `resources` in address order (stable). The order is found over indexes and each resource
/// moved once: sorting the resources themselves moves large structs at every step of the
/// sort.
fn sorted_by_address(resources: Vec<Resource>) -> Vec<Resource> {
    let mut order: Vec<usize> = (0..resources.len()).collect();
    order.sort_by(|&a, &b| resources[a].address.cmp(&resources[b].address));
    let mut slots: Vec<Option<Resource>> = resources.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| slots[i].take()).collect()
}
