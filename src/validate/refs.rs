//! References between parts of the file: networks used by services, services named by
//! network_mode, depends_on, links, dns, x-policy and x-checks; and per-network settings that
//! only make sense together (external, drivers, macvlan parent, IPv6).

use super::SUPPORTED_DRIVERS;
use crate::diag::{same_file, suggest, ConfigError, Diagnostics};
use crate::source::Span;
use crate::spec::{NetworkMode, Peer, Policy, Project, Service};

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    // A project with an overlay runs on a cluster, whose hosts route the tunnel range to
    // their WireGuard device: none of its networks may take a subnet there.
    let on_cluster = project
        .networks
        .values()
        .any(|n| n.external.is_none() && n.driver_name() == "overlay");
    for net in project.networks.values() {
        network_settings(net, diags);
        if on_cluster && net.external.is_none() {
            tunnel_range_clash(net, diags);
        }
    }
    for svc in project.services.values() {
        attachments(project, svc, diags);
        network_mode(project, svc, diags);
        service_refs(project, svc, diags);
    }
    for net in project.networks.values() {
        if let Some(p) = &net.policy {
            policy_refs(
                project,
                p,
                &format!("x-policy of network `{}`", net.key.value),
                diags,
            );
        }
    }
    for check in &project.checks {
        for end in [&check.from, &check.to] {
            let is_addr = end.value.parse::<std::net::IpAddr>().is_ok();
            if !is_addr && !project.services.contains_key(&end.value) && end.value != "host" {
                unknown_service(project, "x-checks", &end.value, end.span, diags);
            }
        }
    }
}

fn network_settings(net: &crate::spec::Network, diags: &mut Diagnostics) {
    if !net.ipv4_enabled() {
        ipv6_only(net, diags);
    }
    for key in &net.local_settings {
        diags.push(ConfigError::ExternalWithSettings {
            network: net.key.value.clone(),
            key: key.value.clone(),
            at: key.span,
        });
    }
    let driver = net.driver_name();
    if let Some(d) = &net.driver {
        if !SUPPORTED_DRIVERS.contains(&driver) && net.external.is_none() {
            diags.push(ConfigError::UnsupportedDriver {
                driver: driver.into(),
                hint: driver_hint(driver),
                at: d.span,
            });
        }
    }
    if driver == "macvlan" && net.external.is_none() && !net.driver_opts.contains_key("parent") {
        diags.push(ConfigError::MacvlanWithoutParent {
            network: net.key.value.clone(),
            at: net.driver.as_ref().map_or(net.key.span, |d| d.span),
        });
    }
    if let Some(mode) = net
        .driver_opts
        .get("macvlan_mode")
        .or_else(|| net.driver_opts.get("mode"))
        .filter(|_| driver == "macvlan")
    {
        if !["bridge", "vepa", "private", "passthru"].contains(&mode.value.as_str()) {
            diags.push(ConfigError::Invalid {
                message: format!("unknown macvlan mode `{}`", mode.value),
                hint: "bridge, vepa, private or passthru".into(),
                at: mode.span,
            });
        }
    }
    if let Some(mtu) = net.driver_opts.get("com.docker.network.driver.mtu") {
        if !mtu
            .value
            .parse::<u32>()
            .is_ok_and(|m| (68..=65535).contains(&m))
        {
            diags.push(ConfigError::InvalidValue {
                what: "MTU".into(),
                value: mtu.value.clone(),
                reason: "must be a number from 68 to 65535".into(),
                hint: "e.g. com.docker.network.driver.mtu: \"1400\"".into(),
                at: mtu.span,
            });
        }
    }
    if let Some(list) = net
        .driver_opts
        .get(crate::ipam::vni::VXLANID_LIST)
        .filter(|_| driver == "overlay")
    {
        match crate::ipam::vni::parse_list(&list.value) {
            Err(item) => diags.push(ConfigError::InvalidValue {
                what: "VXLAN id".into(),
                value: item,
                reason: format!("must be a number from 1 to {}", crate::ipam::vni::VNI_MAX),
                hint: "e.g. com.docker.network.driver.overlay.vxlanid_list: \"4097\"".into(),
                at: list.span,
            }),
            Ok(vnis) if vnis.contains(&crate::ipam::vni::PROBE_VNI) => {
                diags.push(ConfigError::InvalidValue {
                    what: "VXLAN id".into(),
                    value: crate::ipam::vni::PROBE_VNI.to_string(),
                    reason: "reserved for the cluster agents' VXLAN probe (`netcompose nodes`)"
                        .into(),
                    hint: "choose another VNI (overlays get theirs from 4096 up, e.g. \"4097\"), \
                           or drop vxlanid_list to have a free one allocated"
                        .into(),
                    at: list.span,
                })
            }
            Ok(_) => {}
        }
    }
    if let Some(port) = net
        .driver_opts
        .get(crate::model::overlay::VXLAN_PORT_OPT)
        .filter(|_| driver == "overlay")
    {
        if crate::model::overlay::parse_port(&port.value).is_none() {
            diags.push(ConfigError::InvalidValue {
                what: "VXLAN port".into(),
                value: port.value.clone(),
                reason: "must be a UDP port from 1 to 65535".into(),
                hint: "e.g. vxlan_port: \"4790\" (every host of the overlay uses it)".into(),
                at: port.span,
            });
        }
    }
    if let Some(enc) = net
        .driver_opts
        .get(crate::model::overlay::ENCRYPTED_OPT)
        .filter(|_| driver != "overlay" && SUPPORTED_DRIVERS.contains(&driver))
    {
        // Only an overlay's traffic is wrapped in WireGuard: on a macvlan network the frames
        // leave the host as they are, so accepting the option there would promise what it
        // does not do.
        diags.push(ConfigError::Invalid {
            message: format!(
                "`encrypted` applies to overlay networks; network `{}` uses the {driver} driver",
                net.key.value
            ),
            hint: "use driver: overlay (its VXLAN then runs inside WireGuard between hosts), \
                   or remove encrypted"
                .into(),
            at: enc.span,
        });
    }
}

