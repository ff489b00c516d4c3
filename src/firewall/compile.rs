//! The rule builder's matches and verdicts as nf_tables expressions, the kernel layer's typed
//! form ([`crate::kernel::nftables::expr`]): what nft would compile the rule's text to, so that
//! `nft list table` shows the rule as the plan printed it.
//!
//! Address matches in an inet table start with `meta nfproto` (nft's implicit dependency), so
//! that an IPv4 match never reads an IPv6 header; sets of networks are interval sets whose
//! overlapping ranges are merged (the kernel refuses overlaps). Adjacent ones are kept apart,
//! as nft keeps them, so that nft lists the addresses the plan printed.

use super::rule::{Map, Match, Rule, Set, Verdict};
use crate::kernel::nftables::expr::{
    CmpOp, CtKey, Data, Expr, FibKey, FibResult, MetaKey, NatFamily, NatKind, PayloadBase, Reg,
    SetRef, Verdict as KVerdict,
};
use crate::kernel::nftables::{Element, KeyType, MapData, SetSpec};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// A rule the builder can print but nf_tables cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("unknown layer 4 protocol `{0}`")]
    Protocol(String),
    #[error("unknown conntrack state `{0}`")]
    CtState(String),
}

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// `RTN_LOCAL`, the route type `fib daddr type local` compares with.
const RTN_LOCAL: u32 = 2;
/// `IPS_DST_NAT`, the conntrack status bit of a destination-NATed connection.
const IPS_DST_NAT: u32 = 1 << 5;
const IFNAMSIZ: usize = 16;

/// How many slots a VIP's map spreads connections over: `numgen random mod SLOTS` picks one,
/// and each backend holds a range of them. With N backends each range is SLOTS/N rounded down
/// or up, so the spread is even to 1/65536, whatever N; the rule never names N, so a scale
/// replaces the map's N elements in one transaction and leaves chains and policies alone. (A
/// map of exact keys `numgen random mod N` must change its rule with N; one of M fixed slots,
/// each holding a backend, is uneven unless N divides M.)
pub const SLOTS: u32 = 65536;

/// The rule's expressions, matches first, the verdict last.
pub fn compile(rule: &Rule) -> Result<Vec<Expr>, CompileError> {
    let mut out = Vec::new();
    for m in &rule.matches {
        matches(m, &mut out)?;
    }
    verdict(&rule.verdict, &mut out);
    Ok(out)
}

fn load_meta(key: MetaKey) -> Expr {
    Expr::Meta { key, dreg: Reg::R1 }
}

fn cmp(op: CmpOp, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: Reg::R1,
        op,
        data,
    }
}

fn eq_or_neq(negate: bool) -> CmpOp {
    if negate {
        CmpOp::Neq
    } else {
        CmpOp::Eq
    }
}

fn ifname(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(IFNAMSIZ, 0);
    b
}

/// `meta nfproto ipv4|ipv6`, then the address field loaded into register 1.
fn load_addr(v4: bool, source: bool, out: &mut Vec<Expr>) {
    nfproto(v4, out);
    let (offset, len) = match (v4, source) {
        (true, true) => (12, 4),
        (true, false) => (16, 4),
        (false, true) => (8, 16),
        (false, false) => (24, 16),
    };
    out.push(Expr::Payload {
        base: PayloadBase::Network,
        offset,
        len,
        dreg: Reg::R1,
    });
}

/// The packet is of the family: in an inet table, what makes an address's offset mean it.
fn nfproto(v4: bool, out: &mut Vec<Expr>) {
    out.push(load_meta(MetaKey::NfProto));
    out.push(cmp(
        CmpOp::Eq,
        vec![if v4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 }],
    ));
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An address or a network compared with the loaded address.
fn addr_match(n: &IpNetwork, negate: bool, out: &mut Vec<Expr>) {
    let full = if n.is_ipv4() { 32 } else { 128 };
    if n.prefix() != full {
        out.push(Expr::Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            mask: addr_bytes(n.mask()),
            xor: vec![0; addr_bytes(n.mask()).len()],
        });
    }
    out.push(cmp(eq_or_neq(negate), addr_bytes(n.network())));
}

