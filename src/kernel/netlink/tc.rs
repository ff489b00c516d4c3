//! Traffic control over rtnetlink: qdiscs and htb classes of a link, read and written as
//! `tc` does, without a `tc` process. netlink-packet-route has no htb or netem options, so
//! their `TCA_OPTIONS` are encoded here as the kernel's structs (linux/pkt_sched.h).
//!
//! Rates go to the kernel with `linklayer = ethernet`, so it needs no rate tables; bursts are
//! kept as times (psched ticks of 64 ns) at the class's rate, as the kernel keeps them.

use super::*;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage, TcOption};
use rtnetlink::packet_core::{DefaultNla, Emitable, Nla};

/// `TC_H_ROOT`: the parent of a link's root qdisc.
pub const ROOT: u32 = u32::MAX;

const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const HTB_VERSION: u32 = 3;
/// htb's default rate-to-quantum divisor (tc's `r2q`): the kernel derives each class's
/// quantum from it, clamped to sane bounds.
const HTB_R2Q: u32 = 10;
/// Packets netem holds (tc's default).
const NETEM_LIMIT: u32 = 1000;
/// One psched tick, in nanoseconds (the kernel's PSCHED_SHIFT is 6).
const TICK_NS: u128 = 64;

/// A qdisc of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub handle: u32,
    pub parent: u32,
    pub kind: QdiscKind,
}

/// The qdiscs netcompose makes, with their options; any other by its kernel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QdiscKind {
    /// Unclassified packets go to class `major:default_class`.
    Htb {
        default_class: u32,
    },
    Netem {
        delay_ns: u64,
        jitter_ns: u64,
    },
    Other(String),
}

/// An htb class: rates in bytes per second, bursts in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub handle: u32,
    pub parent: u32,
    pub rate: u64,
    pub ceil: u64,
    pub burst: u32,
    pub cburst: u32,
}

/// The kernel's form of a burst: the time `bytes` take at `rate` bytes per second, in ticks.
/// Two bursts with the same ticks are the same to the kernel.
pub fn burst_ticks(bytes: u32, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    u32::try_from(ns / TICK_NS).unwrap_or(u32::MAX)
}

