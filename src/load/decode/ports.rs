//! `ports` (short and long syntax) and `expose`.

use super::Decoder;
use crate::load::node::{Node, Value};
use crate::spec::{Port, PortRange, Protocol, Spanned};
use std::net::IpAddr;

const PORT_HINT: &str = "short syntax: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL], e.g. 127.0.0.1:8080:80/tcp, [::1]:8080:80 or 9000-9002:9000-9002";

pub(super) fn ports(d: &mut Decoder, node: Option<&Node>) -> Vec<Port> {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Vec::new();
    };
    let Some(items) = node.as_seq() else {
        d.wrong_type("ports", "a list", node);
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match &item.value {
            Value::Map(_) => long_port(d, item),
            Value::Scalar { text, .. } => match parse_short_port(text) {
                Ok(mut p) => {
                    p.span = item.span;
                    Some(p)
                }
                Err(reason) => {
                    d.invalid("port", item, reason, PORT_HINT);
                    None
                }
            },
            _ => {
                d.wrong_type("ports", "a string, a number or a mapping", item);
                None
            }
        })
        .collect()
}

pub(super) fn expose(d: &mut Decoder, node: Option<&Node>) -> Vec<Spanned<PortRange>> {
    let mut out = Vec::new();
    for s in d.strings(node, "expose") {
        let text = s.value.split('/').next().unwrap_or_default();
        match port_range(text) {
            Ok(r) => out.push(Spanned::new(r, s.span)),
            Err(reason) => d.diags.push(crate::diag::ConfigError::InvalidValue {
                what: "expose".into(),
                value: s.value.clone(),
                reason,
                hint: "a port or a range, with an optional /tcp or /udp".into(),
                at: s.span,
            }),
        }
    }
    out
}

/// Parse `[HOST_IP:][HOST_PORT[-END]:]PORT[-END][/PROTO]`.
pub fn parse_short_port(text: &str) -> Result<Port, String> {
    let text = text.trim();
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((r, p)) => (r, protocol(p)?),
        None => (text, Protocol::Tcp),
    };
    let (host_ip, rest) = split_host_ip(rest)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [t] => (None, *t),
        [p, t] if host_ip.is_none() => (Some(*p), *t),
        [p, t] => (Some(*p), *t),
        [ip, p, t] if host_ip.is_none() => return with_plain_ip(ip, p, t, protocol),
        _ => return Err("too many `:` separators".into()),
    };
    build(host_ip, published, target, protocol)
}

fn with_plain_ip(
    ip: &str,
    published: &str,
    target: &str,
    protocol: Protocol,
) -> Result<Port, String> {
    let host_ip = ip
        .parse::<IpAddr>()
        .map_err(|_| format!("`{ip}` is not an IP address"))?;
    build(Some(host_ip), Some(published), target, protocol)
}

fn build(
    host_ip: Option<IpAddr>,
    published: Option<&str>,
    target: &str,
    protocol: Protocol,
) -> Result<Port, String> {
    let target = port_range(target)?;
    let published = published
        .filter(|p| !p.is_empty())
        .map(port_range)
        .transpose()?;
    if let Some(p) = published {
        if p.len() != target.len() && target.len() != 1 {
            return Err(format!(
                "host range {p} and container range {target} differ in size"
            ));
        }
    }
    Ok(Port {
        span: Default::default(),
        target,
        published,
        host_ip,
        protocol,
        mode: "ingress".into(),
        name: None,
        app_protocol: None,
    })
}

/// A leading `[v6]:` or nothing; a leading IPv4 with two more fields is handled by the caller.
fn split_host_ip(s: &str) -> Result<(Option<IpAddr>, &str), String> {
    let Some(inner) = s.strip_prefix('[') else {
        return Ok((None, s));
    };
    let (ip, rest) = inner
        .split_once("]:")
        .ok_or("an IPv6 host address in brackets must be followed by `:`")?;
    let ip = ip
        .parse::<IpAddr>()
        .map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
    Ok((Some(ip), rest))
}

