//! Reading and deleting nftables tables straight from the kernel over nfnetlink.
//!
//! `observe` needs, for every table of the project (one per replica namespace), only which
//! chains exist and the comment (the netcompose tag) of each rule, in order, and the elements
//! of its named maps. A few netlink requests on a socket opened in the namespace cost a
//! fraction of a millisecond. The kernel's answers carry an errno, so a missing table is
//! `ErrorKind::NotFound`, not a message to read.
//!
//! A rule's comment is in `NFTA_RULE_USERDATA`, as libnftnl's TLVs (type u8, length u8,
//! value), type 0 (`NFTNL_UDATA_RULE_COMMENT`) being a NUL-terminated string.

use super::super::netns::NetnsDir;
use super::super::{Ctx, ErrorKind, KernelError};
use super::expr::{counter_of, Data, Verdict};
use super::table::{successor, Element, Writer};
use super::wire::{
    self, attr, attributes, string, Attributes, Msg, MsgType, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use std::os::fd::OwnedFd;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Each chain of a table with the tags of its rules, in order.
pub type ChainTags = Vec<(String, Vec<String>)>;

/// What observe reads of a live table: its chains with their rule tags, and its named sets
/// and maps with their elements (ranges put back together).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveTable {
    pub chains: ChainTags,
    pub sets: Vec<(String, Vec<Element>)>,
}

/// Chains, rule tags and named sets of inet table `table` in namespace `ns` (None: the
/// caller's); None when the table does not exist.
pub fn read_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<LiveTable>, KernelError> {
    in_table(dir, ns, table, "list table", live_table)
}

