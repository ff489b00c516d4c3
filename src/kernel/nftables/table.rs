//! Tables, chains, rules and sets as nf_tables takes them, and the batches that write them:
//! a table replaced whole, or changed chain by chain, in one transaction either way.
//!
//! Chains and rules come in as a neutral description ([`Chain`], [`Rule`]): what the rules
//! mean and how they are recognised again is the firewall's business, not this layer's.

use super::expr::{put_data, Data, Expr, SetRef};
use super::wire::{Batch, Msg, MsgType, NLM_F_APPEND, NLM_F_CREATE};
use std::collections::HashSet;

/// A chain of an inet table: a base chain when `base` is set, else a regular chain to jump to.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// Where a base chain hooks in, in nft's words: type `filter` or `nat`; hook `prerouting`,
/// `input`, `forward`, `output` or `postrouting`; and its priority.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseChain {
    pub chain_type: String,
    pub hook: String,
    pub priority: i32,
}

/// One rule: its expressions, and the tag it carries as its comment, by which the live rule
/// is recognised ([`super::read::table_tags`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub expr: Vec<Expr>,
    pub tag: String,
}

/// A table's contents: its chains and its named sets and maps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub chains: Vec<Chain>,
    pub sets: Vec<SetSpec>,
}

/// The type of a set's keys or a map's values: nft's datatype (which only nft's display
/// reads) and the length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    /// A host-order integer of 4 bytes (what numgen yields).
    Integer,
    /// A host-order 4-byte integer that nft shows as a mark; the type nft gives interval
    /// keys in host order, which it stores in network order.
    Mark,
}

impl KeyType {
    /// Host-order keys: the kernel does not care, but nft shows them wrongly unless the set
    /// says so in its user data.
    fn host_order(self) -> bool {
        match self {
            KeyType::Integer | KeyType::Mark => true,
            KeyType::Ipv4Addr | KeyType::Ipv6Addr => false,
        }
    }

    fn id_len(self) -> (u32, u32) {
        match self {
            KeyType::Integer => (4, 4),
            KeyType::Ipv4Addr => (7, 4),
            KeyType::Ipv6Addr => (8, 16),
            KeyType::Mark => (19, 4),
        }
    }
}

/// What a map's elements map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapData {
    Verdict,
    Value(KeyType),
}

/// A set or map: named (an object of the table, changed element by element) or anonymous
/// (carried by the rule that looks in it; its name is then ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct SetSpec {
    pub name: String,
    pub key: KeyType,
    pub data: Option<MapData>,
    /// Elements are ranges of keys ([`Element::last`]).
    pub interval: bool,
    pub elements: Vec<Element>,
}

/// An element: a key (the first of a range in an interval set, whose last key is `last`,
/// inclusive; None: the key alone), and a map's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<u8>,
    pub last: Option<Vec<u8>>,
    pub data: Option<Data>,
}

/// Why a batch could not be built from the description given.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown chain hook `{0}`")]
    Hook(String),
    #[error("unknown chain type `{0}`")]
    ChainType(String),
}

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
/// libnftnl's set user data TLV saying in which byte order nft shows the keys.
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nft's `BYTEORDER_HOST_ENDIAN`.
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// libnftnl's rule user data TLV holding the comment.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
/// The kernel numbers an anonymous set itself when its name holds `%d`.
const ANONYMOUS_NAME: &str = "__set%d";

/// The messages of one transaction on inet table `table`, with the ids of anonymous sets.
pub struct Writer<'t> {
    pub batch: Batch,
    table: &'t str,
    next_set_id: u32,
}

