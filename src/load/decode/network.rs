//! Top-level `networks` entries.

use super::{ext, no_span, Decoder};
use crate::load::node::Node;
use crate::spec::{Ipam, IpamConfig, Network, Project, Spanned};

/// Keys that make no sense next to `external: true`.
const LOCAL_SETTINGS: &[&str] = &[
    "driver",
    "driver_opts",
    "ipam",
    "internal",
    "enable_ipv6",
    "enable_ipv4",
    "attachable",
    "x-policy",
];

pub(super) fn decode(
    d: &mut Decoder,
    key: &Spanned<String>,
    node: &Node,
    project: &str,
) -> Network {
    let mut net = Network {
        key: key.clone(),
        name: Spanned::new(format!("{project}_{}", key.value), key.span),
        ..Default::default()
    };
    if node.is_null() {
        return net;
    }
    if node.as_map().is_none() {
        d.wrong_type(&key.value, "a mapping", node);
        return net;
    }
    if let Some(name) = d.opt_string(node, "name") {
        net.name = name;
    }
    net.driver = d.opt_string(node, "driver");
    for (k, v) in d.dict(node.get("driver_opts"), "driver_opts", '=') {
        let value = v.unwrap_or_else(|| Spanned::new(String::new(), k.span));
        net.driver_opts.insert(k.value, value);
    }
    net.attachable = d.opt_bool(node, "attachable").is_some_and(|b| b.value);
    net.enable_ipv4 = d.opt_bool(node, "enable_ipv4").map(|b| b.value);
    net.enable_ipv6 = d.opt_bool(node, "enable_ipv6");
    net.internal = d.opt_bool(node, "internal").is_some_and(|b| b.value);
    net.external = external(d, node, &mut net);
    if let Some(ipam) = node.get("ipam").filter(|n| !n.is_null()) {
        net.ipam = decode_ipam(d, ipam);
    }
    for (k, v) in d.dict(node.get("labels"), "labels", '=') {
        net.labels
            .insert(k.value, v.map(|v| v.value).unwrap_or_default());
    }
    if let Some(p) = node.get("x-policy") {
        net.policy = Some(ext::policy(d, p));
    }
    if net.external.is_some() {
        net.local_settings = LOCAL_SETTINGS
            .iter()
            .filter_map(|k| {
                node.as_map()?
                    .iter()
                    .find(|(key, _)| key.as_str() == Some(k))
            })
            .map(|(k, _)| Spanned::new(k.as_str().unwrap_or_default().to_string(), k.span))
            .collect();
    }
    net
}

/// `external: true` (or the deprecated `external: {name: x}`), which also means the network's
/// name is used as written, without the project prefix.
fn external(d: &mut Decoder, node: &Node, net: &mut Network) -> Option<crate::source::Span> {
    let ext = node.get("external").filter(|n| !n.is_null())?;
    if let Some(name) = ext.get("name").and_then(|n| d.string(n, "external.name")) {
        // compose-go (loader/normalize.go) takes the legacy `external.name` as the name, but
        // refuses a `name:` that says otherwise rather than pick one of the two.
        if let Some(given) = node.get("name").and_then(Node::as_str) {
            if given != name.value {
                d.diags.push(crate::diag::ConfigError::Invalid {
                    message: format!(
                        "networks.{}: name and external.name conflict; only use name",
                        net.key.value
                    ),
                    hint: "drop `external.name` and write `external: true` next to `name`".into(),
                    at: name.span,
                });
            }
        }
        net.name = name;
        return Some(ext.span);
    }
    if ext.as_map().is_some() {
        return Some(ext.span);
    }
    let on = d.bool(ext, "external")?.value;
    if on && node.get("name").is_none() {
        net.name = net.key.clone();
    }
    on.then_some(ext.span)
}

fn decode_ipam(d: &mut Decoder, node: &Node) -> Ipam {
    let mut ipam = Ipam {
        driver: d.opt_string(node, "driver"),
        ..Default::default()
    };
    if let Some(configs) = node.get("config").filter(|n| !n.is_null()) {
        match configs.as_seq() {
            Some(items) => ipam.config = items.iter().map(|c| decode_pool(d, c)).collect(),
            None => d.wrong_type("ipam.config", "a list", configs),
        }
    }
    for (k, v) in d.dict(node.get("options"), "ipam.options", '=') {
        ipam.options
            .insert(k.value, v.map(|v| v.value).unwrap_or_default());
    }
    ipam
}

fn decode_pool(d: &mut Decoder, node: &Node) -> IpamConfig {
    let mut pool = IpamConfig {
        span: node.span,
        ..Default::default()
    };
    if node.as_map().is_none() {
        d.wrong_type("ipam.config[]", "a mapping", node);
        return pool;
    }
    pool.subnet = node.get("subnet").and_then(|n| d.cidr(n, "subnet"));
    pool.ip_range = node.get("ip_range").and_then(|n| d.cidr(n, "ip_range"));
    pool.gateway = d.opt_ip(node, "gateway");
    for (k, v) in d.entries(node.get("aux_addresses"), "aux_addresses") {
        if let Some(ip) = d.ip(v, "aux address") {
            pool.aux_addresses.insert(k.value, ip);
        }
    }
    pool
}

/// The network of `network_mode: bridge` services.
pub const BRIDGE: &str = "bridge";

/// Compose gives services with no `networks` the `default` network, `<project>_default`; and
/// `network_mode: bridge` services get `bridge` (`<project>_bridge`), this project's stand-in
/// for Docker's default bridge: a plain bridge network with outbound access and published
/// ports, shared by the project's bridge-mode services.
pub(super) fn add_implicit_networks(project: &mut Project) {
    add_implicit_default(project);
    let uses_bridge = project.services.values().any(|s| {
        s.network_mode
            .as_ref()
            .is_some_and(|m| m.value == crate::spec::NetworkMode::Bridge)
    });
    if uses_bridge && !project.networks.contains_key(BRIDGE) {
        let key = Spanned::new(BRIDGE.to_string(), no_span());
        let name = Spanned::new(format!("{}_{BRIDGE}", project.name), no_span());
        project.networks.insert(
            BRIDGE.into(),
            Network {
                key,
                name,
                implicit: true,
                ..Default::default()
            },
        );
    }
}

fn add_implicit_default(project: &mut Project) {
    let uses_default = project.services.values().any(|s| {
        (s.networks.is_empty() && s.network_mode.is_none()) || s.networks.contains_key("default")
    });
    if uses_default && !project.networks.contains_key("default") {
        let key = Spanned::new("default".to_string(), no_span());
        let name = Spanned::new(format!("{}_default", project.name), no_span());
        project.networks.insert(
            "default".into(),
            Network {
                key,
                name,
                implicit: true,
                ..Default::default()
            },
        );
    }
}
