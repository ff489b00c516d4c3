//! `netcompose check`: the top-level `x-checks` as real probes from inside the replicas. This
//! module turns each check into a probe (where from, which address, which protocol); `probe`
//! sends it.

pub mod probe;

use crate::model::{Desired, ResourceId, Spec};
use crate::spec::{Check, CheckProtocol, Expect, Project};
use serde::Serialize;
use std::net::IpAddr;

/// A check made concrete.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub from: String,
    pub to: String,
    /// The namespace the probe runs in; None: the host.
    #[serde(skip)]
    pub netns: Option<String>,
    pub address: Option<IpAddr>,
    pub protocol: CheckProtocol,
    pub port: Option<u16>,
    pub expect: Expect,
}

pub fn probes(project: &Project, desired: &Desired) -> Vec<Probe> {
    project
        .checks
        .iter()
        .map(|c| probe_for(project, desired, c))
        .collect()
}

fn probe_for(project: &Project, desired: &Desired, c: &Check) -> Probe {
    let from = c.from.value.clone();
    let netns = (from != "host").then(|| crate::model::names::netns_name(&project.name, &from, 1));
    let shared: Vec<&str> = project
        .services
        .get(&from)
        .map(|s| s.networks.keys().map(String::as_str).collect())
        .unwrap_or_default();
    Probe {
        from,
        to: c.to.value.clone(),
        netns,
        address: target(desired, &c.from.value, &shared, &c.to.value),
        protocol: c.protocol,
        port: c.port,
        expect: c.expect,
    }
}

/// The address a check aims at: an address as written; a service's VIP (or first replica) on
/// a network the source shares with it, else any of its addresses; `host`: the gateway the
/// source would use to reach the host.
fn target(desired: &Desired, from: &str, shared: &[&str], to: &str) -> Option<IpAddr> {
    if let Ok(ip) = to.parse::<IpAddr>() {
        return Some(ip);
    }
    if to == "host" {
        return host_address(desired, from, shared);
    }
    let vip = desired.resources.iter().find_map(|r| match &r.spec {
        Spec::Vip(v) if v.service == to && shared.contains(&v.network.as_str()) => {
            v.addresses.first().copied()
        }
        _ => None,
    });
    let replica_on = |on_shared: bool| {
        desired.resources.iter().find_map(|r| match &r.spec {
            Spec::Link(l)
                if first_replica_of(&r.address, to)
                    && (!on_shared || shared.contains(&l.network.as_str())) =>
            {
                l.addresses.first().map(|a| a.ip())
            }
            _ => None,
        })
    };
    vip.or_else(|| replica_on(true))
        .or_else(|| replica_on(false))
}

/// Whether `id` is part of the first replica of `service` (a link, a route, ...).
fn first_replica_of(id: &ResourceId, service: &str) -> bool {
    id.replica()
        .is_some_and(|r| r.service == service && r.index == 1)
}

fn host_address(desired: &Desired, from: &str, shared: &[&str]) -> Option<IpAddr> {
    if from == "host" {
        return "127.0.0.1".parse().ok();
    }
    let route = desired.resources.iter().find_map(|r| match &r.spec {
        Spec::Route(rt) if first_replica_of(&r.address, from) && rt.gateway.is_ipv4() => {
            Some(rt.gateway)
        }
        _ => None,
    });
    route.or_else(|| {
        desired.resources.iter().find_map(|r| match &r.spec {
            Spec::Bridge(b) if shared.contains(&b.network.as_str()) => {
                b.gateways.first().map(|g| g.ip())
            }
            _ => None,
        })
    })
}
