//! /etc/netns/<ns>/hosts and resolv.conf of every replica namespace: `ip netns exec` and
//! `netcompose exec` bind-mount them over /etc, so a replica sees its own names and resolver.

use super::endpoints::{Endpoint, EndpointIndex, Replica, Stack};
use super::resource::{NetnsFiles, Resource, ResourceId, Spec};
use super::Context;
use crate::spec::Project;

/// The embedded resolver's address inside every replica namespace.
pub const RESOLVER: &str = "127.0.0.11";

pub fn resources(
    project: &Project,
    replicas: &[Replica],
    index: &EndpointIndex,
    ctx: &Context,
) -> Vec<Resource> {
    replicas
        .iter()
        .filter(|r| r.stack == Stack::Own)
        .map(|rep| {
            let mine: Vec<&Endpoint> = index.replica(&rep.service, rep.index).to_vec();
            let ns = rep.netns.clone().unwrap_or_default();
            Resource {
                address: ResourceId::Files(rep.id()),
                spec: Spec::Files(NetnsFiles {
                    namespace: ns,
                    hosts: hosts(project, rep, &mine),
                    resolv_conf: resolv_conf(project, rep, ctx),
                }),
                depends_on: vec![rep.address()],
            }
        })
        .collect()
}

fn hosts(project: &Project, rep: &Replica, mine: &[&Endpoint]) -> Vec<String> {
    let svc = &project.services[&rep.service];
    let mut lines = vec![
        "127.0.0.1\tlocalhost".to_string(),
        "::1\tlocalhost ip6-localhost ip6-loopback".to_string(),
    ];
    let replica_name = super::names::netns_name(&project.name, &rep.service, rep.index);
    let mut names = Vec::new();
    if let Some(h) = &svc.hostname {
        if let Some(d) = &svc.domainname {
            names.push(format!("{}.{}", h.value, d.value));
        }
        names.push(h.value.clone());
    }
    names.push(replica_name);
    for ip in mine.iter().flat_map(|e| e.ips()) {
        lines.push(format!("{ip}\t{}", names.join(" ")));
    }
    for h in &svc.extra_hosts {
        let addr = if h.addr == "host-gateway" {
            gateway_of(mine).unwrap_or_default()
        } else {
            h.addr.clone()
        };
        lines.push(format!("{addr}\t{}", h.host));
    }
    lines
}

/// Docker's `host-gateway`: the host's address on the replica's first network.
fn gateway_of(mine: &[&Endpoint]) -> Option<String> {
    let first = mine.first()?.addresses.first()?;
    crate::ipam::pool::nth(
        &ipnetwork::IpNetwork::new(first.network(), first.prefix()).ok()?,
        1,
    )
    .map(|g| g.to_string())
}

fn resolv_conf(project: &Project, rep: &Replica, _ctx: &Context) -> Vec<String> {
    let svc = &project.services[&rep.service];
    let mut lines = vec![format!("nameserver {RESOLVER}")];
    let search: Vec<&str> = svc.dns_search.iter().map(|s| s.value.as_str()).collect();
    if !search.is_empty() {
        lines.push(format!("search {}", search.join(" ")));
    }
    let opts: Vec<&str> = svc.dns_opt.iter().map(|s| s.value.as_str()).collect();
    if !opts.is_empty() {
        lines.push(format!("options {}", opts.join(" ")));
    }
    lines
}
