//! `services` entries: the networking keys of a service.

use super::{exec, ext, health, no_span, ports, process, qos, Decoder};
use crate::load::node::{Node, Value};
use crate::spec::{
    Attachment, Deploy, EndpointMode, ExtraHost, Link, NetworkMode, Service, Spanned,
};

pub(super) fn profiles(d: &mut Decoder, node: &Node) -> Vec<String> {
    d.strings(node.get("profiles"), "profiles")
        .into_iter()
        .map(|s| s.value)
        .collect()
}

pub(super) fn decode(d: &mut Decoder, key: &Spanned<String>, node: &Node) -> Service {
    let mut svc = Service {
        key: key.clone(),
        ..Default::default()
    };
    if node.as_map().is_none() {
        if !node.is_null() {
            d.wrong_type(&key.value, "a mapping", node);
        }
        svc.networks.insert("default".into(), default_attachment());
        return svc;
    }
    svc.network_mode = node.get("network_mode").and_then(|n| network_mode(d, n));
    if let Some(nets) = node.get("networks").filter(|n| !n.is_null()) {
        svc.networks_span = Some(nets.span);
        attachments(d, nets, &mut svc);
    }
    if svc.networks.is_empty() && svc.network_mode.is_none() {
        svc.networks.insert("default".into(), default_attachment());
    }
    // Docker's `bridge` mode attaches the container to the default bridge; here that is the
    // project's implicit `bridge` network (see network::add_implicit_networks).
    if let Some(mode) = svc
        .network_mode
        .as_ref()
        .filter(|m| m.value == NetworkMode::Bridge)
    {
        let att = Attachment {
            key: Spanned::new(super::network::BRIDGE.into(), mode.span),
            ..Default::default()
        };
        svc.networks.insert(super::network::BRIDGE.into(), att);
    }
    svc.dns = d.strings(node.get("dns"), "dns");
    svc.dns_search = d.strings(node.get("dns_search"), "dns_search");
    svc.dns_opt = d.strings(node.get("dns_opt"), "dns_opt");
    svc.extra_hosts = extra_hosts(d, node.get("extra_hosts"));
    svc.hostname = d.opt_string(node, "hostname");
    svc.domainname = d.opt_string(node, "domainname");
    svc.mac_address = d.opt_string(node, "mac_address");
    svc.container_name = d.opt_string(node, "container_name");
    svc.restart = d.opt_string(node, "restart");
    svc.ports = ports::ports(d, node.get("ports"));
    svc.expose = ports::expose(d, node.get("expose"));
    svc.deploy = deploy(d, node.get("deploy"));
    svc.scale = node
        .get("scale")
        .filter(|n| !n.is_null())
        .and_then(|n| d.count(n, "scale"));
    super::placement::warnings(d, &key.value, &svc);
    svc.depends_on = health::depends_on(d, node.get("depends_on"));
    svc.links = links(d, node.get("links"));
    for (k, v) in d.dict(node.get("sysctls"), "sysctls", '=') {
        let value = v.unwrap_or_else(|| Spanned::new(String::new(), k.span));
        svc.sysctls.insert(k.value.clone(), value);
    }
    svc.policy = node.get("x-policy").map(|p| ext::policy(d, p));
    svc.run = node.get("x-run").and_then(|r| ext::run(d, r));
    svc.qos = node.get("x-qos").and_then(|q| qos::qos(d, q));
    svc.exec = exec::decode(d, node);
    process::decode(d, node, &mut svc.exec);
    svc.healthcheck = health::healthcheck(d, node.get("healthcheck"));
    svc
}

fn default_attachment() -> Attachment {
    Attachment {
        key: Spanned::new("default".into(), no_span()),
        ..Default::default()
    }
}

fn network_mode(d: &mut Decoder, node: &Node) -> Option<Spanned<NetworkMode>> {
    let s = d.string(node, "network_mode")?;
    let mode = match s.value.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        "bridge" | "default" => NetworkMode::Bridge,
        other => match other.split_once(':') {
            Some(("service", name)) if !name.is_empty() => NetworkMode::Service(name.to_string()),
            Some(("container", name)) if !name.is_empty() => {
                NetworkMode::Container(name.to_string())
            }
            _ => {
                d.invalid(
                    "network_mode",
                    node,
                    "unknown mode",
                    "use none, host, bridge, service:NAME or container:NAME",
                );
                return None;
            }
        },
    };
    Some(Spanned::new(mode, s.span))
}

