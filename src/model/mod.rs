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
pub mod shared;
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
    // With no remote endpoints (one host), every endpoint is local: no second copy or index.
    let all_eps;
    let all_index;
    let (eps, index) = if remote.is_empty() {
        (local_eps.as_slice(), &local_index)
    } else {
        all_eps = [local_eps.as_slice(), &remote].concat();
        all_index = endpoints::EndpointIndex::new(&all_eps);
        (all_eps.as_slice(), &all_index)
    };
    let networks = endpoints::network_resources(project, &allocations);
    let vips = endpoints::vip_resources(project, &allocations, index);
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
    // From here on the replicas only give each its own resources: in the order of their
    // addresses (`web[10]` before `web[2]`, `svc10` before `svc1[`), so that the parts built
    // replica by replica come out in address order, not sorted again (a big project's
    // namespaces and their links and routes, printed and sorted, were a tenth of its model).
    let mut replicas = replicas;
    replicas.sort_by_cached_key(|r| r.address().to_string());
    // The parts are independent: about half of the work is done on a second thread (a big
    // project's model is most of its plan's time). The replica tables and the zones there,
    // the namespaces and the files here: on a big project that splits it about evenly (the
    // files there made that thread's share half as long again as this one's). Each part is
    // sorted where it is built, and the sorted parts are merged.
    let (host, namespaces, files, others) = std::thread::scope(|s| {
        let others = s.spawn(|| {
            [
                tables::replica::resources(project, &replicas, index, &vip_specs),
                dns::resources(project, &replicas, eps, &allocations),
            ]
            .map(sorted_by_address)
        });
        let host = tables::host::resources(&project.name, &bridges, &dispatch, &publish);
        let namespaces = sorted_by_address(endpoints::namespace_resources(
            project,
            &replicas,
            &local_index,
            &allocations,
        ));
        let files = sorted_by_address(files::resources(project, &replicas, &local_index, ctx));
        (host, namespaces, files, others.join())
    });
    let [replica_tables, zones] = match others {
        Ok(parts) => parts,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut parts = vec![
        sorted_by_address(host),
        replica_tables,
        namespaces,
        files,
        zones,
        sorted_by_address(vips),
        sorted_by_address(networks),
    ];
    if let Some(view) = &ctx.cluster {
        parts.push(sorted_by_address(overlay::resources(
            project,
            view,
            &allocations,
        )));
    }
    let mut resources = merged(parts);
    if let Some(view) = &ctx.cluster {
        overlay::clamp_mtu(project, view, &mut resources);
        if let Some(tunnel) = &view.tunnel {
            overlay::guard_encrypted(project, tunnel, &allocations, &mut resources);
        }
    }
    Ok(Desired {
        project: project.name.clone(),
        resources,
        allocations,
    })
}

/// The parts, each in address order, merged into one vector in address order; resources of
/// the same address keep the order of their parts. That is what a stable sort of the parts
/// laid end to end gives, but each resource is moved once, straight to its place, and
/// compared with the next ones of a few other parts only: a big project's resources are tens
/// of megabytes, and joining them first, then sorting indexes of them and moving them by that
/// order, was a tenth of its model's time.
fn merged(parts: Vec<Vec<Resource>>) -> Vec<Resource> {
    let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    let mut parts: Vec<std::vec::IntoIter<Resource>> =
        parts.into_iter().map(Vec::into_iter).collect();
    fn next(part: &std::vec::IntoIter<Resource>) -> Option<&ResourceId> {
        part.as_slice().first().map(|r| &r.address)
    }
    // The parts that have resources left, in the order of their next one (then of the parts).
    let mut queue: Vec<usize> = (0..parts.len())
        .filter(|&k| next(&parts[k]).is_some())
        .collect();
    queue.sort_by(|&a, &b| next(&parts[a]).cmp(&next(&parts[b])).then(a.cmp(&b)));
    while !queue.is_empty() {
        let k = queue.remove(0);
        let Some(resource) = parts[k].next() else {
            continue;
        };
        all.push(resource);
        let Some(address) = next(&parts[k]) else {
            continue;
        };
        let at = queue.partition_point(|&j| (next(&parts[j]), j) < (Some(address), k));
        queue.insert(at, k);
    }
    all
}

/// `resources` put in address order (stable), in place. The order is found over indexes and
/// then applied by following its cycles, so that each resource moves about once and no second
/// vector of them is made: sorting the resources themselves moves large structs at every step
/// of the sort.
fn sort_by_address(resources: &mut [Resource]) {
    if resources.is_sorted_by(|a, b| a.address <= b.address) {
        return;
    }
    let mut order: Vec<usize> = (0..resources.len()).collect();
    // Each address printed once, then compared as text: comparing ids walks their printed
    // forms piece by piece, and a sort compares each some seventeen times.
    order.sort_by_cached_key(|&i| resources[i].address.to_string());
    apply_order(resources, &mut order);
}

/// [`sort_by_address`], by value.
fn sorted_by_address(mut resources: Vec<Resource>) -> Vec<Resource> {
    sort_by_address(&mut resources);
    resources
}

/// Rearranges `items` so that position k holds what was at `order[k]` (`order` a permutation;
/// it is left as the identity). Each cycle of the permutation is walked once, swapping the
/// element it carries into place.
fn apply_order<T>(items: &mut [T], order: &mut [usize]) {
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != at {
            let from = std::mem::replace(&mut order[at], at);
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{apply_order, merged, Resource, ResourceId, Spec};
    use crate::model::resource::ExternalNetwork;

    /// An external network `key` whose name tells which part it came from.
    fn net(key: &str, from: &str) -> Resource {
        Resource {
            address: ResourceId::network(key),
            spec: Spec::External(ExternalNetwork {
                network: key.into(),
                name: from.into(),
            }),
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn merged_keeps_address_order_and_the_parts_order_of_equal_addresses() {
        let parts = vec![
            vec![net("b", "0"), net("d", "0"), net("d", "0'")],
            vec![],
            vec![net("a", "2"), net("d", "2"), net("e", "2")],
            vec![net("b", "3"), net("c", "3")],
        ];
        let mut expected: Vec<Resource> = parts.concat();
        expected.sort_by(|a, b| a.address.cmp(&b.address));
        let all = merged(parts);
        assert_eq!(all, expected);
        let names: Vec<&str> = all
            .iter()
            .map(|r| match &r.spec {
                Spec::External(n) => n.name.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(names, ["2", "0", "3", "3", "0", "0'", "2", "2"]);
    }

    #[test]
    fn apply_order_moves_each_item_where_the_order_says() {
        let orders: [&[usize]; 5] = [
            &[],
            &[0, 1, 2],
            &[2, 0, 1],
            &[1, 0, 3, 2, 4],
            &[4, 3, 2, 1, 0, 5, 7, 6],
        ];
        for order in orders {
            let mut items: Vec<usize> = (0..order.len()).map(|i| i * 10).collect();
            let mut walk = order.to_vec();
            apply_order(&mut items, &mut walk);
            let expected: Vec<usize> = order.iter().map(|&i| i * 10).collect();
            assert_eq!(items, expected, "{order:?}");
            assert!(walk.iter().enumerate().all(|(k, &i)| k == i));
        }
    }
}
