//! Address plan checks on the file as written: gateways, ranges, aux and static addresses
//! inside their subnets, no address twice, no overlapping subnets, and subnets large enough
//! for every replica and virtual IP that will live on them.

use crate::diag::{same_file, ConfigError, Diagnostics};
use crate::ipam::{demand, overlap};
use crate::source::Span;
use crate::spec::{Attachment, IpamConfig, Network, Project, Service};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    // Each network's services, in the file's order, found in one pass over the services
    // rather than one per network (a big project's thousands of services on tens of networks).
    let mut members: HashMap<&str, Vec<(&Service, &Attachment)>> = HashMap::new();
    for svc in project.services.values() {
        for (key, att) in &svc.networks {
            members.entry(key.as_str()).or_default().push((svc, att));
        }
    }
    for net in project.networks.values().filter(|n| n.external.is_none()) {
        for pool in &net.ipam.config {
            pool_bounds(pool, diags);
        }
        let members = members
            .get(net.key.value.as_str())
            .map_or(&[][..], Vec::as_slice);
        static_addresses(members, net, diags);
        capacity(members, net, diags);
    }
    overlaps(project, diags);
}

fn outside(
    what: &str,
    addr: impl ToString,
    subnet: &IpNetwork,
    at: Span,
    subnet_at: Span,
) -> ConfigError {
    ConfigError::OutsideSubnet {
        what: what.into(),
        addr: addr.to_string(),
        subnet: subnet.to_string(),
        at,
        subnet_at: same_file(at, subnet_at),
    }
}

fn pool_bounds(pool: &IpamConfig, diags: &mut Diagnostics) {
    let Some(subnet) = &pool.subnet else {
        for (what, span) in [
            ("gateway", pool.gateway.as_ref().map(|g| g.span)),
            ("ip_range", pool.ip_range.as_ref().map(|r| r.span)),
        ] {
            if let Some(at) = span {
                diags.push(ConfigError::Invalid {
                    message: format!("`{what}` needs a `subnet` in the same ipam config"),
                    hint: "add subnet".into(),
                    at,
                });
            }
        }
        return;
    };
    if let Some(gw) = &pool.gateway {
        if !subnet.value.contains(gw.value) {
            diags.push(outside(
                "gateway",
                gw.value,
                &subnet.value,
                gw.span,
                subnet.span,
            ));
        } else if is_reserved(&subnet.value, gw.value) {
            diags.push(ConfigError::Invalid {
                message: format!(
                    "gateway {} is the network or broadcast address of {}",
                    gw.value, subnet.value
                ),
                hint: "use a host address of the subnet".into(),
                at: gw.span,
            });
        }
    }
    if let Some(range) = &pool.ip_range {
        let inside = subnet.value.contains(range.value.network())
            && range.value.prefix() >= subnet.value.prefix();
        if !inside {
            diags.push(outside(
                "ip_range",
                range.value,
                &subnet.value,
                range.span,
                subnet.span,
            ));
        }
    }
    for aux in pool.aux_addresses.values() {
        if !subnet.value.contains(aux.value) {
            diags.push(outside(
                "aux address",
                aux.value,
                &subnet.value,
                aux.span,
                subnet.span,
            ));
        }
    }
}

/// The IPv4 network and broadcast addresses, which are never handed out.
pub fn is_reserved(subnet: &IpNetwork, addr: IpAddr) -> bool {
    match subnet {
        IpNetwork::V4(n) if n.prefix() < 31 => {
            addr == IpAddr::V4(n.network()) || addr == IpAddr::V4(n.broadcast())
        }
        IpNetwork::V6(n) => addr == IpAddr::V6(n.network()),
        _ => false,
    }
}

/// The static addresses of `members` (the network's services and their attachments).
fn static_addresses(members: &[(&Service, &Attachment)], net: &Network, diags: &mut Diagnostics) {
    let mut taken: HashMap<IpAddr, Span> = HashMap::new();
    for pool in &net.ipam.config {
        for addr in pool.gateway.iter().chain(pool.aux_addresses.values()) {
            taken.entry(addr.value).or_insert(addr.span);
        }
    }
    for (_, att) in members {
        for addr in att.ipv4_address.iter().chain(att.ipv6_address.iter()) {
            if let Some(first) = taken.get(&addr.value) {
                diags.push(ConfigError::DuplicateAddress {
                    addr: addr.value.to_string(),
                    network: net.key.value.clone(),
                    at: addr.span,
                    first_at: same_file(addr.span, *first),
                });
                continue;
            }
            taken.insert(addr.value, addr.span);
            let family: Vec<_> = net
                .ipam
                .config
                .iter()
                .filter_map(|c| c.subnet.as_ref())
                .filter(|s| s.value.is_ipv4() == addr.value.is_ipv4())
                .collect();
            if let Some(subnet) = family.first() {
                if !family.iter().any(|s| s.value.contains(addr.value)) {
                    diags.push(outside(
                        "address",
                        addr.value,
                        &subnet.value,
                        addr.span,
                        subnet.span,
                    ));
                } else if family.iter().any(|s| is_reserved(&s.value, addr.value)) {
                    diags.push(ConfigError::Invalid {
                        message: format!("{} is a network or broadcast address", addr.value),
                        hint: "pick a host address of the subnet".into(),
                        at: addr.span,
                    });
                }
            }
        }
    }
}

/// Whether the network's subnets hold the addresses of `members` (its services).
fn capacity(members: &[(&Service, &Attachment)], net: &Network, diags: &mut Diagnostics) {
    let needed: u64 = members
        .iter()
        .map(|(svc, _)| demand::addresses_of(svc))
        .sum();
    for pool in &net.ipam.config {
        let Some(subnet) = pool.subnet.as_ref().filter(|s| s.value.is_ipv4()) else {
            continue;
        };
        let block = pool.ip_range.as_ref().map_or(subnet.value, |r| r.value);
        let reserved =
            1 + pool.aux_addresses.len() as u64 + if block.prefix() < 31 { 2 } else { 0 };
        let capacity = demand::block_size(&block).saturating_sub(reserved);
        if needed > capacity {
            diags.push(ConfigError::SubnetTooSmall {
                network: net.key.value.clone(),
                subnet: block.to_string(),
                needed,
                capacity,
                at: pool.ip_range.as_ref().map_or(subnet.span, |r| r.span),
            });
        }
    }
}

fn overlaps(project: &Project, diags: &mut Diagnostics) {
    let subnets: Vec<(&Network, &crate::spec::Spanned<IpNetwork>)> = project
        .networks
        .values()
        .filter(|n| n.external.is_none())
        .flat_map(|n| {
            n.ipam
                .config
                .iter()
                .filter_map(move |c| c.subnet.as_ref().map(|s| (n, s)))
        })
        .collect();
    for (i, (a_net, a)) in subnets.iter().enumerate() {
        for (b_net, b) in &subnets[..i] {
            if a_net.key.value != b_net.key.value && overlap(&a.value, &b.value) {
                diags.push(ConfigError::OverlappingSubnets {
                    network: a_net.key.value.clone(),
                    subnet: a.value.to_string(),
                    other: b_net.key.value.clone(),
                    other_subnet: b.value.to_string(),
                    at: a.span,
                    other_at: same_file(a.span, b.span),
                });
            }
        }
    }
}