fn attachments(d: &mut Decoder, nets: &Node, svc: &mut Service) {
    match &nets.value {
        Value::Seq(items) => {
            for item in items {
                if let Some(name) = d.string(item, "networks") {
                    let att = Attachment {
                        key: name.clone(),
                        ..Default::default()
                    };
                    svc.networks.insert(name.value, att);
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = Spanned::new(k.as_str().unwrap_or_default().to_string(), k.span);
                let att = attachment(d, key.clone(), v);
                svc.networks.insert(key.value, att);
            }
        }
        _ => d.wrong_type("networks", "a list or a mapping", nets),
    }
}

fn attachment(d: &mut Decoder, key: Spanned<String>, node: &Node) -> Attachment {
    let mut att = Attachment {
        key,
        ..Default::default()
    };
    if node.is_null() {
        return att;
    }
    if node.as_map().is_none() {
        d.wrong_type(&att.key.value, "a mapping", node);
        return att;
    }
    att.aliases = d.strings(node.get("aliases"), "aliases");
    att.ipv4_address = d.opt_ip(node, "ipv4_address");
    att.ipv6_address = d.opt_ip(node, "ipv6_address");
    att.link_local_ips = node
        .get("link_local_ips")
        .and_then(Node::as_seq)
        .map(|ips| {
            ips.iter()
                .filter_map(|n| d.ip(n, "link_local_ips"))
                .collect()
        })
        .unwrap_or_default();
    att.mac_address = d.opt_string(node, "mac_address");
    for (k, v) in d.dict(node.get("driver_opts"), "driver_opts", '=') {
        if k.value == crate::spec::ENDPOINT_IFNAME {
            att.endpoint_ifname = v.clone();
        }
        att.driver_opts
            .insert(k.value, v.map(|v| v.value).unwrap_or_default());
    }
    att.priority = node
        .get("priority")
        .and_then(|n| d.int(n, "priority"))
        .map_or(0, |v| v.value);
    att.gw_priority = node
        .get("gw_priority")
        .and_then(|n| d.int(n, "gw_priority"))
        .map_or(0, |v| v.value);
    att.interface_name = d.opt_string(node, "interface_name");
    att.qos = node.get("x-qos").and_then(|q| qos::qos(d, q));
    att
}

/// `extra_hosts` as a list (`host:ip` or `host=ip`) or a mapping (`host: ip`, or a list of ips).
fn extra_hosts(d: &mut Decoder, node: Option<&Node>) -> Vec<ExtraHost> {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let host = k.as_str().unwrap_or_default().to_string();
                for addr in d.strings(Some(v), "extra_hosts") {
                    out.extend(host_lines(d, &host, &addr.value, addr.span));
                }
            }
        }
        Value::Seq(items) => {
            let entries: Vec<_> = items
                .iter()
                .filter_map(|i| d.string(i, "extra_hosts"))
                .collect();
            for s in entries {
                let split = s.value.split_once('=').or_else(|| s.value.split_once(':'));
                match split {
                    Some((h, a)) => out.extend(host_lines(d, h, a, s.span)),
                    None => d.diags.push(crate::diag::ConfigError::InvalidValue {
                        what: "extra_hosts entry".into(),
                        value: s.value.clone(),
                        reason: "missing the address".into(),
                        hint: "write `host:address`, e.g. `db.local:10.0.0.5`".into(),
                        at: s.span,
                    }),
                }
            }
        }
        _ => d.wrong_type("extra_hosts", "a list or a mapping", node),
    }
    out
}

/// One entry per address: compose-go (types/hostList.go) splits `host=1.2.3.4,5.6.7.8` on
/// commas, and a hosts file takes one address per line. `[v6]` loses its brackets.
fn host_lines(
    d: &mut Decoder,
    host: &str,
    addrs: &str,
    span: crate::source::Span,
) -> Vec<ExtraHost> {
    let mut out = Vec::new();
    for a in addrs.split(',') {
        let addr = a.trim().trim_start_matches('[').trim_end_matches(']');
        if addr != "host-gateway" && addr.parse::<std::net::IpAddr>().is_err() {
            // A hosts line must start with an address: anything else would be malformed.
            d.diags.push(crate::diag::ConfigError::InvalidValue {
                what: "extra_hosts address".into(),
                value: a.to_string(),
                reason: format!("`{host}` needs an IP address or `host-gateway`"),
                hint: "write `host=address[,address...]`, e.g. `db.local=10.0.0.5`".into(),
                at: span,
            });
            continue;
        }
        out.push(ExtraHost {
            host: host.to_string(),
            addr: addr.to_string(),
            span,
        });
    }
    out
}

fn deploy(d: &mut Decoder, node: Option<&Node>) -> Deploy {
    let Some(node) = node.filter(|n| n.as_map().is_some()) else {
        return Deploy::default();
    };
    let endpoint_mode = d.opt_string(node, "endpoint_mode").and_then(|m| match m.value.as_str() {
        "vip" => Some(Spanned::new(EndpointMode::Vip, m.span)),
        "dnsrr" => Some(Spanned::new(EndpointMode::Dnsrr, m.span)),
        _ => {
            d.diags.push(crate::diag::ConfigError::InvalidValue {
                what: "endpoint_mode".into(),
                value: m.value.clone(),
                reason: "unknown mode".into(),
                hint: "use `vip` (one virtual IP balanced over replicas) or `dnsrr` (DNS round-robin)".into(),
                at: m.span,
            });
            None
        }
    });
    Deploy {
        replicas: node
            .get("replicas")
            .filter(|n| !n.is_null())
            .and_then(|n| d.count(n, "replicas")),
        mode: super::placement::mode(d, node),
        endpoint_mode,
        placement: super::placement::placement(d, node.get("placement")),
    }
}

fn links(d: &mut Decoder, node: Option<&Node>) -> Vec<Link> {
    d.strings(node, "links")
        .into_iter()
        .map(|s| {
            let (svc, alias) = match s.value.split_once(':') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (s.value.clone(), None),
            };
            Link {
                service: Spanned::new(svc, s.span),
                alias,
            }
        })
        .collect()
}
