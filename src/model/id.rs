//! Resource addresses as typed ids: `network.front`, `service.web[2]`,
//! `service.web[2].link.front`, ... are built and read back through [`ResourceId`] instead of
//! strings formatted and split in many places.
//!
//! The printed form is a contract: plans, state files and the ownership marks of live objects
//! (ifalias `netcompose:<project>:<address>`) hold it. An id *is* its printed form: equality,
//! order and hash are those of the text, as they were when addresses were strings. This
//! matters because the text is not always unambiguous: names may contain `.`, so
//! `service.a.vip.vip.b` is both the VIP of service `a.vip` on network `b` and that of service
//! `a` on network `vip.b`. Parsing picks one reading; the two ids are the same id.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use thiserror::Error;

/// The address of a resource of a project (and of the `daemon` pseudo-resource of a plan's
/// drift).
#[derive(Debug, Clone)]
pub enum ResourceId {
    /// `network.<key>`: a bridge, macvlan or external network.
    Network(String),
    /// `network.<key>.vxlan`: an overlay network's VXLAN port on this host.
    Vxlan(String),
    /// `network.<key>.remote.<address>`: an endpoint of another host on an overlay network
    /// (its first address names it), reached through the VXLAN port.
    Remote { network: String, address: String },
    /// `dns.<key>`: the names the resolver answers on a network.
    Dns(String),
    /// `firewall.host`: the project's table in the host namespace.
    HostFirewall,
    /// `daemon`: the project daemon (named in drift, never a resource of a plan).
    Daemon,
    /// `service.<service>[<n>]`: a replica's namespace.
    Replica(ReplicaId),
    /// `service.<service>[<n>].link.<network>`: a replica's interface on a network.
    Link(ReplicaId, String),
    /// `service.<service>[<n>].route.default` (or `default6`): a replica's default route.
    Route(ReplicaId, RouteFamily),
    /// `service.<service>[<n>].files`: the replica's hosts and resolv.conf.
    Files(ReplicaId),
    /// `service.<service>[<n>].firewall`: the replica's own table.
    ReplicaFirewall(ReplicaId),
    /// `service.<service>.vip.<network>`: a service's virtual IP on a network.
    Vip { service: String, network: String },
}

/// One replica of a service: `web[2]` (also how IPAM names an endpoint's owner).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId {
    pub service: String,
    /// From 1, as Compose numbers containers.
    pub index: u32,
}

impl ReplicaId {
    pub fn new(service: impl Into<String>, index: u32) -> Self {
        ReplicaId {
            service: service.into(),
            index,
        }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.service, self.index)
    }
}

/// The address family of a default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteFamily {
    V4,
    V6,
}

impl RouteFamily {
    /// What the route's address ends with: `default` or `default6`.
    pub fn suffix(self) -> &'static str {
        match self {
            RouteFamily::V4 => "default",
            RouteFamily::V6 => "default6",
        }
    }
}

/// Why a text is not a resource address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{text}` is not a resource address: {reason}")]
pub struct ParseIdError {
    pub text: String,
    pub reason: ParseIdReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseIdReason {
    #[error("unknown kind (expected network., dns., service., firewall.host or daemon)")]
    UnknownKind,
    #[error("a name is empty")]
    EmptyName,
    #[error("the replica number is not a number written plainly")]
    BadIndex,
    #[error("unknown part after the replica (expected .link., .route., .files or .firewall)")]
    UnknownPart,
}

impl ResourceId {
    pub fn network(key: impl Into<String>) -> Self {
        ResourceId::Network(key.into())
    }

    pub fn vxlan(key: impl Into<String>) -> Self {
        ResourceId::Vxlan(key.into())
    }

    pub fn remote(network: impl Into<String>, address: std::net::IpAddr) -> Self {
        ResourceId::Remote {
            network: network.into(),
            address: address.to_string(),
        }
    }

    pub fn dns(key: impl Into<String>) -> Self {
        ResourceId::Dns(key.into())
    }

    pub fn vip(service: impl Into<String>, network: impl Into<String>) -> Self {
        ResourceId::Vip {
            service: service.into(),
            network: network.into(),
        }
    }

    /// The replica this id belongs to (itself or one of its parts), if any.
    pub fn replica(&self) -> Option<&ReplicaId> {
        self.replica_tail().map(|(r, _)| r)
    }

