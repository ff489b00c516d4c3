//! A small nftables rule builder: rules read as nft rules in plans (`Display`) and become
//! nf_tables expressions for the kernel ([`super::compile`]), from one description.

use super::compile::{backend_slots, compile, peer_set, CompileError};
use crate::kernel::nftables;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Iif(String),
    NotIif(String),
    Oif(String),
    NotOif(String),
    Saddr(IpNetwork),
    NotSaddr(IpNetwork),
    Daddr(IpNetwork),
    NotDaddr(IpNetwork),
    /// `meta nfproto ipv4|ipv6`: every packet of one family, which is what an address match
    /// on a prefix of length 0 comes to.
    Family {
        ipv6: bool,
    },
    /// Source address in a set of networks.
    SaddrIn(Vec<IpNetwork>),
    /// Destination address in a set of networks.
    DaddrIn(Vec<IpNetwork>),
    /// Source address in a named [`Set`] of the table (`ip saddr @from.web`).
    SaddrSet {
        set: String,
        ipv6: bool,
    },
    /// Destination address in a named [`Set`] of the table (`ip daddr @to.web`).
    DaddrSet {
        set: String,
        ipv6: bool,
    },
    /// `meta l4proto tcp|udp`.
    L4proto(String),
    /// `th dport N` or `th dport A-B` (after an l4proto match).
    Dport(u16, u16),
    /// The destination is an address of this machine (`fib daddr type local`).
    LocalDaddr,
    /// `ct state` in the given states.
    CtState(Vec<String>),
    /// The connection was destination-NATed (a published port or a VIP).
    CtDnat,
    /// A random draw: `numgen random mod 100 < N`, true for N percent of the packets.
    Chance(u8),
    /// A VXLAN packet's VNI (`@th,96,24 N`: 24 bits at byte 12 of the UDP header, after an
    /// l4proto and port match).
    Vni(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
    /// `counter drop`: a drop whose packets `stats` and the metrics report (policy denies).
    CountDrop,
    Masquerade,
    Goto(String),
    /// Spread new connections over `backends` at random (`numgen random mod N`), keeping the
    /// destination port unless `port` is given.
    DnatRandom {
        backends: Vec<IpAddr>,
        port: Option<u16>,
    },
    /// `ip daddr vmap { VIP : goto CHAIN, ... }` (`ip6` for IPv6 VIPs): one lookup dispatches
    /// every VIP of a family. The entries are all of one family; one with no chain is dropped
    /// (`VIP : drop`).
    VipMap(Vec<(IpAddr, Option<String>)>),
    /// Spread new connections over the backends in the named [`Map`] of the table
    /// (`numgen random mod 65536` looked up in its slots), keeping the destination port.
    DnatMap {
        map: String,
        ipv6: bool,
    },
}

/// A named map of a table: a VIP's backends of one family. The kernel holds it as slots of
/// `numgen random mod 65536` ([`super::compile::backend_slots`]), so that a scale changes its
/// elements and never the rule that looks in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Map {
    pub name: String,
    pub backends: Vec<IpAddr>,
}

/// A named set of a table: the addresses of a service that a policy names, of one family.
/// Rules look in it by name, so a scale adds and removes its elements and never changes the
/// rules ([`super::compile::peer_set`] is its kernel form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    #[serde(serialize_with = "networks", deserialize_with = "networks_in")]
    pub elements: Vec<IpNetwork>,
}

/// A set's elements as `Display` writes them (`10.90.0.2/32`), an IPv4 one encoded in one
/// piece: ipnetwork's own `Serialize` goes through the formatter, which hands the encoder a
/// dozen fragments per address to escape one by one; the sets of a state's replica tables
/// are most of its addresses, and that was a third of the time of a state save.
fn networks<S: serde::Serializer>(nets: &[IpNetwork], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    struct Element<'a>(&'a IpNetwork);
    impl Serialize for Element<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                IpNetwork::V4(n) => {
                    let mut text = [0u8; 19];
                    let len = write_v4(&mut text, n.ip().octets(), n.prefix());
                    match std::str::from_utf8(&text[..len]) {
                        Ok(t) => s.serialize_str(t),
                        Err(_) => s.collect_str(self.0),
                    }
                }
                IpNetwork::V6(_) => s.collect_str(self.0),
            }
        }
    }
    let mut seq = s.serialize_seq(Some(nets.len()))?;
    for n in nets {
        seq.serialize_element(&Element(n))?;
    }
    seq.end()
}

