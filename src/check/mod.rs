//! `netcompose check`: the top-level `x-checks` as real probes from inside the replicas. This
//! module turns each check into a probe (where from, which address, which protocol); `probe`
//! sends it.

pub mod probe;

use crate::model::{Desired, ResourceId, Spec};
use crate::spec::{Check, CheckFamily, CheckProtocol, Expect, Project};
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
        address: target(desired, &c.from.value, &shared, &c.to.value, c.family),
        protocol: c.protocol,
        port: c.port,
        expect: c.expect,
    }
}

/// The address a check aims at: an address as written; a service's VIP (or first replica) on
/// a network the source shares with it, else any of its addresses; `host`: the gateway the
/// source would use to reach the host. With a `family`, only addresses of that family count;
/// without, the first (IPv4 where there is one).
fn target(
    desired: &Desired,
    from: &str,
    shared: &[&str],
    to: &str,
    family: Option<CheckFamily>,
) -> Option<IpAddr> {
    if let Ok(ip) = to.parse::<IpAddr>() {
        return Some(ip);
    }
    let fits = |ip: &IpAddr| family.is_none_or(|f| f.holds(ip));
    if to == "host" {
        return host_address(desired, from, shared, family);
    }
    let vip = desired.resources.iter().find_map(|r| match &r.spec {
        Spec::Vip(v) if v.service == to && shared.contains(&v.network.as_str()) => {
            v.addresses.iter().copied().find(fits)
        }
        _ => None,
    });
    let replica_on = |on_shared: bool| {
        desired.resources.iter().find_map(|r| match &r.spec {
            Spec::Link(l)
                if first_replica_of(&r.address, to)
                    && (!on_shared || shared.contains(&l.network.as_str())) =>
            {
                l.addresses.iter().map(|a| a.ip()).find(fits)
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

fn host_address(
    desired: &Desired,
    from: &str,
    shared: &[&str],
    family: Option<CheckFamily>,
) -> Option<IpAddr> {
    let v6 = family == Some(CheckFamily::Ipv6);
    if from == "host" {
        return Some(if v6 {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        });
    }
    let route = desired.resources.iter().find_map(|r| match &r.spec {
        Spec::Route(rt) if first_replica_of(&r.address, from) && rt.gateway.is_ipv6() == v6 => {
            Some(rt.gateway)
        }
        _ => None,
    });
    let fits = |ip: &IpAddr| family.is_none_or(|f| f.holds(ip));
    route.or_else(|| {
        desired.resources.iter().find_map(|r| match &r.spec {
            Spec::Bridge(b) if shared.contains(&b.network.as_str()) => {
                b.gateways.iter().map(|g| g.ip()).find(fits)
            }
            _ => None,
        })
    })
}
