//! The embedded resolver: 127.0.0.11:53 (UDP and TCP) inside every replica namespace.
//!
//! - [`Snapshot`]: the records, compiled from a [`DaemonConfig`] for fast lookups; the
//!   daemon swaps a whole snapshot at once on reload, so a query sees either the old records or
//!   the new ones, never a mix.
//! - [`answer`]: the request handler, a pure function from (snapshot, namespace, packet) to a
//!   reply, a forward, or nothing; it is what the fuzz test drives.
//! - [`forward`]: upstream queries, with fast failover.
//! - [`server`]: the sockets, opened on a thread that entered each namespace; TCP is served
//!   from the async runtime, UDP by [`udp`]'s worker threads, which answer every namespace's
//!   queries in batches ([`mmsg`]).
//! - [`counters`]: per replica, the queries answered, forwarded and failed.

pub mod answer;
pub mod counters;
pub mod forward;
pub mod mmsg;
pub mod server;
mod udp;

use crate::model::daemon::{DaemonConfig, Upstream};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

/// TTL of names whose answers change when a service scales (service names, `tasks.*`,
/// aliases, hostnames): clients must not hold a stale replica set for long.
pub const SCALING_TTL: u32 = 5;
/// TTL of replica names, which keep their address as long as the replica exists.
pub const STABLE_TTL: u32 = 60;

/// One name's answer on one network.
#[derive(Debug, Clone)]
pub struct Entry {
    pub addrs: Vec<IpAddr>,
    pub ttl: u32,
}

#[derive(Debug, Default)]
pub struct Net {
    /// Lower-case suffixes of the `<name>.<network>` form.
    pub names: Vec<String>,
    pub subnets: Vec<IpNetwork>,
    pub records: HashMap<String, Entry>,
    pub reverse: HashMap<IpAddr, Vec<String>>,
    /// `links` aliases: service → name → answer, for that service's replicas only.
    pub links: HashMap<String, HashMap<String, Entry>>,
}

#[derive(Debug, Default)]
pub struct NsView {
    /// The service whose replica this namespace is (for its `links` aliases).
    pub service: String,
    /// Indexes into [`Snapshot::networks`], in interface order.
    pub networks: Vec<usize>,
    pub upstreams: Vec<Upstream>,
}

/// The records of a project, ready to answer from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub networks: Vec<Net>,
    pub namespaces: HashMap<String, NsView>,
}

impl Snapshot {
    pub fn compile(cfg: &DaemonConfig, generation: u64) -> Snapshot {
        let mut index = HashMap::new();
        let mut networks = Vec::new();
        for (key, v) in &cfg.networks {
            index.insert(key.as_str(), networks.len());
            let records = v
                .records
                .iter()
                .map(|(name, addrs)| {
                    let ttl = if v.stable.contains(name) {
                        STABLE_TTL
                    } else {
                        SCALING_TTL
                    };
                    (
                        name.clone(),
                        Entry {
                            addrs: addrs.clone(),
                            ttl,
                        },
                    )
                })
                .collect();
            let mut names = v.names.clone();
            if names.is_empty() {
                names.push(key.to_ascii_lowercase());
            }
            let links = v
                .links
                .iter()
                .map(|(svc, names)| {
                    let names = names
                        .iter()
                        .map(|(n, addrs)| {
                            let entry = Entry {
                                addrs: addrs.clone(),
                                ttl: SCALING_TTL,
                            };
                            (n.clone(), entry)
                        })
                        .collect();
                    (svc.clone(), names)
                })
                .collect();
            networks.push(Net {
                names,
                subnets: v.subnets.clone(),
                records,
                reverse: v.reverse.iter().map(|(k, v)| (*k, v.clone())).collect(),
                links,
            });
        }
        let namespaces = cfg
            .namespaces
            .iter()
            .map(|(name, v)| {
                (
                    name.clone(),
                    NsView {
                        service: v.service.clone(),
                        networks: v
                            .networks
                            .iter()
                            .filter_map(|n| index.get(n.as_str()).copied())
                            .collect(),
                        upstreams: v.upstreams.clone(),
                    },
                )
            })
            .collect();
        Snapshot {
            generation,
            networks,
            namespaces,
        }
    }

