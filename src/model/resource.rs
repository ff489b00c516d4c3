//! Resources: the kernel objects and files netcompose manages, each with a path-like address
//! (`network.front`, `service.web[2]`, `service.web[2].link.front`) and typed desired
//! attributes. The plan diffs them, the graph orders them, the applier builds them.

pub use super::id::{ReplicaId, ResourceId, RouteFamily};
use super::shared::Shared;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub address: ResourceId,
    pub spec: Spec,
    /// Addresses of the resources that must exist before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ResourceId>,
}

/// Written with its `kind` first (`{"kind": "link", ...}`); read by [`Spec::deserialize`].
///
/// The largest kinds are boxed, so that a spec (and a [`Resource`]) is the size of the small
/// ones: a big project has a hundred thousand resources, and its vectors of them are built,
/// joined and sorted by moving them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    Bridge(Bridge),
    Macvlan(MacvlanNetwork),
    External(ExternalNetwork),
    Vxlan(Vxlan),
    Remote(Box<RemoteEndpoint>),
    Namespace(Namespace),
    Link(Box<Link>),
    Route(Route),
    Files(NetnsFiles),
    Vip(Vip),
    Dns(DnsZone),
    Firewall(Box<Firewall>),
}

impl Spec {
    /// The kind as written in plans (`bridge`, `namespace`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Bridge(_) => "bridge",
            Spec::Macvlan(_) => "macvlan",
            Spec::External(_) => "external",
            Spec::Vxlan(_) => "vxlan",
            Spec::Remote(_) => "remote",
            Spec::Namespace(_) => "namespace",
            Spec::Link(_) => "link",
            Spec::Route(_) => "route",
            Spec::Files(_) => "files",
            Spec::Vip(_) => "vip",
            Spec::Dns(_) => "dns",
            Spec::Firewall(_) => "firewall",
        }
    }

    /// The attributes of `new` that differ from these and cannot change in place (the object
    /// is deleted and made again), in the order plans name them; None when the kinds differ.
    pub fn replacement_fields(&self, new: &Spec) -> Option<Vec<ReplaceField>> {
        use Spec as S;
        Some(match (self, new) {
            (S::Bridge(a), S::Bridge(b)) => a.replacement_fields(b),
            (S::Macvlan(a), S::Macvlan(b)) => a.replacement_fields(b),
            (S::Vxlan(a), S::Vxlan(b)) => a.replacement_fields(b),
            (S::Namespace(a), S::Namespace(b)) => a.replacement_fields(b),
            (S::Link(a), S::Link(b)) => a.replacement_fields(b),
            (S::Route(a), S::Route(b)) => a.replacement_fields(b),
            // Changed in place, or (VIPs, zones) served from the state by the daemon.
            (S::External(_), S::External(_))
            | (S::Remote(_), S::Remote(_))
            | (S::Files(_), S::Files(_))
            | (S::Vip(_), S::Vip(_))
            | (S::Dns(_), S::Dns(_))
            | (S::Firewall(_), S::Firewall(_)) => Vec::new(),
            // Every kind is listed, so that a new one cannot be forgotten here.
            (
                S::Bridge(_)
                | S::Macvlan(_)
                | S::External(_)
                | S::Vxlan(_)
                | S::Remote(_)
                | S::Namespace(_)
                | S::Link(_)
                | S::Route(_)
                | S::Files(_)
                | S::Vip(_)
                | S::Dns(_)
                | S::Firewall(_),
                _,
            ) => return None,
        })
    }
}

/// A spec's kind, as its `kind` field names it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Bridge,
    Macvlan,
    External,
    Vxlan,
    Remote,
    Namespace,
    Link,
    Route,
    Files,
    Vip,
    Dns,
    Firewall,
}