impl<'t> Writer<'t> {
    pub fn new(table: &'t str) -> Writer<'t> {
        Writer {
            batch: Batch::new(),
            table,
            next_set_id: 1,
        }
    }

    /// Create the table if it is missing (no error if it exists).
    pub fn add_table(&mut self) {
        let t = self.table;
        self.batch.push(MsgType::NewTable, NLM_F_CREATE, |m| {
            m.str(NFTA_TABLE_NAME, t);
        });
    }

    pub fn delete_table(&mut self) {
        let t = self.table;
        self.batch.push(MsgType::DelTable, 0, |m| {
            m.str(NFTA_TABLE_NAME, t);
        });
    }

    pub fn add_chain(&mut self, c: &Chain) -> Result<(), BuildError> {
        let hook = match &c.base {
            None => None,
            Some(b) => Some((
                hook_number(&b.hook)?,
                chain_type(&b.chain_type)?,
                b.priority,
            )),
        };
        let t = self.table;
        self.batch.push(MsgType::NewChain, NLM_F_CREATE, |m| {
            m.str(NFTA_CHAIN_TABLE, t).str(NFTA_CHAIN_NAME, &c.name);
            if let Some((num, kind, priority)) = hook {
                m.begin(NFTA_CHAIN_HOOK)
                    .u32(NFTA_HOOK_HOOKNUM, num)
                    .u32(NFTA_HOOK_PRIORITY, priority as u32)
                    .end();
                m.u32(NFTA_CHAIN_POLICY, 1).str(NFTA_CHAIN_TYPE, kind);
            }
        });
        Ok(())
    }

    /// Delete every rule of a chain.
    pub fn flush_chain(&mut self, chain: &str) {
        let t = self.table;
        self.batch.push(MsgType::DelRule, 0, |m| {
            m.str(NFTA_RULE_TABLE, t).str(NFTA_RULE_CHAIN, chain);
        });
    }

    pub fn delete_chain(&mut self, chain: &str) {
        let t = self.table;
        self.batch.push(MsgType::DelChain, 0, |m| {
            m.str(NFTA_CHAIN_TABLE, t).str(NFTA_CHAIN_NAME, chain);
        });
    }

    /// Append a rule to a chain, its anonymous sets created just before it.
    pub fn add_rule(&mut self, chain: &str, r: &Rule) {
        let mut refs: Vec<Option<(String, Option<u32>)>> = Vec::with_capacity(r.expr.len());
        for e in &r.expr {
            refs.push(match e {
                Expr::Lookup {
                    set: SetRef::Named(n),
                    ..
                } => Some((n.clone(), None)),
                Expr::Lookup {
                    set: SetRef::Anonymous(s),
                    ..
                } => {
                    let id = self.next_set_id;
                    self.next_set_id += 1;
                    self.add_set_as(s, ANONYMOUS_NAME, id, true);
                    Some((ANONYMOUS_NAME.to_string(), Some(id)))
                }
                _ => None,
            });
        }
        let t = self.table;
        let udata = [
            &[NFTNL_UDATA_RULE_COMMENT, (r.tag.len() + 1) as u8][..],
            r.tag.as_bytes(),
            &[0],
        ]
        .concat();
        self.batch
            .push(MsgType::NewRule, NLM_F_CREATE | NLM_F_APPEND, |m| {
                m.str(NFTA_RULE_TABLE, t).str(NFTA_RULE_CHAIN, chain);
                m.begin(NFTA_RULE_EXPRESSIONS);
                for (e, set) in r.expr.iter().zip(&refs) {
                    e.encode(m, set.as_ref().map(|(n, id)| (n.as_str(), *id)));
                }
                m.end();
                m.bytes(NFTA_RULE_USERDATA, &udata);
            });
    }

    /// Create a named set or map with its elements.
    pub fn add_set(&mut self, s: &SetSpec) {
        let id = self.next_set_id;
        self.next_set_id += 1;
        self.add_set_as(s, &s.name, id, false);
    }

    /// A set is created with a transaction id (the kernel refuses one without), by which an
    /// anonymous one is found again in the same batch.
    fn add_set_as(&mut self, s: &SetSpec, name: &str, id: u32, anonymous: bool) {
        let t = self.table;
        let mut flags = 0;
        if anonymous {
            flags |= NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        }
        if s.interval {
            flags |= NFT_SET_INTERVAL;
        }
        if s.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        let (key_type, key_len) = s.key.id_len();
        self.batch.push(MsgType::NewSet, NLM_F_CREATE, |m| {
            m.str(NFTA_SET_TABLE, t)
                .str(NFTA_SET_NAME, name)
                .u32(NFTA_SET_FLAGS, flags)
                .u32(NFTA_SET_KEY_TYPE, key_type)
                .u32(NFTA_SET_KEY_LEN, key_len);
            match s.data {
                Some(MapData::Verdict) => {
                    m.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                }
                Some(MapData::Value(k)) => {
                    let (id, len) = k.id_len();
                    m.u32(NFTA_SET_DATA_TYPE, id).u32(NFTA_SET_DATA_LEN, len);
                }
                None => {}
            }
            m.u32(NFTA_SET_ID, id);
            // A constant set says how many elements it holds, as nft does: with a size the
            // kernel gives a hash set a table of that size (`nft_hash_fast` for 4-byte keys)
            // instead of a resizable rhashtable that starts at 4 buckets and grows on a
            // worker as the elements arrive. A named set gets none: the size is also a limit.
            if anonymous {
                m.begin(NFTA_SET_DESC)
                    .u32(NFTA_SET_DESC_SIZE, wire_elements(s))
                    .end();
            }
            if s.key.host_order() {
                let order = BYTEORDER_HOST_ENDIAN.to_ne_bytes();
                let udata = [&[NFTNL_UDATA_SET_KEYBYTEORDER, 4][..], &order].concat();
                m.bytes(NFTA_SET_USERDATA, &udata);
            }
        });
        if !s.elements.is_empty() {
            let by_id = anonymous.then_some(id);
            self.elements(MsgType::NewSetElem, name, by_id, s.interval, &s.elements);
        }
    }

    pub fn delete_set(&mut self, set: &str) {
        let t = self.table;
        self.batch.push(MsgType::DelSet, 0, |m| {
            m.str(NFTA_SET_TABLE, t).str(NFTA_SET_NAME, set);
        });
    }

    /// Add elements to a named set or map.
    pub fn add_elements(&mut self, set: &str, interval: bool, elements: &[Element]) {
        if !elements.is_empty() {
            self.elements(MsgType::NewSetElem, set, None, interval, elements);
        }
    }

    /// Remove elements of a named set or map.
    pub fn delete_elements(&mut self, set: &str, interval: bool, elements: &[Element]) {
        if !elements.is_empty() {
            self.elements(MsgType::DelSetElem, set, None, interval, elements);
        }
    }

    fn elements(
        &mut self,
        kind: MsgType,
        set: &str,
        id: Option<u32>,
        interval: bool,
        elements: &[Element],
    ) {
        let t = self.table;
        let flags = if kind == MsgType::NewSetElem {
            NLM_F_CREATE
        } else {
            0
        };
        self.batch.push(kind, flags, |m| {
            m.str(NFTA_SET_ELEM_LIST_TABLE, t)
                .str(NFTA_SET_ELEM_LIST_SET, set);
            if let Some(id) = id {
                m.u32(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in elements {
                element(m, &e.key, e.data.as_ref(), false);
                if let Some(end) = range_end(e, interval) {
                    element(m, &end, None, true);
                }
            }
            m.end();
        });
    }
}

/// The key of the element that ends `e`'s range in an interval set: one past its last key,
/// flagged as an end. A range that reaches the top of the key space has none.
fn range_end(e: &Element, interval: bool) -> Option<Vec<u8>> {
    e.last.as_deref().and_then(successor).filter(|_| interval)
}

/// How many elements the kernel holds for `s`: with an interval set's range ends.
fn wire_elements(s: &SetSpec) -> u32 {
    let ends = s
        .elements
        .iter()
        .filter(|e| range_end(e, s.interval).is_some())
        .count();
    (s.elements.len() + ends) as u32
}

fn element(m: &mut Msg, key: &[u8], data: Option<&Data>, end: bool) {
    m.begin(NFTA_LIST_ELEM);
    m.begin(NFTA_SET_ELEM_KEY);
    put_data(m, &Data::Value(key.to_vec()));
    m.end();
    if let Some(d) = data {
        m.begin(NFTA_SET_ELEM_DATA);
        put_data(m, d);
        m.end();
    }
    if end {
        m.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    }
    m.end();
}

/// The big-endian number one more than `key`; None past the top.
pub fn successor(key: &[u8]) -> Option<Vec<u8>> {
    let mut next = key.to_vec();
    for b in next.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(next);
        }
    }
    None
}

fn hook_number(hook: &str) -> Result<u32, BuildError> {
    Ok(match hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        other => return Err(BuildError::Hook(other.to_string())),
    })
}