/// A set's elements read straight from the text of each: ipnetwork's own `Deserialize` copies
/// every address into a String of its own first, a seventh of the time of reading a state.
fn networks_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNetwork>, D::Error> {
    struct Element(IpNetwork);
    impl<'de> Deserialize<'de> for Element {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
            struct Text;
            impl serde::de::Visitor<'_> for Text {
                type Value = IpNetwork;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<IpNetwork, E> {
                    text.parse().map_err(E::custom)
                }
            }
            d.deserialize_str(Text).map(Element)
        }
    }
    let elements = Vec::<Element>::deserialize(d)?;
    Ok(elements.into_iter().map(|e| e.0).collect())
}

/// `a.b.c.d/prefix` into `out`; how many bytes it took.
fn write_v4(out: &mut [u8; 19], octets: [u8; 4], prefix: u8) -> usize {
    let mut len = 0;
    for (i, v) in octets.into_iter().chain([prefix]).enumerate() {
        if i > 0 {
            out[len] = if i == 4 { b'/' } else { b'.' };
            len += 1;
        }
        if v >= 100 {
            out[len] = b'0' + v / 100;
            len += 1;
        }
        if v >= 10 {
            out[len] = b'0' + v / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + v % 10;
        len += 1;
    }
    len
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A chain of a table: a base chain when `hook` is set, else a regular chain to jump to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `filter` or `nat` (base chains).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub chain_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
    #[serde(default)]
    pub priority: i32,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn base(
        name: &str,
        chain_type: &str,
        hook: &str,
        priority: i32,
        rules: Vec<Rule>,
    ) -> Chain {
        Chain {
            name: name.into(),
            chain_type: chain_type.into(),
            hook: hook.into(),
            priority,
            rules,
        }
    }

    pub fn regular(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            chain_type: String::new(),
            hook: String::new(),
            priority: 0,
            rules,
        }
    }
}

/// Start a rule: `rule().iif("br0").not_oif("br0").drop()`.
pub fn rule() -> RuleBuilder {
    RuleBuilder(Vec::new())
}

pub struct RuleBuilder(Vec<Match>);

impl RuleBuilder {
    fn with(mut self, m: Match) -> Self {
        self.0.push(m);
        self
    }
    pub fn iif(self, n: &str) -> Self {
        self.with(Match::Iif(n.into()))
    }
    pub fn oif(self, n: &str) -> Self {
        self.with(Match::Oif(n.into()))
    }
    pub fn not_oif(self, n: &str) -> Self {
        self.with(Match::NotOif(n.into()))
    }
    pub fn saddr(self, n: IpNetwork) -> Self {
        self.with(whole_family(n).unwrap_or(Match::Saddr(n)))
    }
    pub fn daddr(self, n: IpNetwork) -> Self {
        self.with(whole_family(n).unwrap_or(Match::Daddr(n)))
    }
    pub fn not_daddr(self, n: IpNetwork) -> Self {
        self.with(Match::NotDaddr(n))
    }
    pub fn saddr_in(self, n: Vec<IpNetwork>) -> Self {
        self.with(Match::SaddrIn(n))
    }
    pub fn daddr_in(self, n: Vec<IpNetwork>) -> Self {
        self.with(Match::DaddrIn(n))
    }
    pub fn saddr_set(self, set: &str, ipv6: bool) -> Self {
        self.with(Match::SaddrSet {
            set: set.into(),
            ipv6,
        })
    }
    pub fn daddr_set(self, set: &str, ipv6: bool) -> Self {
        self.with(Match::DaddrSet {
            set: set.into(),
            ipv6,
        })
    }
    /// `meta l4proto P th dport A[-B]`.
    pub fn dport(self, proto: &str, start: u16, end: u16) -> Self {
        self.with(Match::L4proto(proto.into()))
            .with(Match::Dport(start, end))
    }
    pub fn not_iif(self, n: &str) -> Self {
        self.with(Match::NotIif(n.into()))
    }
    pub fn vni(self, vni: u32) -> Self {
        self.with(Match::Vni(vni))
    }
    pub fn l4proto(self, proto: &str) -> Self {
        self.with(Match::L4proto(proto.into()))
    }
    pub fn local_daddr(self) -> Self {
        self.with(Match::LocalDaddr)
    }
    pub fn established(self) -> Self {
        self.with(Match::CtState(vec!["established".into(), "related".into()]))
    }
    pub fn dnat_ed(self) -> Self {
        self.with(Match::CtDnat)
    }
    pub fn chance(self, percent: u8) -> Self {
        self.with(Match::Chance(percent))
    }
    pub fn then(self, verdict: Verdict) -> Rule {
        Rule {
            matches: self.0,
            verdict,
        }
    }
    pub fn accept(self) -> Rule {
        self.then(Verdict::Accept)
    }
    pub fn drop(self) -> Rule {
        self.then(Verdict::Drop)
    }
    pub fn count_drop(self) -> Rule {
        self.then(Verdict::CountDrop)
    }
    pub fn masquerade(self) -> Rule {
        self.then(Verdict::Masquerade)
    }
    pub fn goto(self, chain: &str) -> Rule {
        self.then(Verdict::Goto(chain.into()))
    }
}