fn ticks_to_bytes(ticks: u32, rate: u64) -> u32 {
    let bytes = u128::from(ticks) * TICK_NS * u128::from(rate) / 1_000_000_000;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate (≥ 2^32: ~0).
fn ratespec(rate: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = TC_LINKLAYER_ETHERNET;
    b[8..12].copy_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
    b
}

fn nla(kind: u16, value: Vec<u8>) -> Vec<u8> {
    let attr = DefaultNla::new(kind, value);
    let mut buf = vec![0u8; attr.buffer_len()];
    attr.emit(&mut buf);
    buf
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Each (kind, value) of a run of netlink attributes.
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// The htb qdisc's options: TCA_HTB_INIT (struct tc_htb_glob).
pub fn htb_qdisc_options(default_class: u32) -> Vec<u8> {
    let mut glob = Vec::with_capacity(20);
    for v in [HTB_VERSION, HTB_R2Q, default_class, 0, 0] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    nla(TCA_HTB_INIT, glob)
}

/// An htb class's options: TCA_HTB_PARMS (struct tc_htb_opt), and the 64-bit rates when
/// they do not fit the struct.
pub fn htb_class_options(c: &HtbClass) -> Vec<u8> {
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(c.rate));
    opt.extend_from_slice(&ratespec(c.ceil));
    for v in [
        burst_ticks(c.burst, c.rate),
        burst_ticks(c.cburst, c.ceil),
        0, // quantum: from r2q
        0, // level: the kernel's
        0, // prio
    ] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    let mut out = nla(TCA_HTB_PARMS, opt);
    if c.rate > u64::from(u32::MAX) {
        out.extend(nla(TCA_HTB_RATE64, c.rate.to_ne_bytes().to_vec()));
    }
    if c.ceil > u64::from(u32::MAX) {
        out.extend(nla(TCA_HTB_CEIL64, c.ceil.to_ne_bytes().to_vec()));
    }
    out
}

/// netem's options: struct tc_netem_qopt (times in ticks, for old kernels), then the
/// nanosecond times that newer kernels read instead.
pub fn netem_options(delay_ns: u64, jitter_ns: u64) -> Vec<u8> {
    let ticks = |ns: u64| u32::try_from(u128::from(ns) / TICK_NS).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(48);
    for v in [ticks(delay_ns), NETEM_LIMIT, 0, 0, 0, ticks(jitter_ns)] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend(nla(TCA_NETEM_LATENCY64, delay_ns.to_ne_bytes().to_vec()));
    out.extend(nla(TCA_NETEM_JITTER64, jitter_ns.to_ne_bytes().to_vec()));
    out
}

fn parse_htb_class(header: &TcHeader, options: &[u8]) -> Option<HtbClass> {
    let mut parms = None;
    let mut rate64 = None;
    let mut ceil64 = None;
    for (kind, value) in attrs(options) {
        match kind {
            TCA_HTB_PARMS => parms = Some(value),
            TCA_HTB_RATE64 => rate64 = u64_at(value, 0),
            TCA_HTB_CEIL64 => ceil64 = u64_at(value, 0),
            _ => {}
        }
    }
    let p = parms?;
    let rate = rate64.unwrap_or(u64::from(u32_at(p, 8)?));
    let ceil = ceil64.unwrap_or(u64::from(u32_at(p, 20)?));
    Some(HtbClass {
        handle: header.handle.into(),
        parent: header.parent.into(),
        rate,
        ceil,
        burst: ticks_to_bytes(u32_at(p, 24)?, rate),
        cburst: ticks_to_bytes(u32_at(p, 28)?, ceil),
    })
}

fn parse_qdisc_kind(kind: &str, options: &[u8]) -> QdiscKind {
    match kind {
        "htb" => attrs(options)
            .into_iter()
            .find(|(k, _)| *k == TCA_HTB_INIT)
            .and_then(|(_, v)| u32_at(v, 8))
            .map_or_else(
                || QdiscKind::Other(kind.into()),
                |default_class| QdiscKind::Htb { default_class },
            ),
        "netem" => {
            let ticks = |at| u32_at(options, at).map_or(0, |t| u64::from(t) * 64);
            let mut delay_ns = ticks(0);
            let mut jitter_ns = ticks(20);
            for (k, v) in attrs(options.get(24..).unwrap_or_default()) {
                match k {
                    TCA_NETEM_LATENCY64 => delay_ns = u64_at(v, 0).unwrap_or(delay_ns),
                    TCA_NETEM_JITTER64 => jitter_ns = u64_at(v, 0).unwrap_or(jitter_ns),
                    _ => {}
                }
            }
            QdiscKind::Netem {
                delay_ns,
                jitter_ns,
            }
        }
        other => QdiscKind::Other(other.into()),
    }
}

/// The kind and raw `TCA_OPTIONS` of a tc message.
fn kind_and_options(m: &TcMessage) -> (String, Vec<u8>) {
    let mut kind = String::new();
    let mut options = Vec::new();
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => kind = k.clone(),
            TcAttribute::Options(opts) => {
                for o in opts {
                    if let TcOption::Other(raw) = o {
                        let mut buf = vec![0u8; raw.value_len()];
                        raw.emit_value(&mut buf);
                        options = buf;
                    }
                }
            }
            _ => {}
        }
    }
    (kind, options)
}

fn message(index: u32, handle: u32, parent: u32, kind: &str, options: Vec<u8>) -> TcMessage {
    let header = TcHeader {
        index: i32::try_from(index).unwrap_or(i32::MAX),
        handle: TcHandle::from(handle),
        parent: TcHandle::from(parent),
        ..Default::default()
    };
    let mut attributes = vec![TcAttribute::Kind(kind.into())];
    if !options.is_empty() {
        attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    }
    TcMessage::from_parts(header, attributes)
}