impl Kind {
    /// The spec of this kind from the rest of its fields.
    fn read<'de, D: serde::Deserializer<'de>>(self, fields: D) -> Result<Spec, D::Error> {
        Ok(match self {
            Kind::Bridge => Spec::Bridge(Deserialize::deserialize(fields)?),
            Kind::Macvlan => Spec::Macvlan(Deserialize::deserialize(fields)?),
            Kind::External => Spec::External(Deserialize::deserialize(fields)?),
            Kind::Vxlan => Spec::Vxlan(Deserialize::deserialize(fields)?),
            Kind::Remote => Spec::Remote(Deserialize::deserialize(fields)?),
            Kind::Namespace => Spec::Namespace(Deserialize::deserialize(fields)?),
            Kind::Link => Spec::Link(Deserialize::deserialize(fields)?),
            Kind::Route => Spec::Route(Deserialize::deserialize(fields)?),
            Kind::Files => Spec::Files(Deserialize::deserialize(fields)?),
            Kind::Vip => Spec::Vip(Deserialize::deserialize(fields)?),
            Kind::Dns => Spec::Dns(Deserialize::deserialize(fields)?),
            Kind::Firewall => Spec::Firewall(Deserialize::deserialize(fields)?),
        })
    }
}

/// serde's derive reads an internally tagged enum by first copying the whole object into a
/// buffer of its own, which made reading a large saved plan or state several times slower than
/// writing it. netcompose writes `kind` first, so the rest is read straight into the kind's
/// struct; an object whose `kind` comes later (written by hand) is gathered first, as before.
impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Spec, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> serde::de::Visitor<'de> for SpecVisitor {
    type Value = Spec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a resource spec (an object with a `kind`)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Spec, A::Error> {
        use serde::de::Error;
        let Some(first) = map.next_key::<String>()? else {
            return Err(A::Error::missing_field("kind"));
        };
        if first == "kind" {
            let kind: Kind = map.next_value()?;
            return kind.read(serde::de::value::MapAccessDeserializer::new(map));
        }
        let mut fields = serde_json::Map::new();
        fields.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            fields.insert(key, value);
        }
        let kind = fields
            .remove("kind")
            .ok_or_else(|| A::Error::missing_field("kind"))?;
        let kind = Kind::deserialize(kind).map_err(A::Error::custom)?;
        kind.read(serde_json::Value::Object(fields))
            .map_err(A::Error::custom)
    }
}

/// An attribute whose change forces a replacement. Display gives its name in plans (the JSON
/// field name of the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceField {
    Name,
    Parent,
    Mode,
    Type,
    Namespace,
    Ifname,
    HostIfname,
    Bridge,
    Vni,
    Port,
    Local,
    Proxy,
}

impl std::fmt::Display for ReplaceField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplaceField::Name => "name",
            ReplaceField::Parent => "parent",
            ReplaceField::Mode => "mode",
            ReplaceField::Type => "type",
            ReplaceField::Namespace => "namespace",
            ReplaceField::Ifname => "ifname",
            ReplaceField::HostIfname => "host_ifname",
            ReplaceField::Bridge => "bridge",
            ReplaceField::Vni => "vni",
            ReplaceField::Port => "port",
            ReplaceField::Local => "local",
            ReplaceField::Proxy => "proxy",
        })
    }
}

/// The fields of `changed` whose flag is set, in order.
fn forcing<const N: usize>(changed: [(ReplaceField, bool); N]) -> Vec<ReplaceField> {
    changed
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
}

impl Bridge {
    fn replacement_fields(&self, new: &Bridge) -> Vec<ReplaceField> {
        forcing([(ReplaceField::Name, self.name != new.name)])
    }
}

impl MacvlanNetwork {
    fn replacement_fields(&self, new: &MacvlanNetwork) -> Vec<ReplaceField> {
        forcing([
            (ReplaceField::Parent, self.parent != new.parent),
            (ReplaceField::Mode, self.mode != new.mode),
        ])
    }
}

impl Vxlan {
    /// The kernel changes none of these on a live VXLAN device (`proxy` is refused outright).
    fn replacement_fields(&self, new: &Vxlan) -> Vec<ReplaceField> {
        forcing([
            (ReplaceField::Name, self.name != new.name),
            (ReplaceField::Bridge, self.bridge != new.bridge),
            (ReplaceField::Vni, self.vni != new.vni),
            (ReplaceField::Port, self.port != new.port),
            (ReplaceField::Local, self.local != new.local),
            (ReplaceField::Proxy, self.proxy != new.proxy),
        ])
    }
}

impl Namespace {
    fn replacement_fields(&self, new: &Namespace) -> Vec<ReplaceField> {
        forcing([(ReplaceField::Name, self.name != new.name)])
    }
}

