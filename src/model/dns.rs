//! The names each network answers (service, `tasks.<service>`, replica names, aliases,
//! hostnames, container names), as the embedded resolver will serve them, and the `links`
//! aliases it answers to the linking service only.

use super::endpoints::{Endpoint, Replica};
use super::names::netns_name;
use super::resource::{DnsZone, LinkAliases, Resource, ResourceId, Spec};
use crate::ipam::Allocations;
use crate::spec::Project;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub fn resources(
    project: &Project,
    _replicas: &[Replica],
    eps: &[Endpoint],
    alloc: &Allocations,
) -> Vec<Resource> {
    let mut zones: BTreeMap<&str, BTreeMap<String, Vec<IpAddr>>> = BTreeMap::new();
    for ep in eps {
        let zone = zones.entry(ep.network.as_str()).or_default();
        let svc = &project.services[&ep.service];
        let ips: Vec<IpAddr> = ep.ips().collect();
        let mut add = |name: String| zone.entry(name).or_default().extend(ips.iter().copied());
        add(netns_name(&project.name, &ep.service, ep.index));
        add(format!("tasks.{}", ep.service));
        if let Some(h) = &svc.hostname {
            add(h.value.clone());
        }
        if let Some(c) = svc.container_name.as_ref().filter(|_| ep.index == 1) {
            add(c.value.clone());
        }
        let vip = alloc
            .networks
            .get(&ep.network)
            .and_then(|a| a.addresses.get(&format!("{}.vip", ep.service)));
        let service_ips = vip.cloned().unwrap_or_else(|| ips.clone());
        let aliases = svc
            .networks
            .get(&ep.network)
            .map(|a| {
                a.aliases
                    .iter()
                    .map(|x| x.value.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for name in std::iter::once(ep.service.clone()).chain(aliases) {
            let entry = zone.entry(name).or_default();
            for ip in &service_ips {
                if !entry.contains(ip) {
                    entry.push(*ip);
                }
            }
        }
    }
    let mut links = link_aliases(project, eps, alloc);
    zones
        .into_iter()
        .map(|(net, records)| Resource {
            address: ResourceId::dns(net),
            spec: Spec::Dns(DnsZone {
                network: net.to_string(),
                records,
                links: links.remove(net).unwrap_or_default(),
            }),
            depends_on: vec![],
        })
        .collect()
}

/// Per network, each `links: [svc:alias]` alias: the target's service address there (its VIP,
/// else its replicas), on every network the linking service shares with it.
fn link_aliases<'p>(
    project: &'p Project,
    eps: &[Endpoint],
    alloc: &Allocations,
) -> BTreeMap<&'p str, LinkAliases> {
    let mut out: BTreeMap<&str, LinkAliases> = BTreeMap::new();
    for (key, svc) in &project.services {
        for link in &svc.links {
            let target = &link.service.value;
            let Some(alias) = link.alias.as_deref().filter(|a| a != target) else {
                continue;
            };
            for net in svc.networks.keys() {
                let vip = alloc
                    .networks
                    .get(net)
                    .and_then(|a| a.addresses.get(&format!("{target}.vip")));
                let ips: Vec<IpAddr> = match vip {
                    Some(v) => v.clone(),
                    None => eps
                        .iter()
                        .filter(|e| &e.service == target && &e.network == net)
                        .flat_map(|e| e.ips())
                        .collect(),
                };
                if ips.is_empty() {
                    continue;
                }
                out.entry(net.as_str())
                    .or_default()
                    .entry(key.clone())
                    .or_default()
                    .insert(alias.to_ascii_lowercase(), ips);
            }
        }
    }
    out
}