    /// The printed form in pieces, padded with empty text: what Display writes and what
    /// comparisons walk, without building a string.
    fn pieces(&self) -> [Piece<'_>; 6] {
        use Piece::Text as T;
        match self {
            ResourceId::Network(n) => [T("network."), T(n), T(""), T(""), T(""), T("")],
            ResourceId::Vxlan(n) => [T("network."), T(n), T(".vxlan"), T(""), T(""), T("")],
            ResourceId::Remote { network, address } => [
                T("network."),
                T(network),
                T(".remote."),
                T(address),
                T(""),
                T(""),
            ],
            ResourceId::Dns(n) => [T("dns."), T(n), T(""), T(""), T(""), T("")],
            ResourceId::HostFirewall => [T("firewall.host"), T(""), T(""), T(""), T(""), T("")],
            ResourceId::Daemon => [T("daemon"), T(""), T(""), T(""), T(""), T("")],
            ResourceId::Replica(r) => replica_pieces(r, "]", ""),
            ResourceId::Link(r, n) => replica_pieces(r, "].link.", n),
            ResourceId::Route(r, family) => replica_pieces(r, "].route.", family.suffix()),
            ResourceId::Files(r) => replica_pieces(r, "].files", ""),
            ResourceId::ReplicaFirewall(r) => replica_pieces(r, "].firewall", ""),
            ResourceId::Vip { service, network } => [
                T("service."),
                T(service),
                T(".vip."),
                T(network),
                T(""),
                T(""),
            ],
        }
    }

    /// The start of the printed form: the kind's prefix, which no other kind's prefix starts
    /// with or is the start of, and the first name after it (empty for the ids without one).
    fn head(&self) -> (&'static str, &str) {
        match self {
            ResourceId::Network(n)
            | ResourceId::Vxlan(n)
            | ResourceId::Remote { network: n, .. } => ("network.", n),
            ResourceId::Dns(n) => ("dns.", n),
            ResourceId::HostFirewall => ("firewall.host", ""),
            ResourceId::Daemon => ("daemon", ""),
            ResourceId::Replica(r)
            | ResourceId::Link(r, _)
            | ResourceId::Route(r, _)
            | ResourceId::Files(r)
            | ResourceId::ReplicaFirewall(r) => ("service.", &r.service),
            ResourceId::Vip { service, .. } => ("service.", service),
        }
    }

    /// For the parts of a replica: the replica, and the text that follows its number (`]`,
    /// `].link.` and the network, ...), as [`ResourceId::pieces`] has it.
    pub fn replica_tail(&self) -> Option<(&ReplicaId, [&str; 2])> {
        match self {
            ResourceId::Replica(r) => Some((r, ["]", ""])),
            ResourceId::Link(r, n) => Some((r, ["].link.", n])),
            ResourceId::Route(r, family) => Some((r, ["].route.", family.suffix()])),
            ResourceId::Files(r) => Some((r, ["].files", ""])),
            ResourceId::ReplicaFirewall(r) => Some((r, ["].firewall", ""])),
            ResourceId::Network(_)
            | ResourceId::Vxlan(_)
            | ResourceId::Remote { .. }
            | ResourceId::Dns(_)
            | ResourceId::HostFirewall
            | ResourceId::Daemon
            | ResourceId::Vip { .. } => None,
        }
    }

    /// The printed form as byte slices (the replica number written into `digits`).
    fn segments<'a>(&'a self, digits: &'a mut [u8; 10]) -> [&'a [u8]; 6] {
        let number: &'a [u8] = match self.replica() {
            Some(r) => decimal(r.index, digits),
            None => &[],
        };
        self.pieces().map(|p| match p {
            Piece::Text(t) => t.as_bytes(),
            Piece::Number(_) => number,
        })
    }
}

fn replica_pieces<'a>(r: &'a ReplicaId, tail: &'a str, last: &'a str) -> [Piece<'a>; 6] {
    [
        Piece::Text("service."),
        Piece::Text(&r.service),
        Piece::Text("["),
        Piece::Number(r.index),
        Piece::Text(tail),
        Piece::Text(last),
    ]
}