fn chain_type(kind: &str) -> Result<&'static str, BuildError> {
    match kind {
        "filter" => Ok("filter"),
        "nat" => Ok("nat"),
        other => Err(BuildError::ChainType(other.to_string())),
    }
}

/// The transaction that replaces `table` with `chains` and named `sets`: add (so that the
/// delete cannot fail), delete, then create it again with its sets, chains and rules.
pub fn replace(table: &str, chains: &[Chain], sets: &[SetSpec]) -> Result<Batch, BuildError> {
    let mut w = Writer::new(table);
    w.add_table();
    w.delete_table();
    w.add_table();
    for s in sets {
        w.add_set(s);
    }
    for c in chains {
        w.add_chain(c)?;
    }
    for c in chains {
        for r in &c.rules {
            w.add_rule(&c.name, r);
        }
    }
    Ok(w.batch)
}

/// Whether a set of `new` has another shape (key, data, interval) than the set of the same
/// name in `old`: elements cannot carry it over, so [`update`] replaces the whole table.
pub fn reshaped(old: &[SetSpec], new: &[SetSpec]) -> bool {
    new.iter().any(|n| {
        old.iter()
            .find(|o| o.name == n.name)
            .is_some_and(|o| (o.key, o.data, o.interval) != (n.key, n.data, n.interval))
    })
}

