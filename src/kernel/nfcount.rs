//! The `counter` statements of an nftables table, read over nfnetlink: what `stats` and the
//! metrics report as the packets a policy dropped.
//!
//! A rule's counter is one of its expressions: `NFTA_RULE_EXPRESSIONS` is a list of
//! `NFTA_LIST_ELEM`s, each naming its expression (`NFTA_EXPR_NAME`) and carrying its data
//! (`NFTA_EXPR_DATA`); a counter's data are `NFTA_COUNTER_BYTES` and `NFTA_COUNTER_PACKETS`,
//! big-endian u64s (linux/netfilter/nf_tables.h). The rule is known by its tag (its comment),
//! as [`super::nfnl`] reads it. The socket is opened once inside the namespace
//! ([`super::nfnl::open_in`]) and may then be used from any thread.

use super::nfnl::{
    attr, attributes, comment, dump, string, NFTA_RULE_CHAIN, NFTA_RULE_TABLE, NFTA_RULE_USERDATA,
    NFT_MSG_GETRULE,
};
use super::{Ctx, KernelError};
use std::os::fd::OwnedFd;

const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// One rule's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub chain: String,
    /// The rule's comment (`?` without one).
    pub tag: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of every rule of inet table `table` that has one, in the kernel's order; empty
/// when the table does not exist. `fd` is an nfnetlink socket of the table's namespace.
pub fn rule_counters(
    fd: &OwnedFd,
    ns: Option<&str>,
    table: &str,
) -> Result<Vec<RuleCounter>, KernelError> {
    let ctx = Ctx::new("list counters of table", table, ns);
    Ok(dump(&ctx, fd, NFT_MSG_GETRULE, 1)?
        .iter()
        .filter(|attrs| string(attrs, NFTA_RULE_TABLE).as_deref() == Some(table))
        .filter_map(|attrs| {
            let (packets, bytes) = counter(attr(attrs, NFTA_RULE_EXPRESSIONS)?)?;
            Some(RuleCounter {
                chain: string(attrs, NFTA_RULE_CHAIN)?,
                tag: attr(attrs, NFTA_RULE_USERDATA)
                    .and_then(comment)
                    .unwrap_or_else(|| "?".to_string()),
                packets,
                bytes,
            })
        })
        .collect())
}

/// (packets, bytes) of the first counter among a rule's expressions.
fn counter(expressions: &[u8]) -> Option<(u64, u64)> {
    attributes(expressions)
        .iter()
        .filter(|(kind, _)| *kind == NFTA_LIST_ELEM)
        .map(|(_, elem)| attributes(elem))
        .find(|e| string(e, NFTA_EXPR_NAME).as_deref() == Some("counter"))
        .and_then(|e| {
            let data = attributes(attr(&e, NFTA_EXPR_DATA)?);
            Some((
                be64(attr(&data, NFTA_COUNTER_PACKETS)?)?,
                be64(attr(&data, NFTA_COUNTER_BYTES)?)?,
            ))
        })
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    #[test]
    fn finds_the_counter_among_the_expressions() {
        let data = [
            tlv(NFTA_COUNTER_BYTES, &840u64.to_be_bytes()),
            tlv(NFTA_COUNTER_PACKETS, &10u64.to_be_bytes()),
        ]
        .concat();
        let counter_expr = [
            tlv(NFTA_EXPR_NAME, b"counter\0"),
            tlv(NFTA_EXPR_DATA, &data),
        ]
        .concat();
        let other = tlv(NFTA_EXPR_NAME, b"immediate\0");
        let list = [
            tlv(NFTA_LIST_ELEM | 0x8000, &other),
            tlv(NFTA_LIST_ELEM | 0x8000, &counter_expr),
        ]
        .concat();
        assert_eq!(counter(&list), Some((10, 840)));
        assert_eq!(counter(&tlv(NFTA_LIST_ELEM, &other)), None);
    }
}