/// The networks of a set as merged ranges of addresses.
pub fn network_elements(set: &[IpNetwork]) -> Vec<Element> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = set
        .iter()
        .map(|n| (addr_bytes(n.network()), addr_bytes(last_address(n))))
        .collect();
    ranges.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (first, last) in ranges {
        match merged.last_mut() {
            Some((_, prev_last)) if *prev_last >= first => {
                if last > *prev_last {
                    *prev_last = last;
                }
            }
            _ => merged.push((first, last)),
        }
    }
    merged
        .into_iter()
        .map(|(key, last)| Element {
            key,
            last: Some(last),
            data: None,
        })
        .collect()
}

fn last_address(n: &IpNetwork) -> IpAddr {
    match n {
        IpNetwork::V4(v) => IpAddr::V4(v.broadcast()),
        IpNetwork::V6(v) => {
            let host = u128::MAX.checked_shr(u32::from(v.prefix())).unwrap_or(0);
            IpAddr::V6((u128::from(v.network()) | host).into())
        }
    }
}

fn addr_set(set: &[IpNetwork], source: bool, out: &mut Vec<Expr>) {
    let v4 = set.first().is_none_or(IpNetwork::is_ipv4);
    load_addr(v4, source, out);
    out.push(Expr::Lookup {
        sreg: Reg::R1,
        dreg: None,
        set: SetRef::Anonymous(Box::new(SetSpec {
            name: String::new(),
            key: if v4 {
                KeyType::Ipv4Addr
            } else {
                KeyType::Ipv6Addr
            },
            data: None,
            interval: true,
            elements: network_elements(set),
        })),
        invert: false,
    });
}

/// The loaded address looked up in the table's named set `set`.
fn named_set(set: &str, v4: bool, source: bool, out: &mut Vec<Expr>) {
    load_addr(v4, source, out);
    out.push(Expr::Lookup {
        sreg: Reg::R1,
        dreg: None,
        set: SetRef::Named(set.to_string()),
        invert: false,
    });
}

/// A policy's named set as the kernel holds it: a set of addresses of one family. A service's
/// addresses are single hosts, held in a hash set (an element each, where an interval set takes
/// a start and an end in a tree: half the elements, and cheaper to insert); a set holding any
/// wider network is an interval set, its networks merged into ranges as an anonymous set's are.
pub fn peer_set(set: &Set) -> SetSpec {
    let v6 = set.elements.first().is_some_and(IpNetwork::is_ipv6);
    let hosts = set
        .elements
        .iter()
        .all(|n| n.prefix() == if n.is_ipv4() { 32 } else { 128 });
    let elements = if hosts {
        let mut keys: Vec<Vec<u8>> = set.elements.iter().map(|n| addr_bytes(n.ip())).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| Element {
                key,
                last: None,
                data: None,
            })
            .collect()
    } else {
        network_elements(&set.elements)
    };
    SetSpec {
        name: set.name.clone(),
        key: addr_key(v6),
        data: None,
        interval: !hosts,
        elements,
    }
}

fn protocol_number(p: &str) -> Result<u8, CompileError> {
    Ok(match p {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        "sctp" => 132,
        other => return Err(CompileError::Protocol(other.to_string())),
    })
}

fn ct_state_bit(s: &str) -> Result<u32, CompileError> {
    Ok(match s {
        "invalid" => 1,
        "established" => 2,
        "related" => 4,
        "new" => 8,
        "untracked" => 64,
        other => return Err(CompileError::CtState(other.to_string())),
    })
}