fn protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(format!("unknown protocol `{other}` (tcp, udp or sctp)")),
    }
}

/// `80` or `8000-8010`.
pub fn port_range(s: &str) -> Result<PortRange, String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(_) => Err(format!("port {p} is out of range 1-65535")),
            Err(_) => Err(format!("`{p}` is not a port number")),
        }
    };
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if end < start {
        return Err(format!("range {start}-{end} ends before it starts"));
    }
    Ok(PortRange { start, end })
}

fn long_port(d: &mut Decoder, node: &Node) -> Option<Port> {
    let target_node = match node.get("target") {
        Some(t) => t,
        None => {
            d.invalid(
                "port",
                node,
                "long syntax needs `target`",
                "e.g. {target: 80, published: \"8080\"}",
            );
            return None;
        }
    };
    let fail = |d: &mut Decoder, n: &Node, r: String| {
        d.invalid("port", n, r, PORT_HINT);
        None::<Port>
    };
    let target = match target_node.as_str().map(port_range) {
        Some(Ok(t)) => t,
        Some(Err(r)) => return fail(d, target_node, r),
        None => return fail(d, target_node, "target must be a port".into()),
    };
    let published = match node.get("published").filter(|n| !n.is_null()) {
        Some(p) => match p.as_str().filter(|s| !s.is_empty()).map(port_range) {
            Some(Ok(r)) => Some(r),
            Some(Err(r)) => return fail(d, p, r),
            None => None,
        },
        None => None,
    };
    let host_ip = d.opt_ip(node, "host_ip").map(|s| s.value);
    let proto = match d.opt_string(node, "protocol") {
        Some(p) => match protocol(&p.value) {
            Ok(v) => v,
            Err(r) => return fail(d, node.get("protocol").unwrap_or(node), r),
        },
        None => Protocol::Tcp,
    };
    Some(Port {
        span: node.span,
        target,
        published,
        host_ip,
        protocol: proto,
        mode: d
            .opt_string(node, "mode")
            .map_or_else(|| "ingress".into(), |m| m.value),
        name: d.opt_string(node, "name").map(|s| s.value),
        app_protocol: d.opt_string(node, "app_protocol").map(|s| s.value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (Option<String>, Option<String>, String, Protocol) {
        let p = parse_short_port(s).unwrap();
        (
            p.host_ip.map(|i| i.to_string()),
            p.published.map(|r| r.to_string()),
            p.target.to_string(),
            p.protocol,
        )
    }

    #[test]
    fn short_forms() {
        assert_eq!(p("80"), (None, None, "80".into(), Protocol::Tcp));
        assert_eq!(
            p("8080:80"),
            (None, Some("8080".into()), "80".into(), Protocol::Tcp)
        );
        assert_eq!(
            p("53:53/udp"),
            (None, Some("53".into()), "53".into(), Protocol::Udp)
        );
        assert_eq!(
            p("127.0.0.1:8080:80"),
            (
                Some("127.0.0.1".into()),
                Some("8080".into()),
                "80".into(),
                Protocol::Tcp
            )
        );
        assert_eq!(
            p("127.0.0.1::80"),
            (Some("127.0.0.1".into()), None, "80".into(), Protocol::Tcp)
        );
        assert_eq!(
            p("[::1]:8080:80/udp"),
            (
                Some("::1".into()),
                Some("8080".into()),
                "80".into(),
                Protocol::Udp
            )
        );
        assert_eq!(
            p("9000-9002:9000-9002"),
            (
                None,
                Some("9000-9002".into()),
                "9000-9002".into(),
                Protocol::Tcp
            )
        );
    }

    #[test]
    fn short_errors() {
        for bad in [
            "0",
            "70000:80",
            "80:abc",
            "80/icmp",
            "9000-9002:80-81",
            "1.2.3:80:80",
            "[::1:80",
            "a:b:c:d",
        ] {
            assert!(parse_short_port(bad).is_err(), "{bad} should fail");
        }
    }
}