/// `0.0.0.0/0` or `::/0` as the family match it comes to. Every packet of the family passes
/// an address match on it, yet the kernel would load, mask and compare the address: three
/// expressions of the seven of a policy's `deny: [0.0.0.0/0]`, in every replica's table.
fn whole_family(n: IpNetwork) -> Option<Match> {
    (n.prefix() == 0).then_some(Match::Family { ipv6: n.is_ipv6() })
}

fn set_family(ipv6: bool) -> &'static str {
    if ipv6 {
        "ip6"
    } else {
        "ip"
    }
}

fn family(n: &IpNetwork) -> &'static str {
    if n.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// The family of a VIP map, from its entries (all of one family).
fn vmap_family(entries: &[(IpAddr, Option<String>)]) -> &'static str {
    match entries.first() {
        Some((IpAddr::V6(_), _)) => "ip6",
        Some((IpAddr::V4(_), _)) | None => "ip",
    }
}

fn set_text<T: fmt::Display>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", inner.join(", "))
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Iif(n) => write!(f, "iifname \"{n}\""),
            Match::NotIif(n) => write!(f, "iifname != \"{n}\""),
            Match::Oif(n) => write!(f, "oifname \"{n}\""),
            Match::NotOif(n) => write!(f, "oifname != \"{n}\""),
            Match::Saddr(n) => write!(f, "{} saddr {n}", family(n)),
            Match::NotSaddr(n) => write!(f, "{} saddr != {n}", family(n)),
            Match::Daddr(n) => write!(f, "{} daddr {n}", family(n)),
            Match::NotDaddr(n) => write!(f, "{} daddr != {n}", family(n)),
            Match::Family { ipv6: false } => f.write_str("meta nfproto ipv4"),
            Match::Family { ipv6: true } => f.write_str("meta nfproto ipv6"),
            Match::SaddrIn(s) => write!(
                f,
                "{} saddr {}",
                s.first().map_or("ip", family),
                set_text(s)
            ),
            Match::DaddrIn(s) => write!(
                f,
                "{} daddr {}",
                s.first().map_or("ip", family),
                set_text(s)
            ),
            Match::SaddrSet { set, ipv6 } => write!(f, "{} saddr @{set}", set_family(*ipv6)),
            Match::DaddrSet { set, ipv6 } => write!(f, "{} daddr @{set}", set_family(*ipv6)),
            Match::L4proto(p) => write!(f, "meta l4proto {p}"),
            Match::Dport(a, b) if a == b => write!(f, "th dport {a}"),
            Match::Dport(a, b) => write!(f, "th dport {a}-{b}"),
            Match::LocalDaddr => write!(f, "fib daddr type local"),
            Match::CtState(s) => write!(f, "ct state {}", s.join(",")),
            Match::CtDnat => write!(f, "ct status dnat"),
            Match::Chance(p) => write!(f, "numgen random mod 100 < {p}"),
            Match::Vni(v) => write!(f, "@th,96,24 {v}"),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::CountDrop => f.write_str("counter drop"),
            Verdict::Masquerade => f.write_str("masquerade"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::DnatRandom { backends, port } => {
                let map: Vec<String> = backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {b}"))
                    .collect();
                let fam = if backends.first().is_some_and(IpAddr::is_ipv6) {
                    "ip6"
                } else {
                    "ip"
                };
                write!(
                    f,
                    "dnat {fam} to numgen random mod {} map {{ {} }}",
                    backends.len(),
                    map.join(", ")
                )?;
                match port {
                    Some(p) => write!(f, " : {p}"),
                    None => Ok(()),
                }
            }
            Verdict::DnatMap { map, ipv6 } => {
                let fam = if *ipv6 { "ip6" } else { "ip" };
                write!(
                    f,
                    "dnat {fam} to numgen random mod {} map @{map}",
                    super::compile::SLOTS
                )
            }
            Verdict::VipMap(entries) => {
                let map: Vec<String> = entries
                    .iter()
                    .map(|(ip, c)| match c {
                        Some(c) => format!("{ip} : goto {c}"),
                        None => format!("{ip} : drop"),
                    })
                    .collect();
                write!(
                    f,
                    "{} daddr vmap {{ {} }}",
                    vmap_family(entries),
                    map.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.verdict)
    }
}