/// The transaction that turns `old` into `new`: new chains are added, changed ones flushed and
/// refilled, dropped ones deleted; a named set's elements are added and removed one by one, and
/// a set no longer wanted is deleted once no rule looks in it (after the flushes). When
/// a base chain's hook, type or priority changes, or a set's shape does, the whole table is
/// replaced instead.
pub fn update(
    table: &str,
    old: (&[Chain], &[SetSpec]),
    new: (&[Chain], &[SetSpec]),
) -> Result<Batch, BuildError> {
    let (old_chains, old_sets) = old;
    let (new_chains, new_sets) = new;
    let same_chains = new_chains.iter().all(|n| {
        old_chains
            .iter()
            .find(|o| o.name == n.name)
            .is_none_or(|o| o.base == n.base)
    });
    if !same_chains || reshaped(old_sets, new_sets) {
        return replace(table, new_chains, new_sets);
    }
    let find = |list: &'_ [Chain], name: &str| list.iter().find(|c| c.name == name).cloned();
    let mut w = Writer::new(table);
    w.add_table();
    for s in new_sets {
        match old_sets.iter().find(|o| o.name == s.name) {
            None => w.add_set(s),
            Some(o) => {
                // Removed first: a range that moved must not overlap its old self.
                let (was, is): (HashSet<&Element>, HashSet<&Element>) =
                    (o.elements.iter().collect(), s.elements.iter().collect());
                let gone: Vec<Element> = o
                    .elements
                    .iter()
                    .filter(|e| !is.contains(e))
                    .cloned()
                    .collect();
                let added: Vec<Element> = s
                    .elements
                    .iter()
                    .filter(|e| !was.contains(e))
                    .cloned()
                    .collect();
                w.delete_elements(&s.name, s.interval, &gone);
                w.add_elements(&s.name, s.interval, &added);
            }
        }
    }
    for c in new_chains
        .iter()
        .filter(|c| find(old_chains, &c.name).is_none())
    {
        w.add_chain(c)?;
    }
    let changed: Vec<&Chain> = new_chains
        .iter()
        .filter(|c| find(old_chains, &c.name).is_none_or(|o| o.rules != c.rules))
        .collect();
    let dropped: Vec<&Chain> = old_chains
        .iter()
        .filter(|c| find(new_chains, &c.name).is_none())
        .collect();
    for c in changed.iter().chain(dropped.iter()) {
        w.flush_chain(&c.name);
    }
    for c in &changed {
        for r in &c.rules {
            w.add_rule(&c.name, r);
        }
    }
    for c in dropped {
        w.delete_chain(&c.name);
    }
    for s in old_sets
        .iter()
        .filter(|o| !new_sets.iter().any(|n| n.name == o.name))
    {
        w.delete_set(&s.name);
    }
    Ok(w.batch)
}

#[cfg(test)]
mod tests {
    use super::super::expr::{Reg, Verdict};
    use super::*;

    fn accept() -> Rule {
        Rule {
            expr: vec![Expr::Immediate {
                dreg: Reg::Verdict,
                data: Data::Verdict(Verdict::Accept),
            }],
            tag: "nc:0123456789ab".into(),
        }
    }

