//! The nf_tables expressions netcompose writes, typed, and their netlink encoding: loads into
//! registers (payload, meta, ct, fib, numgen), operations on them (cmp, range, bitwise,
//! byteorder, lookup in a set or map), and statements (immediate verdicts, nat, masquerade,
//! counter). A rule is a list of them, run in order by the kernel's nf_tables VM; this is the
//! form nft itself compiles its rules to (`nft --debug=netlink`).

use super::wire::Msg;

/// A register: the verdict register, or one of the four 16-byte data registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Verdict,
    R1,
    R2,
}

impl Reg {
    fn id(self) -> u32 {
        match self {
            Reg::Verdict => 0,
            Reg::R1 => 1,
            Reg::R2 => 2,
        }
    }
}

/// Which header a payload load reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network,
    Transport,
}

/// Meta keys (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    IifName,
    OifName,
    NfProto,
    L4Proto,
}

/// Conntrack keys (`enum nft_ct_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// What a fib lookup returns: here, the route type of the address (`fib daddr type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    AddrType,
}

/// Which address a fib lookup is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibKey {
    Saddr,
    Daddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// The address family of a NAT statement in an inet table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatFamily {
    Ipv4,
    Ipv6,
}

/// A verdict, in a rule or as the data of a verdict map's element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

/// A value or a verdict (an immediate's data, a map element's data).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

/// What a lookup looks in: a named set or map of the table, or an anonymous one that the rule
/// carries and that is created with it (and goes away with it).
#[derive(Debug, Clone, PartialEq)]
pub enum SetRef {
    Named(String),
    Anonymous(Box<super::table::SetSpec>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    Ct {
        key: CtKey,
        dreg: Reg,
    },
    Fib {
        key: FibKey,
        result: FibResult,
        dreg: Reg,
    },
    /// `numgen random mod N` (plus an offset).
    NumgenRandom {
        modulus: u32,
        offset: u32,
        dreg: Reg,
    },
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// Whether the register lies in `[from, to]` (`eq`), or outside it (`!eq`).
    Range {
        sreg: Reg,
        eq: bool,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Host to network order of `len` bytes made of `size`-byte words (for comparing a host
    /// integer, such as numgen's, with memcmp-ordered data).
    Hton {
        sreg: Reg,
        dreg: Reg,
        len: u32,
        size: u32,
    },
    Lookup {
        sreg: Reg,
        /// Where a map's data goes (`Verdict` for a verdict map); None for a set.
        dreg: Option<Reg>,
        set: SetRef,
        invert: bool,
    },
    Immediate {
        dreg: Reg,
        data: Data,
    },
    Nat {
        kind: NatKind,
        family: NatFamily,
        addr: Option<Reg>,
        proto: Option<Reg>,
    },
    Masquerade,
    Counter {
        packets: u64,
        bytes: u64,
    },
}

// Attribute numbers of linux/netfilter/nf_tables.h.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

impl Verdict {
    /// The verdict code (`NF_ACCEPT`, `NF_DROP`, `NFT_*`), a signed 32-bit value on the wire.
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            Verdict::Accept | Verdict::Drop | Verdict::Continue | Verdict::Return => None,
        }
    }
}

/// `NFTA_DATA_VALUE` or `NFTA_DATA_VERDICT` inside the current nest.
pub(super) fn put_data(m: &mut Msg, data: &Data) {
    match data {
        Data::Value(v) => {
            m.bytes(NFTA_DATA_VALUE, v);
        }
        Data::Verdict(v) => {
            m.begin(NFTA_DATA_VERDICT);
            m.u32(NFTA_VERDICT_CODE, v.code() as u32);
            if let Some(c) = v.chain() {
                m.str(NFTA_VERDICT_CHAIN, c);
            }
            m.end();
        }
    }
}

fn nested_data(m: &mut Msg, kind: u16, data: &Data) {
    m.begin(kind);
    put_data(m, data);
    m.end();
}

fn value(m: &mut Msg, kind: u16, v: &[u8]) {
    nested_data(m, kind, &Data::Value(v.to_vec()));
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Cmp { .. } => "cmp",
            Expr::Range { .. } => "range",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Hton { .. } => "byteorder",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Nat { .. } => "nat",
            Expr::Masquerade => "masq",
            Expr::Counter { .. } => "counter",
        }
    }

    /// Append this expression as one `NFTA_LIST_ELEM` of a rule's `NFTA_RULE_EXPRESSIONS`.
    /// `set` names the set a lookup refers to, with its transaction id when it is anonymous.
    pub(super) fn encode(&self, m: &mut Msg, set: Option<(&str, Option<u32>)>) {
        m.begin(NFTA_LIST_ELEM);
        m.str(NFTA_EXPR_NAME, self.name());
        m.begin(NFTA_EXPR_DATA);
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let base = match base {
                    PayloadBase::Network => 1,
                    PayloadBase::Transport => 2,
                };
                m.u32(1, dreg.id())
                    .u32(2, base)
                    .u32(3, *offset)
                    .u32(4, *len);
            }
            Expr::Meta { key, dreg } => {
                let key = match key {
                    MetaKey::IifName => 6,
                    MetaKey::OifName => 7,
                    MetaKey::NfProto => 15,
                    MetaKey::L4Proto => 16,
                };
                m.u32(1, dreg.id()).u32(2, key);
            }
            Expr::Ct { key, dreg } => {
                let key = match key {
                    CtKey::State => 0,
                    CtKey::Status => 2,
                };
                m.u32(1, dreg.id()).u32(2, key);
            }
            Expr::Fib { key, result, dreg } => {
                let result = match result {
                    FibResult::AddrType => 3,
                };
                let flags = match key {
                    FibKey::Saddr => 1,
                    FibKey::Daddr => 2,
                };
                m.u32(1, dreg.id()).u32(2, result).u32(3, flags);
            }
            Expr::NumgenRandom {
                modulus,
                offset,
                dreg,
            } => {
                m.u32(1, dreg.id())
                    .u32(2, *modulus)
                    .u32(3, 1)
                    .u32(4, *offset);
            }
            Expr::Cmp { sreg, op, data } => {
                let op = match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                    CmpOp::Lt => 2,
                    CmpOp::Lte => 3,
                    CmpOp::Gt => 4,
                    CmpOp::Gte => 5,
                };
                m.u32(1, sreg.id()).u32(2, op);
                value(m, 3, data);
            }
            Expr::Range { sreg, eq, from, to } => {
                m.u32(1, sreg.id()).u32(2, if *eq { 0 } else { 1 });
                value(m, 3, from);
                value(m, 4, to);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                m.u32(1, sreg.id())
                    .u32(2, dreg.id())
                    .u32(3, mask.len() as u32);
                value(m, 4, mask);
                value(m, 5, xor);
            }
            Expr::Hton {
                sreg,
                dreg,
                len,
                size,
            } => {
                m.u32(1, sreg.id())
                    .u32(2, dreg.id())
                    .u32(3, 1)
                    .u32(4, *len)
                    .u32(5, *size);
            }
            Expr::Lookup {
                sreg, dreg, invert, ..
            } => {
                let (name, id) = set.unwrap_or(("", None));
                m.str(1, name).u32(2, sreg.id());
                if let Some(d) = dreg {
                    m.u32(3, d.id());
                }
                if let Some(id) = id {
                    m.u32(4, id);
                }
                if *invert {
                    m.u32(5, 1);
                }
            }
            Expr::Immediate { dreg, data } => {
                m.u32(1, dreg.id());
                nested_data(m, 2, data);
            }
            Expr::Nat {
                kind,
                family,
                addr,
                proto,
            } => {
                let kind = match kind {
                    NatKind::Snat => 0,
                    NatKind::Dnat => 1,
                };
                let family = match family {
                    NatFamily::Ipv4 => 2,
                    NatFamily::Ipv6 => 10,
                };
                m.u32(1, kind).u32(2, family);
                if let Some(r) = addr {
                    m.u32(3, r.id());
                }
                if let Some(r) = proto {
                    m.u32(5, r.id());
                }
            }
            Expr::Masquerade => {}
            Expr::Counter { packets, bytes } => {
                m.u64(1, *bytes).u64(2, *packets);
            }
        }
        m.end();
        m.end();
    }
}

