//! Node tree → typed [`Project`](crate::spec::Project). Every value of a networking key is
//! checked for its type and form here (a CIDR parses, a port is a port); wrong values become
//! diagnostics at their span, and decoding goes on so that all problems are reported at once.

mod duration;
mod exec;
mod ext;
mod health;
mod network;
mod placement;
mod ports;
mod process;
mod qos;
mod service;

/// Load `yaml` as a project's only file, with exactly `environment` as the shell's variables:
/// the decoders' unit tests read what the whole loader makes of a key.
#[cfg(test)]
fn load_for_test(yaml: &str, environment: &[(&str, &str)]) -> crate::load::Loaded {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    crate::load::load(&crate::load::LoadOptions {
        files: vec![file],
        environment: Some(
            environment
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    })
    .unwrap()
}

use super::node::{Node, Value};
use crate::diag::{ConfigError, Diagnostics};
use crate::source::Span;
use crate::spec::{Project, Spanned};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

pub use duration::{parse_duration, DurationError};
pub use exec::{capability, resolve_exec, resolve_user, UserError};
pub use ports::parse_short_port;
pub use process::signal_number;

/// Decode a merged, interpolated tree.
pub fn project(root: &Node, name: &str, profiles: &[String], diags: &mut Diagnostics) -> Project {
    let mut d = Decoder { diags };
    let mut project = Project {
        name: name.to_string(),
        ..Default::default()
    };
    for (key, value) in d.entries(root.get("networks"), "networks") {
        let net = network::decode(&mut d, &key, value, name);
        project.networks.insert(key.value, net);
    }
    let services = d.entries(root.get("services"), "services");
    // Room for them at once: a service is a large struct, and growing the map by doubling
    // copied a big project's services over and over (a fifth of the decoding).
    project.services.reserve(services.len());
    for (key, value) in services {
        let active = service::profiles(&mut d, value);
        // `--profile '*'` enables every profile, as in compose-go.
        let enabled =
            profiles.iter().any(|p| p == "*") || active.iter().any(|p| profiles.contains(p));
        if !active.is_empty() && !enabled {
            project.inactive.insert(key.value, active);
            continue;
        }
        let svc = service::decode(&mut d, &key, value);
        project.services.insert(key.value, svc);
    }
    if let Some(checks) = root.get("x-checks") {
        project.checks = ext::checks(&mut d, checks);
    }
    if let Some(metrics) = root.get("x-metrics") {
        project.metrics = ext::metrics(&mut d, metrics);
    }
    network::add_implicit_networks(&mut project);
    project
}

/// Typed reads of scalar and container nodes that report a diagnostic on a wrong shape.
pub(crate) struct Decoder<'d> {
    pub diags: &'d mut Diagnostics,
}