    fn chain(hook: &str) -> Chain {
        Chain {
            name: "forward".into(),
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: hook.into(),
                priority: 0,
            }),
            rules: vec![accept()],
        }
    }

    #[test]
    fn a_replace_is_add_delete_add_then_chains_and_rules() {
        let b = replace("netcompose-p", &[chain("forward")], &[]).unwrap();
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn an_unknown_hook_is_refused() {
        assert!(matches!(
            replace("t", &[chain("ingress-ish")], &[]),
            Err(BuildError::Hook(h)) if h == "ingress-ish"
        ));
    }

    #[test]
    fn an_update_of_a_map_is_its_elements_only() {
        let map = |data: &[u8]| SetSpec {
            name: "vip_web_front".into(),
            key: KeyType::Mark,
            data: Some(MapData::Value(KeyType::Ipv4Addr)),
            interval: true,
            elements: vec![Element {
                key: vec![0, 0, 0, 0],
                last: Some(vec![0, 0, 0xff, 0xff]),
                data: Some(Data::Value(data.to_vec())),
            }],
        };
        let chains = [chain("forward")];
        let b = update(
            "t",
            (&chains, &[map(&[10, 0, 0, 2])]),
            (&chains, &[map(&[10, 0, 0, 3])]),
        )
        .unwrap();
        // The table (created if missing), one delete and one add of elements.
        assert_eq!(b.len(), 3);
        let same = update(
            "t",
            (&chains, &[map(&[10, 0, 0, 2])]),
            (&chains, &[map(&[10, 0, 0, 2])]),
        )
        .unwrap();
        assert_eq!(same.len(), 1);
    }

    #[test]
    fn a_set_no_longer_wanted_is_deleted_after_the_rules_that_used_it() {
        let set = SetSpec {
            name: "from.web".into(),
            key: KeyType::Ipv4Addr,
            data: None,
            interval: true,
            elements: vec![],
        };
        let old = [chain("input")];
        let mut new = chain("input");
        new.rules.clear();
        let b = update("t", (&old, &[set]), (&[new], &[])).unwrap();
        // The table, the chain's flush, then the set's deletion.
        assert_eq!(b.len(), 3);
    }

    /// The size of each set the batch creates, as (name, NFTA_SET_DESC_SIZE if any).
    fn set_sizes(b: Batch) -> Vec<(String, Option<u32>)> {
        use super::super::wire::{attr, attributes, messages, string, Finished, NFGENMSG_LEN};
        let Finished { bytes, .. } = b.finish();
        let ctx = crate::kernel::Ctx::new("t", "t", None);
        let new_set = (super::super::wire::NFNL_SUBSYS_NFTABLES << 8) | MsgType::NewSet as u16;
        messages(&ctx, &bytes)
            .unwrap()
            .into_iter()
            .filter(|(kind, _, _)| *kind == new_set)
            .map(|(_, _, body)| {
                let attrs = attributes(&body[NFGENMSG_LEN..]);
                let size = attr(&attrs, NFTA_SET_DESC).map(|desc| {
                    let desc = attributes(desc);
                    let size = attr(&desc, NFTA_SET_DESC_SIZE).unwrap();
                    u32::from_be_bytes(size.try_into().unwrap())
                });
                (string(&attrs, NFTA_SET_NAME).unwrap(), size)
            })
            .collect()
    }

    #[test]
    fn an_anonymous_set_is_sized_to_its_elements_a_named_one_is_not() {
        let range = |first: u8, last: u8| Element {
            key: vec![10, 0, 0, first],
            last: Some(vec![10, 0, 0, last]),
            data: None,
        };
        let to_the_top = Element {
            key: vec![192, 0, 0, 0],
            last: Some(vec![0xff; 4]),
            data: None,
        };
        let set = SetSpec {
            name: String::new(),
            key: KeyType::Ipv4Addr,
            data: None,
            interval: true,
            // Two ranges with an end element each, one that ends at the top with none.
            elements: vec![range(1, 2), range(8, 15), to_the_top],
        };
        let mut w = Writer::new("t");
        w.add_rule(
            "input",
            &Rule {
                expr: vec![Expr::Lookup {
                    sreg: Reg::R1,
                    dreg: None,
                    set: SetRef::Anonymous(Box::new(set.clone())),
                    invert: false,
                }],
                tag: "nc:0123456789ab".into(),
            },
        );
        w.add_set(&SetSpec {
            name: "from.web".into(),
            ..set
        });
        assert_eq!(
            set_sizes(w.batch),
            [
                (ANONYMOUS_NAME.to_string(), Some(5)),
                ("from.web".to_string(), None)
            ]
        );
    }

    #[test]
    fn successors_carry() {
        assert_eq!(successor(&[0, 0xff]), Some(vec![1, 0]));
        assert_eq!(successor(&[0xff, 0xff]), None);
    }
}