/// A rule's counter, read back: (packets, bytes).
pub(super) fn counter_of(expressions: &[u8]) -> Option<(u64, u64)> {
    use super::wire::{attributes, be64, string};
    attributes(expressions)
        .iter()
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .map(|(_, e)| attributes(e))
        .find(|e| string(e, NFTA_EXPR_NAME).as_deref() == Some("counter"))
        .and_then(|e| {
            let data = attributes(super::wire::attr(&e, NFTA_EXPR_DATA)?);
            Some((be64(&data, 2)?, be64(&data, 1)?))
        })
}

#[cfg(test)]
mod tests {
    use super::super::wire::{attr, attributes, string, MsgType, NFGENMSG_LEN, NLMSG_HDRLEN};
    use super::*;

    fn encoded(e: &Expr) -> Vec<u8> {
        let mut m = Msg::new(MsgType::NewRule, 0, 1);
        m.begin(4);
        e.encode(&mut m, None);
        m.end();
        let b = m.finish();
        let top = attributes(&b[NLMSG_HDRLEN + NFGENMSG_LEN..]);
        attr(&top, 4).unwrap().to_vec()
    }

    #[test]
    fn an_expression_is_named_and_nested() {
        let list = encoded(&Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Reg::R1,
        });
        let elem = attributes(attr(&attributes(&list), NFTA_LIST_ELEM).unwrap());
        assert_eq!(string(&elem, NFTA_EXPR_NAME).as_deref(), Some("meta"));
        let data = attributes(attr(&elem, NFTA_EXPR_DATA).unwrap());
        assert_eq!(attr(&data, 2), Some(&16u32.to_be_bytes()[..]));
    }

    #[test]
    fn a_counter_reads_back() {
        let list = encoded(&Expr::Counter {
            packets: 3,
            bytes: 180,
        });
        assert_eq!(counter_of(&list), Some((3, 180)));
        let none = encoded(&Expr::Masquerade);
        assert_eq!(counter_of(&none), None);
    }

    #[test]
    fn verdicts_carry_their_chain() {
        let list = encoded(&Expr::Immediate {
            dreg: Reg::Verdict,
            data: Data::Verdict(Verdict::Goto("vip_web".into())),
        });
        let elem = attributes(attr(&attributes(&list), NFTA_LIST_ELEM).unwrap());
        let data = attributes(attr(&elem, NFTA_EXPR_DATA).unwrap());
        let imm = attributes(attr(&data, 2).unwrap());
        let verdict = attributes(attr(&imm, NFTA_DATA_VERDICT).unwrap());
        assert_eq!(attr(&verdict, 1), Some(&(-4i32).to_be_bytes()[..]));
        assert_eq!(string(&verdict, 2).as_deref(), Some("vip_web"));
    }
}