/// `ct KEY` has one of the bits of `mask`.
fn ct_bits(key: CtKey, mask: u32, out: &mut Vec<Expr>) {
    out.push(Expr::Ct { key, dreg: Reg::R1 });
    out.push(Expr::Bitwise {
        sreg: Reg::R1,
        dreg: Reg::R1,
        mask: mask.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    out.push(cmp(CmpOp::Neq, vec![0; 4]));
}

fn matches(m: &Match, out: &mut Vec<Expr>) -> Result<(), CompileError> {
    match m {
        Match::Iif(n) | Match::NotIif(n) => {
            out.push(load_meta(MetaKey::IifName));
            out.push(cmp(eq_or_neq(matches!(m, Match::NotIif(_))), ifname(n)));
        }
        Match::Oif(n) | Match::NotOif(n) => {
            out.push(load_meta(MetaKey::OifName));
            out.push(cmp(eq_or_neq(matches!(m, Match::NotOif(_))), ifname(n)));
        }
        Match::Saddr(n) | Match::NotSaddr(n) => {
            load_addr(n.is_ipv4(), true, out);
            addr_match(n, matches!(m, Match::NotSaddr(_)), out);
        }
        Match::Daddr(n) | Match::NotDaddr(n) => {
            load_addr(n.is_ipv4(), false, out);
            addr_match(n, matches!(m, Match::NotDaddr(_)), out);
        }
        Match::Family { ipv6 } => nfproto(!ipv6, out),
        Match::SaddrIn(s) => addr_set(s, true, out),
        Match::DaddrIn(s) => addr_set(s, false, out),
        Match::SaddrSet { set, ipv6 } => named_set(set, !ipv6, true, out),
        Match::DaddrSet { set, ipv6 } => named_set(set, !ipv6, false, out),
        Match::L4proto(p) => {
            out.push(load_meta(MetaKey::L4Proto));
            out.push(cmp(CmpOp::Eq, vec![protocol_number(p)?]));
        }
        Match::Dport(a, b) => {
            out.push(Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: Reg::R1,
            });
            if a == b {
                out.push(cmp(CmpOp::Eq, a.to_be_bytes().to_vec()));
            } else {
                out.push(Expr::Range {
                    sreg: Reg::R1,
                    eq: true,
                    from: a.to_be_bytes().to_vec(),
                    to: b.to_be_bytes().to_vec(),
                });
            }
        }
        Match::LocalDaddr => {
            out.push(Expr::Fib {
                key: FibKey::Daddr,
                result: FibResult::AddrType,
                dreg: Reg::R1,
            });
            out.push(cmp(CmpOp::Eq, RTN_LOCAL.to_ne_bytes().to_vec()));
        }
        Match::CtState(states) => {
            let mut mask = 0;
            for s in states {
                mask |= ct_state_bit(s)?;
            }
            ct_bits(CtKey::State, mask, out);
        }
        Match::CtDnat => ct_bits(CtKey::Status, IPS_DST_NAT, out),
        Match::Chance(p) => out.extend(random_below(100, u32::from(*p))),
        Match::Vni(vni) => {
            // The VXLAN header follows the 8-byte UDP header; its VNI is bytes 4 to 6.
            out.push(Expr::Payload {
                base: PayloadBase::Transport,
                offset: 12,
                len: 3,
                dreg: Reg::R1,
            });
            out.push(cmp(CmpOp::Eq, vni.to_be_bytes()[1..].to_vec()));
        }
    }
    Ok(())
}

/// A VIP's map as the kernel holds it: backend `i` of N owns the slots from `i*SLOTS/N` to
/// the one before `(i+1)*SLOTS/N`, as a range keyed in network order (the rule turns numgen's
/// host-order number around before the lookup, since ranges compare bytes).
pub fn backend_slots(map: &Map) -> SetSpec {
    let n = map.backends.len() as u64;
    let v6 = map.backends.first().is_some_and(IpAddr::is_ipv6);
    let bound = |i: u64| (i * u64::from(SLOTS) / n.max(1)) as u32;
    SetSpec {
        name: map.name.clone(),
        key: KeyType::Mark,
        data: Some(MapData::Value(addr_key(v6))),
        interval: true,
        elements: map
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| Element {
                key: bound(i as u64).to_be_bytes().to_vec(),
                last: Some((bound(i as u64 + 1) - 1).to_be_bytes().to_vec()),
                data: Some(Data::Value(addr_bytes(*b))),
            })
            .collect(),
    }
}

/// `numgen random mod modulus < below`: true for `below` of every `modulus` packets (a loss
/// rule's match). numgen's number is in host order; `<` compares bytes, hence the turn.
pub fn random_below(modulus: u32, below: u32) -> Vec<Expr> {
    vec![
        Expr::NumgenRandom {
            modulus,
            offset: 0,
            dreg: Reg::R1,
        },
        Expr::Hton {
            sreg: Reg::R1,
            dreg: Reg::R1,
            len: 4,
            size: 4,
        },
        cmp(CmpOp::Lt, below.to_be_bytes().to_vec()),
    ]
}

/// The key type of an address of one family.
fn addr_key(v6: bool) -> KeyType {
    if v6 {
        KeyType::Ipv6Addr
    } else {
        KeyType::Ipv4Addr
    }
}