impl Link {
    fn replacement_fields(&self, new: &Link) -> Vec<ReplaceField> {
        forcing([
            (ReplaceField::Type, self.link_type != new.link_type),
            (ReplaceField::Namespace, self.namespace != new.namespace),
            (ReplaceField::Ifname, self.ifname != new.ifname),
            (
                ReplaceField::HostIfname,
                self.host_ifname != new.host_ifname,
            ),
            (ReplaceField::Bridge, self.bridge != new.bridge),
            (ReplaceField::Parent, self.parent != new.parent),
            (ReplaceField::Mode, self.mode != new.mode),
        ])
    }
}

impl Route {
    fn replacement_fields(&self, new: &Route) -> Vec<ReplaceField> {
        forcing([(ReplaceField::Namespace, self.namespace != new.namespace)])
    }
}

/// A Linux bridge in the host namespace for a `bridge` network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    pub network: String,
    pub name: String,
    pub subnets: Vec<IpNetwork>,
    /// Gateway addresses with their prefix length, as set on the bridge.
    pub gateways: Vec<IpNetwork>,
    pub mtu: u32,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
}

/// A macvlan network: no host object of its own, only a parent interface that must exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacvlanNetwork {
    pub network: String,
    pub parent: String,
    pub mode: String,
    pub subnets: Vec<IpNetwork>,
    pub gateways: Vec<IpAddr>,
    pub mtu: u32,
}

/// An overlay network's VXLAN port on this host: a port of the network's bridge, sending
/// frames for remote endpoints to their hosts (static FDB entries, no learning) and answering
/// ARP for them itself (`proxy`, from its neighbour entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vxlan {
    pub network: String,
    pub name: String,
    pub bridge: String,
    pub vni: u32,
    /// UDP port of the tunnels.
    pub port: u16,
    /// This host's underlay address (None: the kernel picks the source by route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    pub proxy: bool,
    pub mtu: u32,
}

/// An endpoint on another host, as this host programs it on the network's VXLAN port: an FDB
/// entry (its MAC → its host's VTEP) and a neighbour entry per address (address → MAC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub network: String,
    /// The VXLAN device the entries are on.
    pub device: String,
    /// Which replica it is and where it runs: from the cluster view (the kernel keeps only
    /// the entries; observe fills these in from the state).
    pub service: String,
    pub replica: u32,
    pub node: String,
    pub vtep: IpAddr,
    pub mac: String,
    pub addresses: Vec<IpAddr>,
}

/// A network made outside netcompose (`external: true`): looked up, used, never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalNetwork {
    pub network: String,
    pub name: String,
}

/// A replica's network namespace, pinned at /run/netns/NAME.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub service: String,
    pub replica: u32,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
}

/// A replica's default route, through the gateway of its gateway network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub namespace: String,
    pub destination: IpNetwork,
    pub gateway: IpAddr,
    pub ifname: String,
}

/// An endpoint's interface: a veth pair into a bridge, or a macvlan on a parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    #[serde(rename = "type")]
    pub link_type: LinkType,
    pub network: String,
    pub namespace: String,
    pub ifname: String,
    /// The host end of a veth; None for macvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub mac: String,
    pub addresses: Vec<IpNetwork>,
    pub mtu: u32,
    /// `x-qos`: the tc setup of the interface and its peer, changed in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<super::qos::LinkQos>,
    /// Seen administratively down (a `netcompose link ... down` drill): never desired, so
    /// `plan` shows it as drift and `up` brings the link back up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Veth,
    Macvlan,
}

/// /etc/netns/NAME/{hosts,resolv.conf}, seen by `ip netns exec` and `netcompose exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetnsFiles {
    pub namespace: String,
    pub hosts: Vec<String>,
    pub resolv_conf: Vec<String>,
}

/// A service's virtual IP on one network, balanced over its replicas: one address per family
/// of the network (IPv4 first), each balanced over the replicas' addresses of its family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vip {
    pub service: String,
    pub network: String,
    /// `address` (one IPv4 VIP) in states written before IPv6 VIPs existed.
    #[serde(alias = "address", deserialize_with = "one_or_more")]
    pub addresses: Vec<IpAddr>,
    /// The replicas' addresses on the network, of every family.
    pub backends: Vec<IpAddr>,
}

impl Vip {
    /// Each address of the VIP with the backends of its family.
    pub fn families(&self) -> impl Iterator<Item = (IpAddr, Vec<IpAddr>)> + '_ {
        self.addresses.iter().map(|a| {
            let same: Vec<IpAddr> = self
                .backends
                .iter()
                .filter(|b| b.is_ipv4() == a.is_ipv4())
                .copied()
                .collect();
            (*a, same)
        })
    }
}

