//! Which VIPs a replica's policies make useless to it: when a service's ingress policy turns
//! another service away on every port, a replica of the other service has no use for the VIP's
//! chain and map of backends, which would all drop what it sends. Its table drops the VIP in
//! the dispatch instead (`VIP : drop`), as the backends would, and saves the kernel a chain
//! and a map of backends per such VIP in each of its namespaces (with many services under
//! default-deny policies, most of them).
//!
//! Only a refusal that holds whatever addresses the replicas get is taken: a catch-all deny
//! for the family, and no allow that could match the client (one naming it, or any CIDR).
//! Then a scale, which changes addresses, never changes which VIPs a table drops.

use crate::model::resource::{RefusedVip, Vip};
use crate::spec::{Peer, PolicyEntry, Project};

/// Whether `server`'s ingress policy drops every packet of family `ipv6` from `client`.
pub fn refuses(project: &Project, server: &str, client: &str, ipv6: bool) -> bool {
    // A replica's connection to its own service's VIP may be DNATed to itself and arrive on
    // `lo`, which the policy accepts.
    if server == client {
        return false;
    }
    may_refuse(project, server, ipv6)
        && !ingress(project, server).any(|e| matches!(&e.peer, Peer::Service(s) if s == client))
}

/// The part of [`refuses`] that does not depend on the client: a catch-all deny for the
/// family, and no CIDR allowed, at the service or on its networks.
fn may_refuse(project: &Project, server: &str, ipv6: bool) -> bool {
    let Some(policy) = project.services.get(server).and_then(|s| s.policy.as_ref()) else {
        return false;
    };
    let catch_all = |e: &PolicyEntry| {
        e.port.is_none()
            && e.protocol.is_none()
            && matches!(e.peer, Peer::Cidr(c) if c.prefix() == 0 && c.is_ipv6() == ipv6)
    };
    policy.ingress.deny.iter().any(|e| catch_all(&e.value))
        && !ingress(project, server).any(|e| matches!(e.peer, Peer::Cidr(_)))
}

/// The ingress allows of `server`'s policy and of its networks' (each attached network's
/// policy may allow on its interface what the service's denies).
fn ingress<'a>(project: &'a Project, server: &str) -> impl Iterator<Item = &'a PolicyEntry> {
    let svc = project.services.get(server);
    let networks = svc
        .into_iter()
        .flat_map(|s| s.networks.keys())
        .filter_map(|n| project.networks.get(n)?.policy.as_ref());
    svc.and_then(|s| s.policy.as_ref())
        .into_iter()
        .chain(networks)
        .flat_map(|p| &p.ingress.allow)
        .map(|e| &e.value)
}

/// The VIPs among `vips` that some client may be refused ([`refuses`]), for either family:
/// worked out once per network, so that each list of networks checks only these (in a big
/// project few services deny everything, and every service's tables would otherwise check
/// every VIP of their networks).
pub fn strict<'a>(project: &Project, vips: &[&'a Vip]) -> Vec<&'a Vip> {
    vips.iter()
        .copied()
        .filter(|v| {
            v.addresses
                .iter()
                .any(|a| may_refuse(project, &v.service, a.is_ipv6()))
        })
        .collect()
}

/// The VIPs among `vips` that a replica of `client` drops, sorted, each service and family once.
pub fn refused<'a>(
    project: &Project,
    client: &str,
    vips: impl IntoIterator<Item = &'a Vip>,
) -> Vec<RefusedVip> {
    let mut out: Vec<RefusedVip> = vips
        .into_iter()
        .flat_map(|v| v.addresses.iter().map(move |a| (v, a.is_ipv6())))
        .filter(|(v, ipv6)| refuses(project, &v.service, client, *ipv6))
        .map(|(v, ipv6)| RefusedVip {
            service: v.service.clone(),
            ipv6,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Span;
    use crate::spec::{Attachment, Network, Policy, PortRange, Protocol, Rules, Service, Spanned};

    fn entry(peer: &str, port: Option<u16>) -> Spanned<PolicyEntry> {
        let peer = match peer.parse::<ipnetwork::IpNetwork>() {
            Ok(c) => Peer::Cidr(c),
            Err(_) => Peer::Service(peer.to_string()),
        };
        Spanned::new(
            PolicyEntry {
                peer,
                port: port.map(|p| PortRange { start: p, end: p }),
                protocol: port.map(|_| Protocol::Tcp),
            },
            Span::default(),
        )
    }

    fn ingress(allow: &[(&str, Option<u16>)], deny: &[&str]) -> Option<Policy> {
        Some(Policy {
            ingress: Rules {
                allow: allow.iter().map(|(p, port)| entry(p, *port)).collect(),
                deny: deny.iter().map(|p| entry(p, None)).collect(),
            },
            egress: Rules::default(),
        })
    }

    /// `web` on network `front` with `policy`, and `front` with `network_policy`.
    fn project(policy: Option<Policy>, network_policy: Option<Policy>) -> Project {
        let mut p = Project::default();
        let mut web = Service {
            policy,
            ..Default::default()
        };
        web.networks.insert("front".into(), Attachment::default());
        p.services.insert("web".into(), web);
        p.networks.insert(
            "front".into(),
            Network {
                policy: network_policy,
                ..Default::default()
            },
        );
        p
    }

    #[test]
    fn a_default_deny_without_an_allow_for_the_client_refuses_it() {
        let p = project(
            ingress(&[("api", None), ("client", Some(5201))], &["0.0.0.0/0"]),
            None,
        );
        assert!(refuses(&p, "web", "db", false));
        // Allowed on one port, or itself: kept.
        assert!(!refuses(&p, "web", "client", false));
        assert!(!refuses(&p, "web", "web", false));
        // No catch-all for IPv6.
        assert!(!refuses(&p, "web", "db", true));
    }

    #[test]
    fn a_cidr_allow_a_port_deny_or_a_network_allow_keeps_the_vip() {
        let cidr = project(ingress(&[("10.9.0.0/16", None)], &["0.0.0.0/0"]), None);
        assert!(!refuses(&cidr, "web", "db", false));
        let port_deny = project(
            Some(Policy {
                ingress: Rules {
                    allow: vec![],
                    deny: vec![entry("0.0.0.0/0", Some(80))],
                },
                egress: Rules::default(),
            }),
            None,
        );
        assert!(!refuses(&port_deny, "web", "db", false));
        let network = project(ingress(&[], &["0.0.0.0/0"]), ingress(&[("db", None)], &[]));
        assert!(!refuses(&network, "web", "db", false));
        assert!(refuses(&network, "web", "api", false));
        assert!(!refuses(&project(None, None), "web", "db", false));
    }
}