impl Decoder<'_> {
    pub fn wrong_type(&mut self, key: &str, expected: &str, node: &Node) {
        // Quote a short scalar ("found `maybe`"): "found a scalar" does not say which value.
        let found = match node.as_str() {
            Some(t) if t.chars().count() <= 40 && !t.contains('\n') => format!("`{t}`"),
            _ => node.kind().to_string(),
        };
        self.diags.push(ConfigError::WrongType {
            key: key.to_string(),
            expected: expected.to_string(),
            found,
            at: node.span,
        });
    }

    pub fn invalid(
        &mut self,
        what: &str,
        node: &Node,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags.push(ConfigError::InvalidValue {
            what: what.to_string(),
            value: node.as_str().unwrap_or_default().to_string(),
            reason: reason.into(),
            hint: hint.into(),
            at: node.span,
        });
    }

    /// The entries of a mapping (null counts as empty), keys as spanned strings.
    pub fn entries<'n>(
        &mut self,
        node: Option<&'n Node>,
        key: &str,
    ) -> Vec<(Spanned<String>, &'n Node)> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Null => Vec::new(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        Spanned::new(k.as_str().unwrap_or_default().to_string(), k.span),
                        v,
                    )
                })
                .collect(),
            _ => {
                self.wrong_type(key, "a mapping", node);
                Vec::new()
            }
        }
    }

    pub fn string(&mut self, node: &Node, key: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Scalar { text, .. } => Some(Spanned::new(text.clone(), node.span)),
            _ => {
                self.wrong_type(key, "a string", node);
                None
            }
        }
    }

    pub fn opt_string(&mut self, parent: &Node, key: &str) -> Option<Spanned<String>> {
        parent
            .get(key)
            .filter(|n| !n.is_null())
            .and_then(|n| self.string(n, key))
    }

    pub fn bool(&mut self, node: &Node, key: &str) -> Option<Spanned<bool>> {
        let value = match node.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "yes" | "on") => true,
            Some("false" | "no" | "off") => false,
            _ => {
                self.wrong_type(key, "a boolean (true or false)", node);
                return None;
            }
        };
        Some(Spanned::new(value, node.span))
    }

    pub fn opt_bool(&mut self, parent: &Node, key: &str) -> Option<Spanned<bool>> {
        parent
            .get(key)
            .filter(|n| !n.is_null())
            .and_then(|n| self.bool(n, key))
    }

    pub fn int(&mut self, node: &Node, key: &str) -> Option<Spanned<i64>> {
        match node
            .as_str()
            .map(str::trim)
            .and_then(|t| t.parse::<i64>().ok())
        {
            Some(v) => Some(Spanned::new(v, node.span)),
            None => {
                self.wrong_type(key, "an integer", node);
                None
            }
        }
    }

    pub fn count(&mut self, node: &Node, key: &str) -> Option<Spanned<u32>> {
        let v = self.int(node, key)?;
        match u32::try_from(v.value) {
            Ok(n) if n <= 100_000 => Some(Spanned::new(n, v.span)),
            _ => {
                self.invalid(
                    key,
                    node,
                    "must be between 0 and 100000",
                    "a replica count is a small non-negative integer",
                );
                None
            }
        }
    }

    /// A string or a list of strings (the schema's string_or_list / list_of_strings).
    pub fn strings(&mut self, node: Option<&Node>, key: &str) -> Vec<Spanned<String>> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Null => Vec::new(),
            Value::Scalar { .. } => self.string(node, key).into_iter().collect(),
            Value::Seq(items) => items.iter().filter_map(|i| self.string(i, key)).collect(),
            Value::Map(_) => {
                self.wrong_type(key, "a string or a list of strings", node);
                Vec::new()
            }
        }
    }

    /// A mapping or a list of `KEY=value` strings (the schema's list_or_dict).
    pub fn dict(
        &mut self,
        node: Option<&Node>,
        key: &str,
        sep: char,
    ) -> Vec<(Spanned<String>, Option<Spanned<String>>)> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Null => Vec::new(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let key = Spanned::new(k.as_str().unwrap_or_default().to_string(), k.span);
                    let value = (!v.is_null()).then(|| self.string(v, &key.value)).flatten();
                    (key, value)
                })
                .collect(),
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| self.string(i, key))
                .map(|s| match s.value.split_once(sep) {
                    Some((k, v)) => (
                        Spanned::new(k.to_string(), s.span),
                        Some(Spanned::new(v.to_string(), s.span)),
                    ),
                    None => (Spanned::new(s.value.clone(), s.span), None),
                })
                .collect(),
            Value::Scalar { .. } => {
                self.wrong_type(key, "a mapping or a list", node);
                Vec::new()
            }
        }
    }

    pub fn ip(&mut self, node: &Node, what: &str) -> Option<Spanned<IpAddr>> {
        let s = self.string(node, what)?;
        match s.value.trim().parse::<IpAddr>() {
            Ok(ip) => Some(Spanned::new(ip, s.span)),
            Err(_) => {
                self.invalid(
                    what,
                    node,
                    "not an IP address",
                    "write an IPv4 address like 10.0.0.5 or an IPv6 address like fd00::5",
                );
                None
            }
        }
    }

    pub fn opt_ip(&mut self, parent: &Node, key: &str) -> Option<Spanned<IpAddr>> {
        parent
            .get(key)
            .filter(|n| !n.is_null())
            .and_then(|n| self.ip(n, key))
    }

    pub fn cidr(&mut self, node: &Node, what: &str) -> Option<Spanned<IpNetwork>> {
        let s = self.string(node, what)?;
        match parse_cidr(s.value.trim()) {
            Ok(net) => Some(Spanned::new(net, s.span)),
            Err(reason) => {
                self.invalid(
                    what,
                    node,
                    reason,
                    "write a network in CIDR form, like 10.0.0.0/24 or fd00:1::/64",
                );
                None
            }
        }
    }
}

/// A CIDR with a prefix length, rejecting the ambiguous bare address form.
pub fn parse_cidr(s: &str) -> Result<IpNetwork, String> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err("missing the /prefix length".into());
    };
    // Parsed in two parts so that the reason names the part that is wrong (ipnetwork says
    // "invalid address" for a prefix length out of range).
    let ip = addr
        .parse::<IpAddr>()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("the prefix length must be a number from 0 to {max}"))?;
    IpNetwork::new(ip, prefix).map_err(|e| format!("not a CIDR ({e})"))
}

/// A span for a key that was not written (implicit values).
pub(crate) fn no_span() -> Span {
    Span::default()
}