/// [`read_table`] on a socket already open in the table's namespace ([`wire::open_in`]).
pub fn read_table_on(
    fd: &OwnedFd,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<LiveTable>, KernelError> {
    let ctx = Ctx::new("list table", table, ns);
    if !exists(&ctx, fd, table)? {
        return Ok(None);
    }
    live_table(&ctx, fd, table).map(Some)
}

fn live_table(ctx: &Ctx, fd: &OwnedFd, table: &str) -> Result<LiveTable, KernelError> {
    let chains = chain_tags(ctx, fd, table)?;
    let mut sets = Vec::new();
    for attrs in dump(ctx, fd, MsgType::GetSet, 5)? {
        if string(&attrs, NFTA_SET_TABLE).as_deref() != Some(table) {
            continue;
        }
        let flags = attr(&attrs, NFTA_SET_FLAGS)
            .and_then(|f| <[u8; 4]>::try_from(f).ok())
            .map_or(0, u32::from_be_bytes);
        let Some(name) = string(&attrs, NFTA_SET_NAME) else {
            continue;
        };
        if flags & NFT_SET_ANONYMOUS != 0 {
            continue;
        }
        let elements = elements_of(ctx, fd, table, &name, flags & NFT_SET_INTERVAL != 0)?;
        sets.push((name, elements));
    }
    Ok(LiveTable { chains, sets })
}

/// `read` run on an nfnetlink socket inside namespace `ns` when inet table `table` exists
/// there; None when it does not.
fn in_table<R: Send>(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    op: &str,
    read: impl FnOnce(&Ctx, &OwnedFd, &str) -> Result<R, KernelError> + Send,
) -> Result<Option<R>, KernelError> {
    let ctx = Ctx::new(op, table, ns);
    dir.run_in(ns, move || {
        let fd = wire::open(&ctx)?;
        if !exists(&ctx, &fd, table)? {
            return Ok(None);
        }
        read(&ctx, &fd, table).map(Some)
    })?
}

/// A rule's counter: its chain, its tag, packets and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub chain: String,
    pub tag: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The rule tags of each chain of inet table `table` in namespace `ns` (None: the caller's),
/// chains and rules in the kernel's order, `?` for a rule without a comment; None when the
/// table does not exist.
pub fn table_tags(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<ChainTags>, KernelError> {
    in_table(dir, ns, table, "list table", chain_tags)
}

/// The counters of the rules of `table` that have one, in the kernel's order; None when the
/// table does not exist.
pub fn rule_counters(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<Vec<RuleCounter>>, KernelError> {
    in_table(dir, ns, table, "read counters", |ctx, fd, table| {
        counters_on(fd, ctx.netns.as_deref(), table)
    })
}

/// [`rule_counters`] on a socket already open in the table's namespace (see
/// [`wire::open_in`]); empty when the table does not exist.
pub fn counters_on(
    fd: &OwnedFd,
    ns: Option<&str>,
    table: &str,
) -> Result<Vec<RuleCounter>, KernelError> {
    let ctx = Ctx::new("read counters", table, ns);
    Ok(dump(&ctx, fd, MsgType::GetRule, 3)?
        .iter()
        .filter(|a| string(a, NFTA_RULE_TABLE).as_deref() == Some(table))
        .filter_map(|a| {
            let (packets, bytes) = counter_of(attr(a, NFTA_RULE_EXPRESSIONS)?)?;
            Some(RuleCounter {
                chain: string(a, NFTA_RULE_CHAIN)?,
                tag: rule_tag(a),
                packets,
                bytes,
            })
        })
        .collect())
}

/// The elements of named set or map `set` of `table`, ranges put back together for an
/// interval set; NotFound when there is no such set.
pub fn set_elements(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    set: &str,
    interval: bool,
) -> Result<Vec<Element>, KernelError> {
    let ctx = Ctx::new("list set", format!("{table} {set}"), ns);
    let (table, set) = (table.to_string(), set.to_string());
    dir.run_in(ns, move || {
        let fd = wire::open(&ctx)?;
        elements_of(&ctx, &fd, &table, &set, interval)
    })?
}

/// Delete inet table `table` in namespace `ns` (None: the caller's), with everything in it;
/// false when there was no such table.
pub fn delete_table(dir: &NetnsDir, ns: Option<&str>, table: &str) -> Result<bool, KernelError> {
    let ctx = Ctx::new("delete table", table, ns);
    dir.run_in(ns, move || {
        let fd = wire::open(&ctx)?;
        delete_table_on(&fd, ns, table)
    })?
}

/// [`delete_table`] on a socket already open in the table's namespace ([`wire::open_in`]).
pub fn delete_table_on(fd: &OwnedFd, ns: Option<&str>, table: &str) -> Result<bool, KernelError> {
    let ctx = Ctx::new("delete table", table, ns);
    let mut w = Writer::new(table);
    w.delete_table();
    match wire::commit(&ctx, fd, w.batch) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The ruleset generation of the socket's namespace (NFT_MSG_GETGEN): every transaction
/// committed there, by anyone, moves it on by one.
pub fn generation_on(ctx: &Ctx, fd: &OwnedFd) -> Result<u32, KernelError> {
    const NFTA_GEN_ID: u16 = 1;
    let m = Msg::new(MsgType::GetGen, NLM_F_REQUEST, 1);
    let answer = wire::request_one(ctx, fd, m, 1)?;
    attr(&answer, NFTA_GEN_ID)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| ctx.protocol("no generation in the reply to NFT_MSG_GETGEN"))
}

/// Whether inet table `table` exists: NFT_MSG_GETTABLE by name, ENOENT when it does not.
pub(super) fn exists(ctx: &Ctx, fd: &OwnedFd, table: &str) -> Result<bool, KernelError> {
    let mut m = Msg::new(MsgType::GetTable, NLM_F_REQUEST | NLM_F_ACK, 1);
    m.str(NFTA_TABLE_NAME, table);
    match wire::request(ctx, fd, m, 1) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn chain_tags(ctx: &Ctx, fd: &OwnedFd, table: &str) -> Result<ChainTags, KernelError> {
    let mut chains: ChainTags = dump(ctx, fd, MsgType::GetChain, 2)?
        .iter()
        .filter(|attrs| string(attrs, NFTA_CHAIN_TABLE).as_deref() == Some(table))
        .filter_map(|attrs| string(attrs, NFTA_CHAIN_NAME))
        .map(|name| (name, Vec::new()))
        .collect();
    for attrs in dump(ctx, fd, MsgType::GetRule, 3)? {
        if string(&attrs, NFTA_RULE_TABLE).as_deref() != Some(table) {
            continue;
        }
        let Some(chain) = string(&attrs, NFTA_RULE_CHAIN) else {
            continue;
        };
        if let Some((_, tags)) = chains.iter_mut().find(|(n, _)| *n == chain) {
            tags.push(rule_tag(&attrs));
        }
    }
    Ok(chains)
}

fn rule_tag(attrs: &Attributes) -> String {
    attr(attrs, NFTA_RULE_USERDATA)
        .and_then(comment)
        .unwrap_or_else(|| "?".to_string())
}

pub(super) fn elements_of(
    ctx: &Ctx,
    fd: &OwnedFd,
    table: &str,
    set: &str,
    interval: bool,
) -> Result<Vec<Element>, KernelError> {
    let mut m = Msg::new(MsgType::GetSetElem, NLM_F_REQUEST | NLM_F_DUMP, 4);
    m.str(NFTA_SET_ELEM_LIST_TABLE, table)
        .str(NFTA_SET_ELEM_LIST_SET, set);
    let mut raw: Vec<(Vec<u8>, bool, Option<Data>)> = Vec::new();
    for reply in wire::request(ctx, fd, m, 4)? {
        let Some(list) = attr(&reply, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        for (_, elem) in attributes(list) {
            let e = attributes(&elem);
            let Some(key) = attr(&e, NFTA_SET_ELEM_KEY)
                .map(attributes)
                .and_then(|k| attr(&k, NFTA_DATA_VALUE).map(<[u8]>::to_vec))
            else {
                continue;
            };
            let end = attr(&e, NFTA_SET_ELEM_FLAGS)
                .and_then(|f| <[u8; 4]>::try_from(f).ok())
                .is_some_and(|f| u32::from_be_bytes(f) & 1 == 1);
            let data = attr(&e, NFTA_SET_ELEM_DATA).and_then(|d| data_of(&attributes(d)));
            raw.push((key, end, data));
        }
    }
    Ok(if interval {
        ranges(raw)
    } else {
        // A hash set lists its elements in an order of its own: sorted, a read is the same
        // every time.
        raw.sort();
        raw.into_iter()
            .map(|(key, _, data)| Element {
                key,
                last: None,
                data,
            })
            .collect()
    })
}

/// Interval elements as ranges: each start runs to the key before the next end (an end
/// sorts before a start of the same key), or to the top of the key space.
fn ranges(mut raw: Vec<(Vec<u8>, bool, Option<Data>)>) -> Vec<Element> {
    raw.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<Element> = Vec::new();
    let mut open: Option<(Vec<u8>, Option<Data>)> = None;
    for (key, end, data) in raw {
        if end {
            if let Some((start, data)) = open.take() {
                out.push(Element {
                    key: start,
                    last: Some(predecessor(&key)),
                    data,
                });
            }
        } else {
            if let Some((start, data)) = open.take() {
                out.push(Element {
                    last: Some(predecessor(&key)),
                    key: start,
                    data,
                });
            }
            open = Some((key, data));
        }
    }
    if let Some((start, data)) = open {
        let top = vec![0xff; start.len()];
        out.push(Element {
            key: start,
            last: Some(top),
            data,
        });
    }
    out
}

fn predecessor(key: &[u8]) -> Vec<u8> {
    let mut prev = key.to_vec();
    for b in prev.iter_mut().rev() {
        if *b == 0 {
            *b = 0xff;
        } else {
            *b -= 1;
            break;
        }
    }
    debug_assert!(successor(&prev).as_deref() == Some(key) || key.iter().all(|b| *b == 0));
    prev
}

fn data_of(d: &Attributes) -> Option<Data> {
    if let Some(v) = attr(d, NFTA_DATA_VALUE) {
        return Some(Data::Value(v.to_vec()));
    }
    let v = attributes(attr(d, NFTA_DATA_VERDICT)?);
    let code = i32::from_be_bytes(attr(&v, 1)?.try_into().ok()?);
    let chain = || string(&v, 2).unwrap_or_default();
    Some(Data::Verdict(match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        -1 => Verdict::Continue,
        -3 => Verdict::Jump(chain()),
        -4 => Verdict::Goto(chain()),
        -5 => Verdict::Return,
        _ => return None,
    }))
}

/// One dump of the inet family: the attributes of every object, in the kernel's order.
fn dump(ctx: &Ctx, fd: &OwnedFd, kind: MsgType, seq: u32) -> Result<Vec<Attributes>, KernelError> {
    wire::request(
        ctx,
        fd,
        Msg::new(kind, NLM_F_REQUEST | NLM_F_DUMP, seq),
        seq,
    )
}

/// The comment in a rule's user data (libnftnl TLVs).
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if kind == NFTNL_UDATA_RULE_COMMENT {
            return Some(wire::cstr(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments() {
        let udata = [&[NFTNL_UDATA_RULE_COMMENT, 4][..], b"nc:\0"].concat();
        assert_eq!(comment(&udata).as_deref(), Some("nc:"));
        assert_eq!(comment(&[1, 1, 7]), None);
    }

    #[test]
    fn interval_elements_become_ranges() {
        let v = |b: u8| Some(Data::Value(vec![b]));
        let raw = vec![
            (vec![0, 0], false, v(1)),
            (vec![0x80, 0], true, None),
            (vec![0x80, 0], false, v(2)),
        ];
        assert_eq!(
            ranges(raw),
            vec![
                Element {
                    key: vec![0, 0],
                    last: Some(vec![0x7f, 0xff]),
                    data: v(1)
                },
                Element {
                    key: vec![0x80, 0],
                    last: Some(vec![0xff, 0xff]),
                    data: v(2)
                },
            ]
        );
    }
}