/// An address list that may also be written as one address.
fn one_or_more<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(IpAddr),
        More(Vec<IpAddr>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(a) => vec![a],
        OneOrMore::More(v) => v,
    })
}

/// The names the embedded resolver answers on one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsZone {
    pub network: String,
    pub records: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// `links: [svc:alias]`: names answered only to the linking service's replicas (linking
    /// service → alias → addresses), as Docker scopes a link to the container that has it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub links: LinkAliases,
}

/// Linking service → alias → addresses.
pub type LinkAliases =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<IpAddr>>>;

/// An nftables table: `table` in `namespace` (None: the host), with its base chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firewall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub table: String,
    /// Sysctls the rules rely on (IPv4 forwarding for masquerade, route_localnet on bridges
    /// that receive published ports from 127.0.0.1).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Networks whose VIPs this table dispatches (replica tables; expanded when applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_networks: Vec<String>,
    /// A digest of those VIPs and their backends: it changes when they do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vip_digest: String,
    /// VIPs of those networks that this table drops instead of spreading: their service's
    /// policy turns this replica's service away on every port ([`crate::model::tables::reach`]).
    #[serde(
        default,
        skip_serializing_if = "super::shared::is_empty",
        deserialize_with = "vips_dropped"
    )]
    pub vip_refused: Shared<Vec<RefusedVip>>,
    pub chains: Shared<Vec<crate::firewall::rule::Chain>>,
    /// Named maps: each VIP's backends (the host table; replica tables get theirs expanded).
    #[serde(default, skip_serializing_if = "super::shared::is_empty")]
    pub maps: Shared<Vec<crate::firewall::rule::Map>>,
    /// Named sets: the addresses of each service a policy names (replica tables).
    #[serde(default, skip_serializing_if = "super::shared::is_empty")]
    pub sets: Shared<Vec<crate::firewall::rule::Set>>,
    /// Tags of rules found in the live table that netcompose did not write (observe only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_rules: Vec<String>,
}

/// The first format of the state (its `format_version`) that writes a table's VIPs dropped as
/// a [`Shared`] value, numbered.
pub const VIPS_DROPPED_SHARED_FROM: u32 = 3;

/// A table's VIPs dropped: a state written in a format before [`VIPS_DROPPED_SHARED_FROM`]
/// spells each table's out, unnumbered ([`super::shared::reading_format`]).
fn vips_dropped<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Shared<Vec<RefusedVip>>, D::Error> {
    match super::shared::format_read() {
        Some(format) if format < VIPS_DROPPED_SHARED_FROM => Vec::deserialize(d).map(Shared::new),
        Some(_) | None => Shared::deserialize(d),
    }
}

/// A table's chains, maps and sets, compared by identity ([`Shared::id`]): the replica tables of
/// a service hold one copy of each, so that what is worked out from a table's parts (its rules
/// compiled, its digest) is worked out once per service when memoized by this. An empty part
/// is like any other (a state reads, and the model makes, a fresh one for each table). Holds
/// the parts, so that their addresses name nothing else while a memo keyed by them lives.
pub struct FirewallParts(
    Shared<Vec<crate::firewall::rule::Chain>>,
    Shared<Vec<crate::firewall::rule::Map>>,
    Shared<Vec<crate::firewall::rule::Set>>,
);

impl FirewallParts {
    pub fn of(f: &Firewall) -> FirewallParts {
        FirewallParts(f.chains.clone(), f.maps.clone(), f.sets.clone())
    }

    fn ids(&self) -> [usize; 3] {
        fn id<T>(part: &Shared<Vec<T>>) -> usize {
            if part.is_empty() {
                0
            } else {
                part.id()
            }
        }
        [id(&self.0), id(&self.1), id(&self.2)]
    }
}

impl PartialEq for FirewallParts {
    fn eq(&self, other: &FirewallParts) -> bool {
        self.ids() == other.ids()
    }
}

impl Eq for FirewallParts {}

impl std::hash::Hash for FirewallParts {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.ids().hash(state);
    }
}

/// The VIPs of one family of a service that a replica table drops (`VIP : drop` in its dispatch)
/// rather than sending to a chain and a map of backends that would all refuse the packet.
/// Written `ip web` or `ip6 web`: a string each, as a plan lists them and a state holds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct RefusedVip {
    pub service: String,
    pub ipv6: bool,
}