/// A rule's identity: a hash of its text, which it carries as its comment in the kernel, so
/// that `observe` can tell which of the desired rules a live table holds without parsing
/// nft's normalized output back.
pub fn rule_tag(rule: &Rule) -> String {
    let digest = Sha256::digest(rule.to_string().as_bytes());
    format!(
        "nc:{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// A table as the kernel layer loads it: its chains ([`kernel_chains`]), its maps and its
/// named sets.
pub fn kernel_table(
    chains: &[Chain],
    maps: &[Map],
    sets: &[Set],
) -> Result<nftables::Table, CompileError> {
    Ok(nftables::Table {
        chains: kernel_chains(chains)?,
        sets: maps
            .iter()
            .map(backend_slots)
            .chain(sets.iter().map(peer_set))
            .collect(),
    })
}

/// The chains as the kernel layer loads them: each rule's expressions, each rule tagged.
pub fn kernel_chains(chains: &[Chain]) -> Result<Vec<nftables::Chain>, CompileError> {
    chains
        .iter()
        .map(|c| {
            Ok(nftables::Chain {
                name: c.name.clone(),
                base: (!c.hook.is_empty()).then(|| nftables::BaseChain {
                    chain_type: c.chain_type.clone(),
                    hook: c.hook.clone(),
                    priority: c.priority,
                }),
                rules: c
                    .rules
                    .iter()
                    .map(|r| {
                        Ok(nftables::Rule {
                            expr: compile(r)?,
                            tag: rule_tag(r),
                        })
                    })
                    .collect::<Result<_, CompileError>>()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_elements_are_written_and_read_as_ipnetwork_does() {
        let elements: Vec<IpNetwork> = [
            "0.0.0.0/0",
            "10.90.0.2/32",
            "192.168.100.255/24",
            "1.20.255.9/8",
            "fd00::1/128",
            "::/0",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let set = Set {
            name: "from.web".into(),
            elements: elements.clone(),
        };
        let expected = serde_json::json!({"name": "from.web", "elements": elements});
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let back: Set = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        let bad = r#"{"name": "from.web", "elements": ["10.0.0.1/33"]}"#;
        assert!(serde_json::from_str::<Set>(bad).is_err());
    }

    #[test]
    fn reads_as_nft() {
        let r = rule().iif("br0").not_oif("br0").drop();
        assert_eq!(r.to_string(), "iifname \"br0\" oifname != \"br0\" drop");
        let m = rule()
            .saddr("10.0.0.0/24".parse().unwrap())
            .not_oif("br0")
            .masquerade();
        assert_eq!(
            m.to_string(),
            "ip saddr 10.0.0.0/24 oifname != \"br0\" masquerade"
        );
        assert_eq!(
            rule().oif("b").established().accept().to_string(),
            "oifname \"b\" ct state established,related accept"
        );
        let d = rule()
            .local_daddr()
            .dport("tcp", 8080, 8080)
            .then(Verdict::DnatRandom {
                backends: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
                port: Some(80),
            });
        assert_eq!(d.to_string(), "fib daddr type local meta l4proto tcp th dport 8080 dnat ip to numgen random mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 } : 80");
        let v = rule().then(Verdict::VipMap(vec![
            ("10.0.0.9".parse().unwrap(), Some("svc_web".into())),
            ("10.0.0.10".parse().unwrap(), None),
        ]));
        assert_eq!(
            v.to_string(),
            "ip daddr vmap { 10.0.0.9 : goto svc_web, 10.0.0.10 : drop }"
        );
        let s = rule().saddr_set("from.web", false).accept();
        assert_eq!(s.to_string(), "ip saddr @from.web accept");
        let s6 = rule().daddr_set("to6.web", true).count_drop();
        assert_eq!(s6.to_string(), "ip6 daddr @to6.web counter drop");
    }

    #[test]
    fn kernel_chains_carry_tags_and_base() {
        let accept = rule().iif("br0").accept();
        let chains = kernel_chains(&[
            Chain::base("forward", "filter", "forward", 0, vec![accept.clone()]),
            Chain::regular("vip_web_front", vec![]),
        ])
        .unwrap();
        assert_eq!(
            chains[0].base.as_ref().map(|b| b.hook.as_str()),
            Some("forward")
        );
        assert_eq!(chains[0].rules[0].tag, rule_tag(&accept));
        assert!(rule_tag(&accept).starts_with("nc:"));
        assert_eq!(chains[0].rules[0].expr, compile(&accept).unwrap());
        assert_eq!(chains[1].base, None);
    }
}