/// A cluster project's subnet may not overlap the range the agents give their WireGuard
/// tunnel addresses from: every cluster host routes that range to its tunnel device.
fn tunnel_range_clash(net: &crate::spec::Network, diags: &mut Diagnostics) {
    let range = ipnetwork::IpNetwork::V4(crate::model::cluster::TUNNEL_RANGE);
    for subnet in net.ipam.config.iter().filter_map(|c| c.subnet.as_ref()) {
        if subnet.value.is_ipv4() && crate::ipam::overlap(&subnet.value, &range) {
            diags.push(ConfigError::Invalid {
                message: format!(
                    "subnet {} of network `{}` overlaps {range}, the cluster's WireGuard \
                     tunnel addresses (the project has an overlay network, so it runs on a \
                     cluster)",
                    subnet.value, net.key.value
                ),
                hint: format!("choose a subnet outside {range}"),
                at: subnet.span,
            });
        }
    }
}

/// `enable_ipv4: false`: the network needs IPv6 (Docker: "IPv4 or IPv6 must be enabled") and
/// may not carry an IPv4 subnet.
fn ipv6_only(net: &crate::spec::Network, diags: &mut Diagnostics) {
    let v6_subnet = net
        .ipam
        .config
        .iter()
        .any(|c| c.subnet.as_ref().is_some_and(|s| s.value.is_ipv6()));
    if !net.enable_ipv6.as_ref().is_some_and(|e| e.value) && !v6_subnet {
        diags.push(ConfigError::Invalid {
            message: format!(
                "network `{}` has `enable_ipv4: false` but no IPv6: IPv4 or IPv6 must be enabled",
                net.key.value
            ),
            hint: "add `enable_ipv6: true`, or drop `enable_ipv4: false`".into(),
            at: net.key.span,
        });
    }
    for subnet in net.ipam.config.iter().filter_map(|c| c.subnet.as_ref()) {
        if subnet.value.is_ipv4() {
            diags.push(ConfigError::Invalid {
                message: format!(
                    "network `{}` has `enable_ipv4: false` but an IPv4 subnet",
                    net.key.value
                ),
                hint: "an IPv6-only network takes IPv6 subnets only".into(),
                at: subnet.span,
            });
        }
    }
}

fn driver_hint(driver: &str) -> String {
    match driver {
        "ipvlan" => {
            "this kernel has no ipvlan support; use macvlan, which gives the same L2 attachment"
                .into()
        }
        "host" | "none" => {
            format!("use `network_mode: {driver}` on the service instead of a `{driver}` network")
        }
        _ => format!(
            "netcompose builds {} networks",
            SUPPORTED_DRIVERS.join(", ")
        ),
    }
}

fn attachments(project: &Project, svc: &Service, diags: &mut Diagnostics) {
    for (key, att) in &svc.networks {
        let Some(net) = project.networks.get(key) else {
            let hint = suggest(key, project.networks.keys().map(String::as_str), "networks");
            diags.push(ConfigError::UnknownNetwork {
                service: svc.key.value.clone(),
                network: key.clone(),
                hint,
                at: att.key.span,
            });
            continue;
        };
        if let Some(v4) = att.ipv4_address.as_ref().filter(|_| !net.ipv4_enabled()) {
            diags.push(ConfigError::Invalid {
                message: format!(
                    "service `{}` asks for an IPv4 address on network `{key}`, which has `enable_ipv4: false`",
                    svc.key.value
                ),
                hint: "give an ipv6_address, or enable IPv4 on the network".into(),
                at: v4.span,
            });
        }
        if let Some(v6) = &att.ipv6_address {
            if !net.enable_ipv6.as_ref().is_some_and(|e| e.value)
                && !net
                    .ipam
                    .config
                    .iter()
                    .any(|c| c.subnet.as_ref().is_some_and(|s| s.value.is_ipv6()))
            {
                diags.push(ConfigError::Ipv6Disabled {
                    network: key.clone(),
                    at: v6.span,
                });
            }
        }
        for (what, addr) in [
            ("ipv4_address", &att.ipv4_address),
            ("ipv6_address", &att.ipv6_address),
        ] {
            let Some(addr) = addr else { continue };
            if (what == "ipv4_address") != addr.value.is_ipv4() {
                diags.push(ConfigError::InvalidValue {
                    what: what.into(),
                    value: addr.value.to_string(),
                    reason: format!(
                        "not an IPv{} address",
                        if what == "ipv4_address" { 4 } else { 6 }
                    ),
                    hint: "ipv4_address takes an IPv4 address and ipv6_address an IPv6 one".into(),
                    at: addr.span,
                });
            }
            if svc.replicas() > 1 {
                diags.push(ConfigError::Invalid {
                    message: format!(
                        "service `{}` has {} replicas but a static {what}",
                        svc.key.value,
                        svc.replicas()
                    ),
                    hint: "a static address fits one replica only".into(),
                    at: addr.span,
                });
            }
        }
    }
}