/// `1:10` as tc writes a handle.
fn handle_text(h: u32) -> String {
    format!("{:x}:{:x}", h >> 16, h & 0xffff)
}

/// The tree netcompose keeps on a link: an htb root `1:` whose one leaf class `1:10` (under
/// `1:1`, which holds the ceiling) takes every packet, with netem `10:` under the leaf when
/// there is a delay; or netem alone at the root. The leaf gets `rate` and may borrow up to
/// `ceil` from `1:1`; alone on the link, it sends at up to `ceil`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaper {
    pub htb: Option<HtbShape>,
    pub netem: Option<NetemShape>,
}

/// Rates in bytes per second, burst in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbShape {
    pub rate: u64,
    pub ceil: u64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetemShape {
    pub delay_ns: u64,
    pub jitter_ns: u64,
}

/// What a link's tc holds, as [`Shaper`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeState {
    /// Only the link's default qdisc.
    Default,
    Shaper(Shaper),
    /// Something else at the root.
    Foreign,
}

pub const HTB_ROOT: u32 = 0x0001_0000;
pub const HTB_TOP: u32 = 0x0001_0001;
pub const HTB_LEAF_MINOR: u32 = 0x10;
pub const HTB_LEAF: u32 = HTB_ROOT | HTB_LEAF_MINOR;
pub const NETEM_HANDLE: u32 = 0x0010_0000;

impl Shaper {
    /// The qdiscs and classes to add, in order (a class before the qdisc under it).
    pub fn tree(&self) -> (Vec<Qdisc>, Vec<HtbClass>, Option<Qdisc>) {
        let netem = |parent| {
            self.netem.map(|n| Qdisc {
                handle: NETEM_HANDLE,
                parent,
                kind: QdiscKind::Netem {
                    delay_ns: n.delay_ns,
                    jitter_ns: n.jitter_ns,
                },
            })
        };
        match self.htb {
            None => (netem(ROOT).into_iter().collect(), vec![], None),
            Some(h) => {
                let root = Qdisc {
                    handle: HTB_ROOT,
                    parent: ROOT,
                    kind: QdiscKind::Htb {
                        default_class: HTB_LEAF_MINOR,
                    },
                };
                let top = HtbClass {
                    handle: HTB_TOP,
                    parent: HTB_ROOT,
                    rate: h.ceil,
                    ceil: h.ceil,
                    burst: h.burst,
                    cburst: h.burst,
                };
                let leaf = HtbClass {
                    handle: HTB_LEAF,
                    parent: HTB_TOP,
                    rate: h.rate,
                    ceil: h.ceil,
                    burst: h.burst,
                    cburst: h.burst,
                };
                (vec![root], vec![top, leaf], netem(HTB_LEAF))
            }
        }
    }

    /// Read a link's qdiscs and classes back; `burst_hint` is a burst the caller expects,
    /// taken when the kernel holds the same time for it (the kernel keeps bursts as times,
    /// which do not always give the bytes back exactly).
    pub fn read(qdiscs: &[Qdisc], classes: &[HtbClass], burst_hint: Option<u32>) -> TreeState {
        // The kernel's default qdisc (noqueue on a veth, pfifo_fast, ...) has handle 0; any
        // added one has a handle.
        let Some(root) = qdiscs.iter().find(|q| q.parent == ROOT && q.handle != 0) else {
            return TreeState::Default;
        };
        let netem_under = |parent| {
            qdiscs.iter().find_map(|q| match q.kind {
                QdiscKind::Netem {
                    delay_ns,
                    jitter_ns,
                } if q.parent == parent => Some(NetemShape {
                    delay_ns,
                    jitter_ns,
                }),
                _ => None,
            })
        };
        match root.kind {
            QdiscKind::Netem { .. } => TreeState::Shaper(Shaper {
                htb: None,
                netem: netem_under(ROOT),
            }),
            QdiscKind::Htb { default_class }
                if root.handle == HTB_ROOT && default_class == HTB_LEAF_MINOR =>
            {
                let top = classes.iter().find(|c| c.handle == HTB_TOP);
                let leaf = classes.iter().find(|c| c.handle == HTB_LEAF);
                let (Some(top), Some(leaf)) = (top, leaf) else {
                    return TreeState::Foreign;
                };
                let burst = burst_hint
                    .filter(|b| burst_ticks(*b, leaf.rate) == burst_ticks(leaf.burst, leaf.rate))
                    .unwrap_or(leaf.burst);
                if top.rate != leaf.ceil || top.ceil != leaf.ceil || classes.len() != 2 {
                    return TreeState::Foreign;
                }
                TreeState::Shaper(Shaper {
                    htb: Some(HtbShape {
                        rate: leaf.rate,
                        ceil: leaf.ceil,
                        burst,
                    }),
                    netem: netem_under(HTB_LEAF),
                })
            }
            QdiscKind::Htb { .. } | QdiscKind::Other(_) => TreeState::Foreign,
        }
    }
}

