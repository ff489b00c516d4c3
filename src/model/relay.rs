//! Published ports on [::1], relayed by the daemon. A connection to 127.0.0.1 is DNATed onto
//! a bridge thanks to `route_localnet`, but IPv6 has no equivalent: the kernel will not route
//! a packet from ::1 off the host, so a DNAT of [::1]:PORT sends nothing anywhere. Docker
//! serves [::1] with its userland proxy (docker-proxy); netavark does not serve it at all
//! (<https://github.com/containers/netavark/issues/790>, "the kernel does not support ipv6
//! port forwarding via DNAT on localhost ... we would need a user space proxy"). netcompose
//! does what Docker does: the daemon listens on [::1]:PORT in the host namespace and relays
//! each connection (or UDP flow) to a random replica's IPv6 address.

use super::endpoints::{endpoints, replicas, EndpointIndex};
use super::ports::publications;
use super::resource::{Bridge, Publish, Spec};
use super::{Desired, Listening};
use crate::spec::{Project, Protocol};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv6Addr};

/// One host port on [::1] and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopbackRelay {
    pub protocol: RelayProtocol,
    /// The port on [::1].
    pub port: u16,
    /// The port on the replicas.
    pub target: u16,
    /// The replicas' IPv6 addresses; each new connection or flow goes to one at random.
    pub backends: Vec<IpAddr>,
}

/// The protocols the daemon relays (SCTP ports are published by rules only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayProtocol {
    Tcp,
    Udp,
}

/// The relays of a project: every IPv6 publication that covers ::1 (no host address, `::` or
/// `::1`), one per host port.
pub fn relays(project: &Project, desired: &Desired) -> Vec<LoopbackRelay> {
    let reps = replicas(project);
    let eps = endpoints(project, &reps, &desired.allocations);
    let index = EndpointIndex::new(&eps);
    let bridges: Vec<&Bridge> = desired
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Bridge(b) => Some(b),
            _ => None,
        })
        .collect();
    let mut out: Vec<LoopbackRelay> =
        publications(project, &index, &bridges, &desired.allocations, None)
            .iter()
            .filter(|p| covers_loopback6(p))
            .flat_map(expand)
            .collect();
    out.sort_by_key(|r| (r.protocol, r.port));
    out.dedup_by_key(|r| (r.protocol, r.port));
    out
}

impl LoopbackRelay {
    /// Whether a socket of the host is this relay's own (the daemon's, on [::1]).
    pub fn holds(&self, l: &Listening) -> bool {
        let protocol = match self.protocol {
            RelayProtocol::Tcp => Protocol::Tcp,
            RelayProtocol::Udp => Protocol::Udp,
        };
        l.addr == IpAddr::V6(Ipv6Addr::LOCALHOST) && l.protocol == protocol && l.port == self.port
    }
}

fn covers_loopback6(p: &Publish) -> bool {
    let v6 = p.backends.first().is_some_and(IpAddr::is_ipv6);
    let on_loopback = match p.host_ip {
        None => true,
        Some(IpAddr::V6(ip)) => ip.is_unspecified() || ip == Ipv6Addr::LOCALHOST,
        Some(IpAddr::V4(_)) => false,
    };
    v6 && on_loopback
}

/// One relay per host port of the publication (a range maps port by port, or many to one).
fn expand(p: &Publish) -> Vec<LoopbackRelay> {
    let protocol = match p.protocol {
        Protocol::Tcp => RelayProtocol::Tcp,
        Protocol::Udp => RelayProtocol::Udp,
        Protocol::Sctp => return Vec::new(),
    };
    (0..p.published.len())
        .filter_map(|i| {
            let port = p.published.start.checked_add(u16::try_from(i).ok()?)?;
            let target = if p.target.start == p.target.end {
                p.target.start
            } else {
                p.target.start.checked_add(u16::try_from(i).ok()?)?
            };
            Some(LoopbackRelay {
                protocol,
                port,
                target,
                backends: p.backends.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PortRange;

    fn publish(host_ip: Option<&str>, backend: &str, published: (u16, u16)) -> Publish {
        Publish {
            service: "web".into(),
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|i| i.parse().unwrap()),
            published: PortRange {
                start: published.0,
                end: published.1,
            },
            target: PortRange { start: 80, end: 80 },
            backends: vec![backend.parse().unwrap()],
            bridge: "br".into(),
            remote: vec![],
            peers: vec![],
        }
    }

    #[test]
    fn only_ipv6_publications_that_cover_loopback_are_relayed() {
        for (host_ip, backend, relayed) in [
            (None, "fd00::2", true),
            (Some("::"), "fd00::2", true),
            (Some("::1"), "fd00::2", true),
            (Some("fd00:1::5"), "fd00::2", false),
            (None, "10.0.0.2", false),
            (Some("127.0.0.1"), "10.0.0.2", false),
        ] {
            assert_eq!(
                covers_loopback6(&publish(host_ip, backend, (8080, 8080))),
                relayed,
                "{host_ip:?} → {backend}"
            );
        }
    }

    #[test]
    fn a_relay_holds_only_its_own_loopback_socket() {
        let r = &expand(&publish(None, "fd00::2", (8080, 8080)))[0];
        let socket = |addr: &str, protocol, port| Listening {
            protocol,
            addr: addr.parse().unwrap(),
            port,
        };
        assert!(r.holds(&socket("::1", Protocol::Tcp, 8080)));
        assert!(!r.holds(&socket("::", Protocol::Tcp, 8080)));
        assert!(!r.holds(&socket("::1", Protocol::Udp, 8080)));
        assert!(!r.holds(&socket("::1", Protocol::Tcp, 8081)));
    }

    #[test]
    fn a_range_to_one_port_is_one_relay_per_host_port() {
        let r = expand(&publish(None, "fd00::2", (8080, 8081)));
        assert_eq!(
            r.iter().map(|r| (r.port, r.target)).collect::<Vec<_>>(),
            vec![(8080, 80), (8081, 80)]
        );
    }
}