fn network_mode(project: &Project, svc: &Service, diags: &mut Diagnostics) {
    let Some(mode) = &svc.network_mode else {
        return;
    };
    if let Some(span) = svc.networks_span {
        diags.push(ConfigError::NetworkModeConflict {
            key: "networks".into(),
            at: span,
            mode_at: same_file(span, mode.span),
        });
    }
    if let Some(p) = svc.ports.first() {
        if mode.value != NetworkMode::Bridge {
            diags.push(ConfigError::NetworkModeConflict {
                key: "ports".into(),
                at: p.span,
                mode_at: same_file(p.span, mode.span),
            });
        }
    }
    match &mode.value {
        NetworkMode::Service(target) if !project.services.contains_key(target) => {
            unknown_service(project, "network_mode", target, mode.span, diags)
        }
        NetworkMode::Container(target) if container_owner(project, target).is_none() => {
            let hint = format!("container:NAME takes a service's container_name or a replica name such as `{}-SERVICE-1`: netcompose runs no container engine, so there is no other container to join", project.name);
            diags.push(ConfigError::UnknownService {
                context: "network_mode".into(),
                name: target.clone(),
                hint,
                at: mode.span,
            });
        }
        NetworkMode::Service(target) if target == &svc.key.value => {
            diags.push(ConfigError::Cycle {
                cycle: format!("{target} → {target}"),
                at: mode.span,
            })
        }
        _ => {}
    }
}

/// The service a `container:NAME` refers to: by container_name or replica name.
pub fn container_owner<'p>(project: &'p Project, name: &str) -> Option<&'p str> {
    project.services.iter().find_map(|(key, svc)| {
        let by_name = svc.container_name.as_ref().is_some_and(|c| c.value == name);
        let by_replica =
            (1..=svc.replicas().max(1)).any(|n| format!("{}-{key}-{n}", project.name) == name);
        (by_name || by_replica).then_some(key.as_str())
    })
}

fn service_refs(project: &Project, svc: &Service, diags: &mut Diagnostics) {
    for dep in svc.depends_on.iter().filter(|d| d.required) {
        let target = &dep.service;
        if let Some(profiles) = project.inactive.get(&target.value) {
            diags.push(ConfigError::InactiveDependency {
                service: svc.key.value.clone(),
                dependency: target.value.clone(),
                profiles: profiles.join(", "),
                at: target.span,
            });
        } else if !project.services.contains_key(&target.value) {
            unknown_service(project, "depends_on", &target.value, target.span, diags);
        }
    }
    for link in &svc.links {
        if !project.services.contains_key(&link.service.value) {
            unknown_service(
                project,
                "links",
                &link.service.value,
                link.service.span,
                diags,
            );
        }
    }
    for dns in &svc.dns {
        if dns.value.parse::<std::net::IpAddr>().is_err()
            && !project.services.contains_key(&dns.value)
        {
            let hint = "a dns server is an IP address or the name of a service of this project"
                .to_string();
            diags.push(ConfigError::UnknownService {
                context: "dns".into(),
                name: dns.value.clone(),
                hint,
                at: dns.span,
            });
        }
    }
    if let Some(p) = &svc.policy {
        policy_refs(
            project,
            p,
            &format!("x-policy of service `{}`", svc.key.value),
            diags,
        );
    }
}

fn policy_refs(project: &Project, policy: &Policy, context: &str, diags: &mut Diagnostics) {
    let entries = [
        &policy.ingress.allow,
        &policy.ingress.deny,
        &policy.egress.allow,
        &policy.egress.deny,
    ];
    for e in entries.into_iter().flatten() {
        if let Peer::Service(name) = &e.value.peer {
            if !project.services.contains_key(name) {
                unknown_service(project, context, name, e.span, diags);
            }
        }
    }
}

fn unknown_service(
    project: &Project,
    context: &str,
    name: &str,
    at: Span,
    diags: &mut Diagnostics,
) {
    let hint = suggest(
        name,
        project.services.keys().map(String::as_str),
        "services",
    );
    diags.push(ConfigError::UnknownService {
        context: context.into(),
        name: name.into(),
        hint,
        at,
    });
}