    /// `name` (lower case, no trailing dot) as seen from `ns`: the service's `links` aliases,
    /// then the first attached network that knows it, then the `<name>.<network>` form on an
    /// attached network.
    pub fn lookup(&self, ns: &NsView, name: &str) -> Option<&Entry> {
        // A link alias is the linking service's own name for its target: it comes first, as
        // Docker's resolver answers a container's links before the network's names.
        for &i in &ns.networks {
            let links = self.networks[i].links.get(&ns.service);
            if let Some(e) = links.and_then(|l| l.get(name)) {
                return Some(e);
            }
        }
        for &i in &ns.networks {
            if let Some(e) = self.networks[i].records.get(name) {
                return Some(e);
            }
        }
        for &i in &ns.networks {
            let net = &self.networks[i];
            for suffix in &net.names {
                let Some(head) = name
                    .strip_suffix(suffix.as_str())
                    .and_then(|h| h.strip_suffix('.'))
                else {
                    continue;
                };
                if let Some(e) = net.records.get(head) {
                    return Some(e);
                }
            }
        }
        None
    }

    /// The names of `ip` as seen from `ns`: `Ok(names)` when an attached network has it,
    /// `Err(true)` when it lies in an attached network's subnet but is not assigned (answer
    /// NXDOMAIN, never ask upstream about the project's addresses), `Err(false)` otherwise.
    pub fn reverse(&self, ns: &NsView, ip: IpAddr) -> Result<&[String], bool> {
        for &i in &ns.networks {
            if let Some(names) = self.networks[i].reverse.get(&ip) {
                return Ok(names);
            }
        }
        let inside = ns
            .networks
            .iter()
            .any(|&i| self.networks[i].subnets.iter().any(|s| s.contains(ip)));
        Err(inside)
    }
}

/// The address of a reverse name (`4.3.2.1.in-addr.arpa`, `b.a.9.8....ip6.arpa`, lower case,
/// no trailing dot), if it names one full address.
pub fn parse_arpa(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, l) in labels.iter().rev().enumerate() {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[i] = l.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for l in labels.iter().rev() {
            if l.len() != 1 {
                return None;
            }
            v = (v << 4) | u128::from(u8::from_str_radix(l, 16).ok()?);
        }
        return Some(IpAddr::from(v.to_be_bytes()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::daemon::{NamespaceView, NetworkView};

    #[test]
    fn link_aliases_answer_the_linking_service_only() {
        let mut cfg = DaemonConfig::new(crate::project_name::ProjectName::new("p").unwrap());
        let db: IpAddr = "10.1.0.100".parse().unwrap();
        let mut net = NetworkView {
            names: vec!["front".into()],
            ..Default::default()
        };
        net.records.insert("db".into(), vec![db]);
        net.links.insert(
            "web".into(),
            [("database".to_string(), vec![db])].into_iter().collect(),
        );
        cfg.networks.insert("front".into(), net);
        for svc in ["web", "other"] {
            cfg.namespaces.insert(
                format!("p-{svc}-1"),
                NamespaceView {
                    service: svc.into(),
                    replica: 1,
                    networks: vec!["front".into()],
                    upstreams: vec![],
                },
            );
        }
        let snap = Snapshot::compile(&cfg, 1);
        let addrs = |ns: &str, name: &str| {
            snap.lookup(&snap.namespaces[ns], name)
                .map(|e| e.addrs.clone())
        };
        assert_eq!(addrs("p-web-1", "database"), Some(vec![db]));
        assert_eq!(addrs("p-other-1", "database"), None);
        assert_eq!(addrs("p-other-1", "db"), Some(vec![db]));
    }

    #[test]
    fn arpa_names() {
        assert_eq!(
            parse_arpa("4.3.2.10.in-addr.arpa"),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_arpa("3.2.10.in-addr.arpa"), None);
        assert_eq!(parse_arpa("x.3.2.10.in-addr.arpa"), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(parse_arpa(v6), Some("fd00::1".parse().unwrap()));
    }
}