/// A `counter` statement (its figures start at zero).
pub fn counter() -> Expr {
    Expr::Counter {
        packets: 0,
        bytes: 0,
    }
}

fn verdict(v: &Verdict, out: &mut Vec<Expr>) {
    let immediate = |v: KVerdict| Expr::Immediate {
        dreg: Reg::Verdict,
        data: Data::Verdict(v),
    };
    match v {
        Verdict::Accept => out.push(immediate(KVerdict::Accept)),
        Verdict::Drop => out.push(immediate(KVerdict::Drop)),
        Verdict::CountDrop => {
            out.push(counter());
            out.push(immediate(KVerdict::Drop));
        }
        Verdict::Goto(c) => out.push(immediate(KVerdict::Goto(c.clone()))),
        Verdict::Masquerade => out.push(Expr::Masquerade),
        Verdict::DnatRandom { backends, port } => {
            let v6 = backends.first().is_some_and(IpAddr::is_ipv6);
            out.push(Expr::NumgenRandom {
                modulus: backends.len() as u32,
                offset: 0,
                dreg: Reg::R1,
            });
            out.push(Expr::Lookup {
                sreg: Reg::R1,
                dreg: Some(Reg::R1),
                set: SetRef::Anonymous(Box::new(SetSpec {
                    name: String::new(),
                    key: KeyType::Integer,
                    data: Some(MapData::Value(addr_key(v6))),
                    interval: false,
                    elements: backends
                        .iter()
                        .enumerate()
                        .map(|(i, b)| Element {
                            key: (i as u32).to_ne_bytes().to_vec(),
                            last: None,
                            data: Some(Data::Value(addr_bytes(*b))),
                        })
                        .collect(),
                })),
                invert: false,
            });
            if let Some(p) = port {
                out.push(Expr::Immediate {
                    dreg: Reg::R2,
                    data: Data::Value(p.to_be_bytes().to_vec()),
                });
            }
            out.push(Expr::Nat {
                kind: NatKind::Dnat,
                family: if v6 { NatFamily::Ipv6 } else { NatFamily::Ipv4 },
                addr: Some(Reg::R1),
                proto: port.map(|_| Reg::R2),
            });
        }
        Verdict::DnatMap { map, ipv6 } => {
            out.push(Expr::NumgenRandom {
                modulus: SLOTS,
                offset: 0,
                dreg: Reg::R1,
            });
            out.push(Expr::Hton {
                sreg: Reg::R1,
                dreg: Reg::R1,
                len: 4,
                size: 4,
            });
            out.push(Expr::Lookup {
                sreg: Reg::R1,
                dreg: Some(Reg::R1),
                set: SetRef::Named(map.clone()),
                invert: false,
            });
            out.push(Expr::Nat {
                kind: NatKind::Dnat,
                family: if *ipv6 {
                    NatFamily::Ipv6
                } else {
                    NatFamily::Ipv4
                },
                addr: Some(Reg::R1),
                proto: None,
            });
        }
        Verdict::VipMap(entries) => {
            let v4 = entries.first().is_none_or(|(ip, _)| ip.is_ipv4());
            load_addr(v4, false, out);
            out.push(Expr::Lookup {
                sreg: Reg::R1,
                dreg: Some(Reg::Verdict),
                set: SetRef::Anonymous(Box::new(SetSpec {
                    name: String::new(),
                    key: if v4 {
                        KeyType::Ipv4Addr
                    } else {
                        KeyType::Ipv6Addr
                    },
                    data: Some(MapData::Verdict),
                    interval: false,
                    elements: entries
                        .iter()
                        .map(|(ip, chain)| Element {
                            key: addr_bytes(*ip),
                            last: None,
                            data: Some(Data::Verdict(match chain {
                                Some(c) => KVerdict::Goto(c.clone()),
                                None => KVerdict::Drop,
                            })),
                        })
                        .collect(),
                })),
                invert: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rule::rule;
    use super::*;

    #[test]
    fn a_peer_set_of_hosts_is_a_hash_set_and_one_with_a_network_an_interval_set() {
        let set = |e: &[&str]| Set {
            name: "from.web".into(),
            elements: e.iter().map(|n| n.parse().unwrap()).collect(),
        };
        let hosts = peer_set(&set(&["10.0.0.3/32", "10.0.0.2/32", "10.0.0.3/32"]));
        assert!(!hosts.interval);
        assert_eq!(hosts.key, KeyType::Ipv4Addr);
        let keys: Vec<_> = hosts.elements.iter().map(|e| (&e.key, &e.last)).collect();
        assert_eq!(
            keys,
            [(&vec![10, 0, 0, 2], &None), (&vec![10, 0, 0, 3], &None)]
        );
        let wide = peer_set(&set(&["10.0.0.2/32", "10.0.1.0/24"]));
        assert!(wide.interval);
        assert_eq!(wide.elements[1].last, Some(vec![10, 0, 1, 255]));
        let v6 = peer_set(&set(&["fd00::2/128"]));
        assert_eq!((v6.key, v6.interval), (KeyType::Ipv6Addr, false));
    }

    #[test]
    fn networks_merge_into_ranges() {
        let nets: Vec<IpNetwork> = ["10.0.0.0/24", "10.0.0.5/32", "10.0.1.0/24", "10.0.3.1/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let e = network_elements(&nets);
        assert_eq!(
            e.len(),
            3,
            "the /32 inside the /24 is merged, adjacent ranges are not"
        );
        assert_eq!(e[0].key, vec![10, 0, 0, 0]);
        assert_eq!(e[0].last, Some(vec![10, 0, 0, 255]));
        assert_eq!(e[2].last, Some(vec![10, 0, 3, 1]));
        let all = network_elements(&["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(all[0].last, Some(vec![255; 4]));
        let v6 = network_elements(&["fd00::/64".parse().unwrap()]);
        assert_eq!(v6[0].last.as_ref().unwrap()[8..], [255; 8]);
    }

    #[test]
    fn an_address_match_depends_on_its_family() {
        let e = compile(&rule().saddr("10.0.0.0/24".parse().unwrap()).accept()).unwrap();
        assert_eq!(e[0], load_meta(MetaKey::NfProto));
        assert_eq!(e[1], cmp(CmpOp::Eq, vec![NFPROTO_IPV4]));
        assert!(matches!(e[3], Expr::Bitwise { .. }));
        assert_eq!(e[4], cmp(CmpOp::Eq, vec![10, 0, 0, 0]));
    }

    #[test]
    fn a_match_on_a_whole_family_is_its_nfproto_alone() {
        for (all, proto, text) in [
            ("0.0.0.0/0", NFPROTO_IPV4, "meta nfproto ipv4 counter drop"),
            ("::/0", NFPROTO_IPV6, "meta nfproto ipv6 counter drop"),
        ] {
            let r = rule().saddr(all.parse().unwrap()).count_drop();
            assert_eq!(r.to_string(), text);
            let e = compile(&r).unwrap();
            assert_eq!(
                e[..2],
                [load_meta(MetaKey::NfProto), cmp(CmpOp::Eq, vec![proto])]
            );
            assert!(matches!(e[2], Expr::Counter { .. }));
        }
        let d = rule().daddr("::/0".parse().unwrap()).accept();
        assert_eq!(d.to_string(), "meta nfproto ipv6 accept");
    }

    #[test]
    fn a_vni_is_three_bytes_at_byte_12_of_the_udp_header() {
        let e = compile(&rule().dport("udp", 4789, 4789).vni(4097).drop()).unwrap();
        let at = e.len() - 3;
        assert_eq!(
            e[at],
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 12,
                len: 3,
                dreg: Reg::R1,
            }
        );
        assert_eq!(e[at + 1], cmp(CmpOp::Eq, vec![0x00, 0x10, 0x01]));
    }

    #[test]
    fn backends_share_the_slots_evenly() {
        let backends: Vec<IpAddr> = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let spec = backend_slots(&Map {
            name: "vip_web_front".into(),
            backends,
        });
        let sizes: Vec<u32> = spec
            .elements
            .iter()
            .map(|e| {
                let n = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
                n(e.last.as_ref().unwrap()) - n(&e.key) + 1
            })
            .collect();
        assert_eq!(sizes, [21845, 21845, 21846]);
        assert_eq!(sizes.iter().sum::<u32>(), SLOTS);
        assert_eq!(spec.elements[0].key, vec![0, 0, 0, 0]);
    }

    #[test]
    fn an_unknown_protocol_is_an_error() {
        assert_eq!(
            compile(&rule().l4proto("quic").accept()),
            Err(CompileError::Protocol("quic".into()))
        );
    }
}
