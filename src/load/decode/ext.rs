//! netcompose's extension keys: `x-policy`, `x-run`, `x-checks` and `x-metrics` (design.md).

use super::{parse_cidr, ports::port_range, Decoder};
use crate::load::node::{Node, Value};
use crate::spec::{
    Check, CheckFamily, CheckProtocol, Expect, Metrics, Peer, Policy, PolicyEntry, Protocol, Rules,
    Spanned,
};

const POLICY_HINT: &str = "an entry is a CIDR or a service name, with an optional port and protocol: 10.0.0.0/8, web, web:80/tcp, 192.168.1.0/24:53/udp";

pub(super) fn policy(d: &mut Decoder, node: &Node) -> Policy {
    if node.as_map().is_none() && !node.is_null() {
        d.wrong_type("x-policy", "a mapping with ingress and/or egress", node);
        return Policy::default();
    }
    let mut p = Policy::default();
    for (key, value) in d.entries(Some(node), "x-policy") {
        match key.value.as_str() {
            "ingress" => p.ingress = rules(d, value, "x-policy.ingress"),
            "egress" => p.egress = rules(d, value, "x-policy.egress"),
            other => unknown(d, other, &key, &["ingress", "egress"], "x-policy"),
        }
    }
    p
}

fn rules(d: &mut Decoder, node: &Node, place: &str) -> Rules {
    let mut r = Rules::default();
    for (key, value) in d.entries(Some(node), place) {
        let list = match key.value.as_str() {
            "allow" => &mut r.allow,
            "deny" => &mut r.deny,
            other => {
                unknown(d, other, &key, &["allow", "deny"], place);
                continue;
            }
        };
        for s in d.strings(Some(value), &key.value) {
            match parse_policy_entry(&s.value) {
                Ok(e) => list.push(Spanned::new(e, s.span)),
                Err(reason) => d.diags.push(crate::diag::ConfigError::InvalidValue {
                    what: "x-policy entry".into(),
                    value: s.value.clone(),
                    reason,
                    hint: POLICY_HINT.into(),
                    at: s.span,
                }),
            }
        }
    }
    r
}

pub(super) fn unknown(
    d: &mut Decoder,
    key: &str,
    at: &Spanned<String>,
    known: &[&str],
    place: &str,
) {
    let hint = match crate::diag::did_you_mean(key, known.iter().copied()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!("expected one of: {}", known.join(", ")),
    };
    d.diags.push(crate::diag::ConfigError::UnknownKey {
        key: key.into(),
        place: format!("`{place}`"),
        hint,
        at: at.span,
    });
}

/// `CIDR`, `ADDRESS`, `SERVICE`, each with an optional `:PORT[-END]` and `/tcp|udp`.
/// An IPv6 peer with a port is written in brackets: `[fd00::/64]:443`.
pub fn parse_policy_entry(text: &str) -> Result<PolicyEntry, String> {
    let text = text.trim();
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((r, "tcp")) => (r, Some(Protocol::Tcp)),
        Some((r, "udp")) => (r, Some(Protocol::Udp)),
        _ => (text, None),
    };
    let whole = match peer(rest) {
        Ok(_) if protocol.is_some() => {
            return Err("a protocol needs a port (e.g. web:53/udp)".into())
        }
        Ok(peer) => {
            return Ok(PolicyEntry {
                peer,
                port: None,
                protocol,
            })
        }
        Err(e) => e,
    };
    // Without a `:PORT` part the entry is only a peer: its own error says what is wrong
    // (e.g. a prefix length out of range), better than a generic one.
    let (peer_text, port_text) = rest.rsplit_once(':').ok_or(whole)?;
    let port = port_range(port_text)?;
    let peer_text = peer_text.trim_start_matches('[').trim_end_matches(']');
    Ok(PolicyEntry {
        peer: peer(peer_text)?,
        port: Some(port),
        protocol: protocol.or(Some(Protocol::Tcp)),
    })
}

fn peer(s: &str) -> Result<Peer, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        return ipnetwork::IpNetwork::new(ip, prefix)
            .map(Peer::Cidr)
            .map_err(|e| e.to_string());
    }
    if s.contains('/') {
        return parse_cidr(s).map(Peer::Cidr);
    }
    let is_name = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if is_name && !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        Ok(Peer::Service(s.to_string()))
    } else {
        Err(format!("`{s}` is neither a CIDR nor a service name"))
    }
}

