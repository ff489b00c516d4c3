//! Names that become kernel or DNS names: interface names (15 bytes, IFNAMSIZ - 1), host
//! names (RFC 1123), namespace file names, MAC addresses and namespaced sysctls.

use crate::diag::{ConfigError, Diagnostics};
use crate::source::Span;
use crate::spec::{Project, Spanned};

/// Linux's IFNAMSIZ is 16 including the terminating NUL.
pub const IFNAME_MAX: usize = 15;

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    for net in project.networks.values() {
        for key in ["com.docker.network.bridge.name", "parent"] {
            if let Some(v) = net.driver_opts.get(key) {
                ifname(v, &format!("the interface name in `{key}`"), diags);
            }
        }
    }
    for svc in project.services.values() {
        let mut seen: Vec<&str> = Vec::new();
        for att in svc.networks.values() {
            if let Some(name) = att.ifname() {
                ifname(name, "an interface name", diags);
                if seen.contains(&name.value.as_str()) {
                    bad(
                        &name.value,
                        "an interface name",
                        "it is used twice in this service",
                        "give each attachment its own interface_name",
                        name.span,
                        diags,
                    );
                }
                seen.push(&name.value);
            }
            if let Some(mac) = &att.mac_address {
                mac_address(mac, diags);
            }
        }
        if let Some(mac) = &svc.mac_address {
            mac_address(mac, diags);
        }
        if let Some(h) = &svc.hostname {
            hostname(h, diags);
        }
        let ns = format!(
            "{}-{}-{}",
            project.name,
            svc.key.value,
            svc.replicas().max(1)
        );
        if ns.len() > 200 {
            bad(
                &svc.key.value,
                "a service name",
                "the namespace name would be too long",
                "shorten the service or project name",
                svc.key.span,
                diags,
            );
        }
        for (key, value) in &svc.sysctls {
            if !key.starts_with("net.") {
                bad(
                    key,
                    "a sysctl",
                    "only net.* sysctls are per network namespace",
                    "set other sysctls on the host",
                    value.span,
                    diags,
                );
            }
        }
    }
}

fn bad(name: &str, what: &str, reason: &str, hint: &str, at: Span, diags: &mut Diagnostics) {
    diags.push(ConfigError::BadName {
        name: name.into(),
        what: what.into(),
        reason: reason.into(),
        hint: hint.into(),
        at,
    });
}

/// Why a string cannot be a Linux interface name, if it cannot.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > IFNAME_MAX {
        Some("interface names are at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is a reserved name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("interface names cannot hold `/`, `:` or spaces")
    } else {
        None
    }
}

fn ifname(name: &Spanned<String>, what: &str, diags: &mut Diagnostics) {
    if let Some(reason) = ifname_problem(&name.value) {
        bad(
            &name.value,
            what,
            reason,
            "use at most 15 letters, digits, `-`, `_` or `.`",
            name.span,
            diags,
        );
    }
}

fn hostname(h: &Spanned<String>, diags: &mut Diagnostics) {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.value.len() > 253 || !h.value.split('.').all(label_ok) {
        bad(
            &h.value,
            "a hostname",
            "not a valid RFC 1123 host name",
            "letters, digits and `-` in dot-separated labels of at most 63 characters",
            h.span,
            diags,
        );
    }
}

fn mac_address(mac: &Spanned<String>, diags: &mut Diagnostics) {
    if crate::ipam::mac::parse_mac(&mac.value).is_none() {
        diags.push(ConfigError::InvalidValue {
            what: "MAC address".into(),
            value: mac.value.clone(),
            reason: "not six hex octets".into(),
            hint: "write it as 02:42:ac:11:00:02".into(),
            at: mac.span,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(ifname_problem("eth0").is_none());
        assert!(ifname_problem("a-very-long-name-x").is_some());
        assert!(ifname_problem("a/b").is_some());
        assert!(ifname_problem("").is_some());
    }
}