impl Netlink {
    /// The qdiscs of link `index`.
    pub async fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>, KernelError> {
        let ctx = self.ctx("list", format!("qdiscs of ifindex {index}"));
        let msg = TcMessage::with_index(i32::try_from(index).unwrap_or(i32::MAX));
        let replies = self
            .dump(&ctx, RouteNetlinkMessage::GetQueueDiscipline(msg))
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q)
                    if u32::try_from(q.header.index) == Ok(index) =>
                {
                    let (kind, options) = kind_and_options(&q);
                    Some(Qdisc {
                        handle: q.header.handle.into(),
                        parent: q.header.parent.into(),
                        kind: parse_qdisc_kind(&kind, &options),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The htb classes of link `index` (classes of other qdiscs are left out).
    pub async fn htb_classes(&self, index: u32) -> Result<Vec<HtbClass>, KernelError> {
        let ctx = self.ctx("list", format!("classes of ifindex {index}"));
        let msg = TcMessage::with_index(i32::try_from(index).unwrap_or(i32::MAX));
        let replies = self
            .dump(&ctx, RouteNetlinkMessage::GetTrafficClass(msg))
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c) => {
                    let (kind, options) = kind_and_options(&c);
                    (kind == "htb")
                        .then(|| parse_htb_class(&c.header, &options))
                        .flatten()
                }
                _ => None,
            })
            .collect())
    }

    /// Add qdisc `q` to link `index` (`Exists` when its parent already has one).
    pub async fn add_qdisc(&self, index: u32, q: &Qdisc) -> Result<(), KernelError> {
        let (kind, options) = match &q.kind {
            QdiscKind::Htb { default_class } => ("htb", htb_qdisc_options(*default_class)),
            QdiscKind::Netem {
                delay_ns,
                jitter_ns,
            } => ("netem", netem_options(*delay_ns, *jitter_ns)),
            QdiscKind::Other(k) => (k.as_str(), Vec::new()),
        };
        let ctx = self.ctx(
            "add qdisc",
            format!("{kind} {} to ifindex {index}", handle_text(q.handle)),
        );
        let msg = message(index, q.handle, q.parent, kind, options);
        match self
            .request(
                &ctx,
                RouteNetlinkMessage::NewQueueDiscipline(msg),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            // A qdisc kind the kernel does not know is ENOENT (no such module to load).
            Err(KernelError::Os { source, .. })
                if source.raw_os_error() == Some(nix::libc::ENOENT) =>
            {
                Err(ctx.unsupported_kind(kind, source))
            }
            other => other.map(drop),
        }
    }

    /// Delete the root qdisc of link `index`, with everything under it; the link goes back
    /// to its default qdisc. `NotFound` when it has none of its own.
    pub async fn delete_root_qdisc(&self, index: u32) -> Result<(), KernelError> {
        let ctx = self.ctx("delete root qdisc", format!("of ifindex {index}"));
        let header = TcHeader {
            index: i32::try_from(index).unwrap_or(i32::MAX),
            parent: TcHandle::from(ROOT),
            ..Default::default()
        };
        let msg = TcMessage::from_parts(header, vec![]);
        self.request(
            &ctx,
            RouteNetlinkMessage::DelQueueDiscipline(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Add or change htb class `c` of link `index`.
    pub async fn set_htb_class(&self, index: u32, c: &HtbClass) -> Result<(), KernelError> {
        let ctx = self.ctx(
            "set htb class",
            format!("{} of ifindex {index}", handle_text(c.handle)),
        );
        let msg = message(index, c.handle, c.parent, "htb", htb_class_options(c));
        self.request(
            &ctx,
            RouteNetlinkMessage::NewTrafficClass(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htb_class_options_read_back() {
        let c = HtbClass {
            handle: 0x1_0010,
            parent: 0x1_0001,
            rate: 1_250_000,
            ceil: 2_500_000,
            burst: 12_500,
            cburst: 12_500,
        };
        let header = TcHeader {
            handle: c.handle.into(),
            parent: c.parent.into(),
            ..Default::default()
        };
        let back = parse_htb_class(&header, &htb_class_options(&c)).unwrap();
        assert_eq!(back, c);
        let fast = HtbClass {
            rate: 10_000_000_000,
            ceil: 10_000_000_000,
            ..c
        };
        let back = parse_htb_class(&header, &htb_class_options(&fast)).unwrap();
        assert_eq!((back.rate, back.ceil), (fast.rate, fast.ceil));
        assert_eq!(
            burst_ticks(back.burst, back.rate),
            burst_ticks(fast.burst, fast.rate)
        );
    }

    #[test]
    fn qdisc_options_read_back() {
        assert_eq!(
            parse_qdisc_kind("htb", &htb_qdisc_options(0x10)),
            QdiscKind::Htb {
                default_class: 0x10
            }
        );
        assert_eq!(
            parse_qdisc_kind("netem", &netem_options(100_000_000, 10_000_000)),
            QdiscKind::Netem {
                delay_ns: 100_000_000,
                jitter_ns: 10_000_000
            }
        );
        assert_eq!(
            parse_qdisc_kind("noqueue", &[]),
            QdiscKind::Other("noqueue".into())
        );
    }

    #[test]
    fn a_shaper_reads_back_from_its_tree() {
        let s = Shaper {
            htb: Some(HtbShape {
                rate: 1_250_000,
                ceil: 2_500_000,
                burst: 12_500,
            }),
            netem: Some(NetemShape {
                delay_ns: 5_000_000,
                jitter_ns: 0,
            }),
        };
        let (mut qdiscs, classes, leaf) = s.tree();
        qdiscs.extend(leaf);
        assert_eq!(
            Shaper::read(&qdiscs, &classes, Some(12_500)),
            TreeState::Shaper(s)
        );
        assert_eq!(Shaper::read(&[], &[], None), TreeState::Default);
        let noqueue = Qdisc {
            handle: 0,
            parent: ROOT,
            kind: QdiscKind::Other("noqueue".into()),
        };
        assert_eq!(Shaper::read(&[noqueue], &[], None), TreeState::Default);
        let added = Qdisc {
            handle: 0x8001_0000,
            parent: ROOT,
            kind: QdiscKind::Other("fq_codel".into()),
        };
        assert_eq!(Shaper::read(&[added], &[], None), TreeState::Foreign);
        let only_netem = Shaper { htb: None, ..s };
        let (q, c, _) = only_netem.tree();
        assert_eq!(Shaper::read(&q, &c, None), TreeState::Shaper(only_netem));
    }

    #[test]
    fn htb_glob_is_the_kernel_struct() {
        let o = htb_qdisc_options(0x10);
        assert_eq!(o.len(), 24);
        assert_eq!(u16::from_ne_bytes([o[0], o[1]]), 24);
        assert_eq!(u16::from_ne_bytes([o[2], o[3]]), TCA_HTB_INIT);
        assert_eq!(u32_at(&o, 4), Some(3));
        assert_eq!(u32_at(&o, 12), Some(0x10));
    }
}