/// `x-run`: a string runs through `/bin/sh -c`; a list is the argv.
pub(super) fn run(d: &mut Decoder, node: &Node) -> Option<Spanned<Vec<String>>> {
    match &node.value {
        Value::Scalar { text, .. } => Some(Spanned::new(
            vec!["/bin/sh".into(), "-c".into(), text.clone()],
            node.span,
        )),
        Value::Seq(_) => {
            let argv: Vec<String> = d
                .strings(Some(node), "x-run")
                .into_iter()
                .map(|s| s.value)
                .collect();
            (!argv.is_empty()).then(|| Spanned::new(argv, node.span))
        }
        Value::Null => None,
        Value::Map(_) => {
            d.wrong_type("x-run", "a command string or a list", node);
            None
        }
    }
}

/// `x-metrics: {listen: "127.0.0.1:9911"}`. The metrics name every service, replica, network
/// and address of the project and have no authentication, so they are served on a loopback
/// or private address only: 0.0.0.0 or a public address would publish the topology to
/// whoever reaches the host (put a proxy with TLS and authentication in front for that).
pub(super) fn metrics(d: &mut Decoder, node: &Node) -> Option<Metrics> {
    if node.is_null() {
        return None;
    }
    if node.as_map().is_none() {
        d.wrong_type("x-metrics", "a mapping with `listen`", node);
        return None;
    }
    for (key, _) in d.entries(Some(node), "x-metrics") {
        if key.value != "listen" {
            unknown(d, &key.value.clone(), &key, &["listen"], "x-metrics");
        }
    }
    let Some(listen) = d.opt_string(node, "listen") else {
        d.invalid(
            "x-metrics",
            node,
            "`listen` is missing",
            "x-metrics: {listen: \"127.0.0.1:9911\"}",
        );
        return None;
    };
    let at = node.get("listen").unwrap_or(node);
    let Ok(addr) = listen.value.parse::<std::net::SocketAddr>() else {
        d.invalid(
            "x-metrics.listen",
            at,
            "not an address and port",
            "an IP address and a port: \"127.0.0.1:9911\" or \"[::1]:9911\"",
        );
        return None;
    };
    if !private(addr.ip()) {
        d.invalid(
            "x-metrics.listen",
            at,
            "metrics are served on a loopback or private address only",
            "the metrics are unauthenticated and name the whole topology: use 127.0.0.1, ::1 \
             or an address of 10/8, 172.16/12, 192.168/16 or fc00::/7",
        );
        return None;
    }
    Some(Metrics {
        listen: Spanned::new(addr, listen.span),
    })
}

/// Loopback, RFC 1918 or unique-local: not reachable from the Internet.
fn private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

pub(super) fn checks(d: &mut Decoder, node: &Node) -> Vec<Check> {
    if node.is_null() {
        return Vec::new();
    }
    let Some(items) = node.as_seq() else {
        d.wrong_type("x-checks", "a list of checks", node);
        return Vec::new();
    };
    items.iter().filter_map(|i| check(d, i)).collect()
}

const CHECK_KEYS: &[&str] = &["from", "to", "port", "protocol", "family", "expect"];

