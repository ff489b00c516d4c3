//! Ephemeral host ports for target-only `ports:` entries (`"80"`, `"8080-8081"`), as Docker
//! picks them: from the kernel's ip_local_port_range, never a port a socket of the host holds,
//! that the project publishes explicitly or that another project was given. Sticky: a port
//! picked once is kept while it stays free, so `up` after `up` publishes the same address.

use crate::spec::Protocol;
use std::collections::{BTreeMap, BTreeSet};

/// The range Linux ships with (/proc/sys/net/ipv4/ip_local_port_range), used when the
/// machine's cannot be read.
pub const DEFAULT_RANGE: (u16, u16) = (32768, 60999);

/// One target port that needs a host port: `key` names it in the allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub key: String,
    pub protocol: Protocol,
}

/// Host ports that may not be chosen, by protocol.
#[derive(Debug, Clone, Default)]
pub struct BusyPorts {
    set: BTreeSet<(Protocol, u16)>,
}

impl BusyPorts {
    pub fn insert(&mut self, protocol: Protocol, port: u16) {
        self.set.insert((protocol, port));
    }

    fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.set.contains(&(protocol, port))
    }
}

/// Every request gets a port: its previous one when still free, else the lowest free port of
/// `range`. None for a request when the range is full.
pub fn allocate(
    requests: &[PortRequest],
    previous: &BTreeMap<String, u16>,
    range: (u16, u16),
    busy: &BusyPorts,
) -> (BTreeMap<String, u16>, Vec<String>) {
    let mut taken = busy.clone();
    let mut out = BTreeMap::new();
    // Sticky ones first, so that no new request takes a port an old one had.
    for r in requests {
        if let Some(&p) = previous.get(&r.key) {
            if !taken.contains(r.protocol, p) {
                taken.insert(r.protocol, p);
                out.insert(r.key.clone(), p);
            }
        }
    }
    let mut full = Vec::new();
    for r in requests {
        if out.contains_key(&r.key) {
            continue;
        }
        match (range.0..=range.1).find(|p| *p != 0 && !taken.contains(r.protocol, *p)) {
            Some(p) => {
                taken.insert(r.protocol, p);
                out.insert(r.key.clone(), p);
            }
            None => full.push(r.key.clone()),
        }
    }
    (out, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str) -> PortRequest {
        PortRequest {
            key: key.into(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn lowest_free_then_sticky() {
        let mut busy = BusyPorts::default();
        busy.insert(Protocol::Tcp, 40000);
        busy.insert(Protocol::Udp, 40001);
        let (first, full) = allocate(
            &[req("web/80/tcp"), req("web/81/tcp")],
            &BTreeMap::new(),
            (40000, 40010),
            &busy,
        );
        assert!(full.is_empty());
        assert_eq!(
            first["web/80/tcp"], 40001,
            "udp 40001 does not hold tcp 40001"
        );
        assert_eq!(first["web/81/tcp"], 40002);
        // A new entry ahead of the old ones renumbers nobody.
        let (second, _) = allocate(
            &[req("api/80/tcp"), req("web/80/tcp"), req("web/81/tcp")],
            &first,
            (40000, 40010),
            &busy,
        );
        assert_eq!(second["web/80/tcp"], 40001);
        assert_eq!(second["web/81/tcp"], 40002);
        assert_eq!(second["api/80/tcp"], 40003);
        // A previous port that a socket took since is given up.
        busy.insert(Protocol::Tcp, 40001);
        let (third, _) = allocate(&[req("web/80/tcp")], &first, (40000, 40010), &busy);
        assert_eq!(third["web/80/tcp"], 40002);
    }

    #[test]
    fn a_full_range_is_reported() {
        let (got, full) = allocate(
            &[req("a/1/tcp"), req("b/1/tcp")],
            &BTreeMap::new(),
            (50000, 50000),
            &BusyPorts::default(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(full, ["b/1/tcp"]);
    }
}