/// Put together by hand: a state holds one per VIP that a replica table drops (in a big project
/// under default-deny policies, most VIPs in every table); made with `format!`, they were 4% of
/// a scale's instructions, through serde_json's `collect_str` (which escapes each piece that
/// Display writes on its own) 3% (callgrind, the project of bench/lb.sh).
impl Serialize for RefusedVip {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let family = if self.ipv6 { "ip6 " } else { "ip " };
        let mut text = String::with_capacity(family.len() + self.service.len());
        text.push_str(family);
        text.push_str(&self.service);
        serializer.serialize_str(&text)
    }
}

/// A refused VIP that is not `ip SERVICE` or `ip6 SERVICE`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not `ip SERVICE` or `ip6 SERVICE`")]
pub struct RefusedVipError(String);

impl TryFrom<String> for RefusedVip {
    type Error = RefusedVipError;

    fn try_from(text: String) -> Result<RefusedVip, RefusedVipError> {
        let parsed = match text.split_once(' ') {
            Some(("ip", s)) => Some((s.to_string(), false)),
            Some(("ip6", s)) => Some((s.to_string(), true)),
            _ => None,
        };
        match parsed {
            Some((service, ipv6)) if !service.is_empty() => Ok(RefusedVip { service, ipv6 }),
            _ => Err(RefusedVipError(text)),
        }
    }
}

/// A published port: a host port (range) balanced over the service's replicas. It becomes
/// rules of the host table; kept apart here so the rules can be built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub service: String,
    pub protocol: crate::spec::Protocol,
    pub host_ip: Option<IpAddr>,
    pub published: crate::spec::PortRange,
    pub target: crate::spec::PortRange,
    pub backends: Vec<IpAddr>,
    /// The bridge the backends are reached through.
    pub bridge: String,
    /// On a cluster, the underlay address of the host of each replica that runs elsewhere
    /// (one entry per replica): their share of new connections goes to that host's own
    /// publication of the port, which serves them from its local replicas.
    pub remote: Vec<IpAddr>,
    /// On a cluster, the other hosts' underlay addresses: a connection from one of them was
    /// sent by its share of the mesh and is served here, never sent on.
    pub peers: Vec<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_vip_is_written_with_its_family() {
        let r = RefusedVip {
            service: "web".into(),
            ipv6: true,
        };
        let json = serde_json::to_string(std::slice::from_ref(&r)).unwrap();
        assert_eq!(json, r#"["ip6 web"]"#);
        let back: Vec<RefusedVip> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [r]);
        assert!(serde_json::from_str::<RefusedVip>(r#""web""#).is_err());
        assert!(serde_json::from_str::<RefusedVip>(r#""ip ""#).is_err());
    }

    #[test]
    fn a_vip_recorded_with_one_address_still_reads() {
        let old: Vip = serde_json::from_str(
            r#"{"service": "web", "network": "front", "address": "10.0.0.9", "backends": ["10.0.0.2"]}"#,
        )
        .unwrap();
        assert_eq!(old.addresses, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        let new = serde_json::to_value(&old).unwrap();
        assert_eq!(new["addresses"], serde_json::json!(["10.0.0.9"]));
    }

    #[test]
    fn tables_have_the_same_parts_when_they_hold_the_same_copies_or_nothing() {
        let chain = crate::firewall::rule::Chain::base("ingress", "filter", "input", 0, vec![]);
        let table = |chains: Shared<Vec<crate::firewall::rule::Chain>>| Firewall {
            namespace: Some("p-web-1".into()),
            table: "netcompose".into(),
            sysctls: Default::default(),
            vip_networks: vec![],
            vip_digest: String::new(),
            vip_refused: Default::default(),
            chains,
            maps: Default::default(),
            sets: Default::default(),
            foreign_rules: vec![],
        };
        let chains: Shared<Vec<_>> = vec![chain.clone()].into();
        // Replicas of one service: the same chains, and maps and sets each empty on its own.
        let (one, two) = (table(chains.clone()), table(chains));
        assert!(FirewallParts::of(&one) == FirewallParts::of(&two));
        // Equal chains held apart are other parts.
        assert!(FirewallParts::of(&one) != FirewallParts::of(&table(vec![chain].into())));
    }
}