fn check(d: &mut Decoder, node: &Node) -> Option<Check> {
    if node.as_map().is_none() {
        d.wrong_type("x-checks[]", "a mapping with from, to and expect", node);
        return None;
    }
    for (key, _) in d.entries(Some(node), "x-checks[]") {
        if !CHECK_KEYS.contains(&key.value.as_str()) {
            unknown(d, &key.value.clone(), &key, CHECK_KEYS, "x-checks[]");
        }
    }
    let required = |d: &mut Decoder, key: &str| {
        let v = d.opt_string(node, key);
        if v.is_none() {
            bad_check(
                d,
                node,
                format!("an x-checks entry is missing `{key}`"),
                "a check needs `from` and `to`",
            );
        }
        v
    };
    let from = required(d, "from");
    let to = required(d, "to");
    let port = node
        .get("port")
        .and_then(|p| d.int(p, "port"))
        .and_then(|p| match u16::try_from(p.value) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                d.invalid(
                    "port",
                    node.get("port").unwrap_or(node),
                    "out of range 1-65535",
                    "a TCP or UDP port",
                );
                None
            }
        });
    let protocol = match d.opt_string(node, "protocol").map(|p| p.value) {
        None if port.is_some() => CheckProtocol::Tcp,
        None => CheckProtocol::Icmp,
        Some(p) => match p.as_str() {
            "tcp" => CheckProtocol::Tcp,
            "udp" => CheckProtocol::Udp,
            "icmp" => CheckProtocol::Icmp,
            _ => {
                d.invalid(
                    "protocol",
                    node.get("protocol").unwrap_or(node),
                    "unknown protocol",
                    "tcp, udp or icmp",
                );
                return None;
            }
        },
    };
    if protocol != CheckProtocol::Icmp && port.is_none() {
        bad_check(
            d,
            node,
            "tcp and udp checks need a `port`".into(),
            "add `port: N`, or use `protocol: icmp`",
        );
    }
    let family = match d.opt_string(node, "family").map(|f| f.value).as_deref() {
        None => None,
        Some("ipv4") => Some(CheckFamily::Ipv4),
        Some("ipv6") => Some(CheckFamily::Ipv6),
        Some(_) => {
            d.invalid(
                "family",
                node.get("family").unwrap_or(node),
                "unknown address family",
                "ipv4 or ipv6",
            );
            return None;
        }
    };
    let expect = match d.opt_string(node, "expect").map(|e| e.value).as_deref() {
        None | Some("reach") => Expect::Reach,
        Some("blocked") => Expect::Blocked,
        Some(_) => {
            d.invalid(
                "expect",
                node.get("expect").unwrap_or(node),
                "unknown expectation",
                "reach or blocked",
            );
            return None;
        }
    };
    Some(Check {
        span: node.span,
        from: from?,
        to: to?,
        port,
        protocol,
        family,
        expect,
    })
}

/// A problem with a whole x-checks entry: a mapping has no single value to quote, so this is
/// not an InvalidValue (whose message would read "invalid check ``").
fn bad_check(d: &mut Decoder, node: &Node, message: String, hint: &str) {
    d.diags.push(crate::diag::ConfigError::Invalid {
        message,
        hint: hint.into(),
        at: node.span,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_entries() {
        let e = parse_policy_entry("10.0.0.0/8").unwrap();
        assert_eq!(e.to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_policy_entry("web:80/tcp").unwrap().to_string(),
            "web:80/tcp"
        );
        assert_eq!(
            parse_policy_entry("web:53/udp").unwrap().to_string(),
            "web:53/udp"
        );
        assert_eq!(
            parse_policy_entry("web:8080").unwrap().to_string(),
            "web:8080/tcp"
        );
        assert_eq!(
            parse_policy_entry("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_policy_entry("[fd00::/64]:443").unwrap().to_string(),
            "fd00::/64:443/tcp"
        );
        assert_eq!(
            parse_policy_entry("0.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        for bad in ["10.0.0.0/33", "web:0", "web/tcp", "a b", "1.2.3"] {
            assert!(parse_policy_entry(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    #[test]
    fn x_metrics_listens_on_loopback_or_private_addresses_only() {
        let load = |listen: &str| {
            super::super::load_for_test(
                &format!("name: m\nx-metrics: {{listen: \"{listen}\"}}\nservices: {{a: {{}}}}\n"),
                &[],
            )
        };
        for ok in ["127.0.0.1:9911", "[::1]:9911", "10.1.2.3:80", "[fd00::1]:9"] {
            let l = load(ok);
            assert!(l.diags.errors.is_empty(), "{ok}: {:?}", l.diags.errors);
            assert_eq!(l.project.metrics.unwrap().listen.value.to_string(), ok);
        }
        for bad in [
            "0.0.0.0:9911",
            "8.8.8.8:80",
            "[::]:9911",
            "localhost:9911",
            "127.0.0.1",
        ] {
            let l = load(bad);
            assert_eq!(l.diags.errors.len(), 1, "{bad}: {:?}", l.diags.errors);
            assert!(l.project.metrics.is_none());
        }
    }
}