#[derive(Clone, Copy)]
enum Piece<'a> {
    Text(&'a str),
    Number(u32),
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// Byte-wise order of two texts given in segments, as `str` orders them.
fn cmp_segments(a: &[&[u8]], b: &[&[u8]]) -> Ordering {
    let (mut a, mut b) = (a.iter(), b.iter());
    let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
    loop {
        while x.is_empty() {
            match a.next() {
                Some(next) => x = next,
                None => break,
            }
        }
        while y.is_empty() {
            match b.next() {
                Some(next) => y = next,
                None => break,
            }
        }
        if x.is_empty() || y.is_empty() {
            return x.len().cmp(&y.len());
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => (x, y) = (&x[n..], &y[n..]),
            other => return other,
        }
    }
}

impl ResourceId {
    /// The printed form, piece by piece: what Display shows and what a state holds.
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for piece in self.pieces() {
            match piece {
                Piece::Text(t) => out.write_str(t)?,
                Piece::Number(n) => {
                    let mut digits = [0; 10];
                    for &d in decimal(n, &mut digits) {
                        out.write_char(char::from(d))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ResourceId {}

impl Ord for ResourceId {
    /// The order of the printed forms, as strings sort.
    fn cmp(&self, other: &Self) -> Ordering {
        // Ids next to each other in a sorted list are most often parts of one replica (its
        // namespace, links, route, files and table): only what follows the replica differs.
        if let (Some((ra, ta)), Some((rb, tb))) = (self.replica_tail(), other.replica_tail()) {
            if ra == rb {
                return cmp_segments(&ta.map(str::as_bytes), &tb.map(str::as_bytes));
            }
            // Replicas of one service (a sorted project's most common pair after the above):
            // `service.<name>[` alike, the numbers decide. When one's digits start the other's,
            // the shorter goes on with `]`, which sorts after every digit.
            if ra.service == rb.service {
                let (mut da, mut db) = ([0; 10], [0; 10]);
                let (x, y) = (decimal(ra.index, &mut da), decimal(rb.index, &mut db));
                let n = x.len().min(y.len());
                return match x[..n].cmp(&y[..n]) {
                    Ordering::Equal => y.len().cmp(&x.len()),
                    decided => decided,
                };
            }
        }
        // Most other ids compared differ in their kind or first name: that decides, unless
        // one name is the start of the other (`svc1`, `svc17`), when what follows it counts.
        let ((ka, na), (kb, nb)) = (self.head(), other.head());
        if ka != kb {
            return ka.cmp(kb);
        }
        let n = na.len().min(nb.len());
        match na.as_bytes()[..n].cmp(&nb.as_bytes()[..n]) {
            Ordering::Equal => {}
            decided => return decided,
        }
        let (mut da, mut db) = ([0; 10], [0; 10]);
        cmp_segments(&self.segments(&mut da), &other.segments(&mut db))
    }
}

impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for ResourceId {
    /// The printed form in fixed blocks, so that equal texts hash alike however the id is cut
    /// into fields.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut digits = [0; 10];
        let mut block = [0u8; 64];
        let mut len = 0;
        for mut segment in self.segments(&mut digits) {
            while !segment.is_empty() {
                let n = (block.len() - len).min(segment.len());
                block[len..len + n].copy_from_slice(&segment[..n]);
                (len, segment) = (len + n, &segment[n..]);
                if len == block.len() {
                    state.write(&block);
                    len = 0;
                }
            }
        }
        state.write(&block[..len]);
        state.write_u8(0xff);
    }
}

impl FromStr for ResourceId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, ParseIdError> {
        parse(text).map_err(|reason| ParseIdError {
            text: text.to_string(),
            reason,
        })
    }
}

fn parse(text: &str) -> Result<ResourceId, ParseIdReason> {
    let name = |s: &str| {
        if s.is_empty() {
            Err(ParseIdReason::EmptyName)
        } else {
            Ok(s.to_string())
        }
    };
    if text == "daemon" {
        return Ok(ResourceId::Daemon);
    }
    if text == "firewall.host" {
        return Ok(ResourceId::HostFirewall);
    }
    if let Some(key) = text.strip_prefix("network.") {
        // Network names may hold `.`: as for VIPs, a text that reads both ways is one id.
        if let Some(network) = key.strip_suffix(".vxlan").filter(|n| !n.is_empty()) {
            return Ok(ResourceId::Vxlan(network.to_string()));
        }
        if let Some((network, address)) = key
            .rsplit_once(".remote.")
            .filter(|(n, a)| !n.is_empty() && a.parse::<std::net::IpAddr>().is_ok())
        {
            return Ok(ResourceId::Remote {
                network: network.to_string(),
                address: address.to_string(),
            });
        }
        return Ok(ResourceId::Network(name(key)?));
    }
    if let Some(key) = text.strip_prefix("dns.") {
        return Ok(ResourceId::Dns(name(key)?));
    }
    let Some(rest) = text.strip_prefix("service.") else {
        return Err(ParseIdReason::UnknownKind);
    };
    // Service names cannot hold `[` (the Compose schema allows letters, digits, `._-`).
    let Some((service, numbered)) = rest.split_once('[') else {
        let (service, network) = rest.split_once(".vip.").ok_or(ParseIdReason::UnknownKind)?;
        return Ok(ResourceId::vip(name(service)?, name(network)?));
    };
    let (index, part) = numbered.split_once(']').ok_or(ParseIdReason::BadIndex)?;
    let plain = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    if !plain {
        return Err(ParseIdReason::BadIndex);
    }
    let index = index.parse().map_err(|_| ParseIdReason::BadIndex)?;
    let replica = ReplicaId::new(name(service)?, index);
    Ok(match part {
        "" => ResourceId::Replica(replica),
        ".files" => ResourceId::Files(replica),
        ".firewall" => ResourceId::ReplicaFirewall(replica),
        ".route.default" => ResourceId::Route(replica, RouteFamily::V4),
        ".route.default6" => ResourceId::Route(replica, RouteFamily::V6),
        _ => match part.strip_prefix(".link.") {
            Some(network) => ResourceId::Link(replica, name(network)?),
            None => return Err(ParseIdReason::UnknownPart),
        },
    })
}

/// The printed form put together first and written as one string: serde_json's `collect_str`
/// escapes each piece that Display writes on its own, and a state holds some 3,000 ids (the
/// two saves of a scale of bench/lb.sh's project spent 3.9 M instructions on them, callgrind).
impl Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(64);
        self.write_to(&mut text)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn rep(service: &str, index: u32) -> ReplicaId {
        ReplicaId::new(service, index)
    }

    fn hash(id: &ResourceId) -> u64 {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    #[test]
    fn prints_today_s_addresses() {
        let table = [
            (ResourceId::network("front"), "network.front"),
            (ResourceId::vxlan("mesh"), "network.mesh.vxlan"),
            (
                ResourceId::remote("mesh", "10.14.0.7".parse().unwrap()),
                "network.mesh.remote.10.14.0.7",
            ),
            (
                ResourceId::remote("m.x", "fd00::7".parse().unwrap()),
                "network.m.x.remote.fd00::7",
            ),
            (ResourceId::dns("front"), "dns.front"),
            (ResourceId::HostFirewall, "firewall.host"),
            (ResourceId::Daemon, "daemon"),
            (ResourceId::Replica(rep("web", 2)), "service.web[2]"),
            (
                ResourceId::Link(rep("web", 2), "front".into()),
                "service.web[2].link.front",
            ),
            (
                ResourceId::Route(rep("web", 10), RouteFamily::V4),
                "service.web[10].route.default",
            ),
            (
                ResourceId::Route(rep("web", 1), RouteFamily::V6),
                "service.web[1].route.default6",
            ),
            (ResourceId::Files(rep("web", 1)), "service.web[1].files"),
            (
                ResourceId::ReplicaFirewall(rep("web", 0)),
                "service.web[0].firewall",
            ),
            (ResourceId::vip("web", "front"), "service.web.vip.front"),
            (
                ResourceId::Link(rep("a.b-c_d", 4294967295), "x.y".into()),
                "service.a.b-c_d[4294967295].link.x.y",
            ),
        ];
        for (id, text) in table {
            assert_eq!(id.to_string(), text);
            assert_eq!(text.parse::<ResourceId>().unwrap(), id, "{text}");
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
            let back: ResourceId = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(back, id);
        }
    }

    #[test]
    fn rejects_what_no_id_prints() {
        let cases = [
            ("", ParseIdReason::UnknownKind),
            ("bridge.front", ParseIdReason::UnknownKind),
            ("service.web", ParseIdReason::UnknownKind),
            ("network.", ParseIdReason::EmptyName),
            ("service.[1]", ParseIdReason::EmptyName),
            ("service.web.vip.", ParseIdReason::EmptyName),
            ("service.web[1].link.", ParseIdReason::EmptyName),
            ("service.web[01]", ParseIdReason::BadIndex),
            ("service.web[+1]", ParseIdReason::BadIndex),
            ("service.web[]", ParseIdReason::BadIndex),
            ("service.web[1", ParseIdReason::BadIndex),
            ("service.web[4294967296]", ParseIdReason::BadIndex),
            ("service.web[1].route.other", ParseIdReason::UnknownPart),
            ("service.web[1]x", ParseIdReason::UnknownPart),
        ];
        for (text, reason) in cases {
            assert_eq!(
                text.parse::<ResourceId>(),
                Err(ParseIdError {
                    text: text.into(),
                    reason
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn an_ambiguous_text_is_one_id() {
        let a = ResourceId::vip("a.vip", "b");
        let b = ResourceId::vip("a", "vip.b");
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert_eq!("service.a.vip.vip.b".parse::<ResourceId>().unwrap(), a);
    }

    #[test]
    fn long_ids_hash_by_text() {
        let long = "n".repeat(200);
        let a = ResourceId::vip(format!("{long}.vip"), "b");
        let b = ResourceId::vip(long, "vip.b");
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&ResourceId::vip("x", "b")));
    }

    /// Names as the Compose schema allows them: `[a-zA-Z0-9._-]+`.
    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{1,12}"
    }

    fn replica() -> impl Strategy<Value = ReplicaId> {
        (name(), any::<u32>()).prop_map(|(s, i)| ReplicaId::new(s, i))
    }

    fn id() -> impl Strategy<Value = ResourceId> {
        prop_oneof![
            name().prop_map(ResourceId::Network),
            name().prop_map(ResourceId::Vxlan),
            (name(), any::<std::net::Ipv4Addr>())
                .prop_map(|(n, a)| ResourceId::remote(n, std::net::IpAddr::V4(a))),
            name().prop_map(ResourceId::Dns),
            Just(ResourceId::HostFirewall),
            Just(ResourceId::Daemon),
            replica().prop_map(ResourceId::Replica),
            (replica(), name()).prop_map(|(r, n)| ResourceId::Link(r, n)),
            (
                replica(),
                prop_oneof![Just(RouteFamily::V4), Just(RouteFamily::V6)]
            )
                .prop_map(|(r, f)| ResourceId::Route(r, f)),
            replica().prop_map(ResourceId::Files),
            replica().prop_map(ResourceId::ReplicaFirewall),
            (name(), name()).prop_map(|(s, n)| ResourceId::vip(s, n)),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trips(id in id()) {
            let text = id.to_string();
            let back: ResourceId = text.parse().unwrap();
            prop_assert_eq!(back.to_string(), text);
            prop_assert_eq!(hash(&back), hash(&id));
            prop_assert_eq!(back, id);
        }

        #[test]
        fn order_is_the_order_of_the_text(a in id(), b in id()) {
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            prop_assert_eq!(a == b, a.to_string() == b.to_string());
        }

        /// Parts of one replica, of replicas of one service, and of a service whose name starts
        /// with another's, which random ids rarely are.
        #[test]
        fn parts_of_a_replica_order_as_their_text(
            r in replica(),
            other in 0u32..20,
            parts in (0usize..5, 0usize..5),
            networks in (name(), name()),
        ) {
            let part = |k: usize, r: &ReplicaId, n: &str| match k {
                0 => ResourceId::Replica(r.clone()),
                1 => ResourceId::Link(r.clone(), n.to_string()),
                2 => ResourceId::Route(r.clone(), RouteFamily::V6),
                3 => ResourceId::Files(r.clone()),
                _ => ResourceId::ReplicaFirewall(r.clone()),
            };
            let near = ReplicaId::new(r.service.clone(), other);
            let longer = ReplicaId::new(format!("{}{}", r.service, networks.1), other);
            let a = part(parts.0, &r, &networks.0);
            for b in [
                part(parts.1, &r, &networks.1),
                part(parts.1, &near, &networks.1),
                part(parts.1, &longer, &networks.1),
            ] {
                prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
                prop_assert_eq!(a == b, a.to_string() == b.to_string());
            }
        }
    }
}
