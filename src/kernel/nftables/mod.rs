//! nftables in-process over nfnetlink: tables of family inet written in one transaction per
//! call ([`replace_table`], [`update_table`]), read back and deleted ([`read`]), with no `nft`
//! process. Rules come in as typed expressions ([`expr::Expr`]), the form nft compiles its
//! rules to; what they mean is the firewall's business, not this layer's.
//!
//! - [`wire`]: messages, nested attributes, batches, acks (the kernel's errno per message);
//! - [`expr`]: the expressions netcompose uses and their encoding;
//! - [`table`]: chains, rules, sets and maps, and the batches that write them;
//! - [`read`]: chains with their rule tags, rule counters, set elements; deleting a table.
//!
//! Why our own encoder: the crates that speak nf_tables did not fit. `rustables` is GPL-3.0
//! (not compatible with the project's Apache-2.0); `nftnl` and `mnl` bind libnftnl and libmnl
//! (C libraries needed at build and run time); `nftables` writes nft's JSON and needs the `nft`
//! binary (what this replaces); `netlink-packet-netfilter` covers nflog and conntrack, not
//! nf_tables. What netcompose writes is a dozen expressions, sets, maps and batches: small
//! enough to encode and test here.
//!
//! A netlink socket keeps the namespace it was made in: the `_on` functions take one that the
//! caller keeps for the namespace (the real machine opens it once per namespace, with its
//! rtnetlink socket), so a run enters each namespace once; the others open one on a thread
//! inside the namespace for the one call.

pub mod expr;
pub mod read;
pub mod table;
pub mod wire;

use super::netns::NetnsDir;
use super::{Ctx, KernelError};
use std::os::fd::OwnedFd;

pub use read::{ChainTags, LiveTable, RuleCounter};
pub use table::{reshaped, BaseChain, Chain, Element, KeyType, MapData, Rule, SetSpec, Table};

/// Replace table `table` with `contents` in one transaction (created if missing).
pub fn replace_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    contents: &Table,
) -> Result<(), KernelError> {
    let ctx = Ctx::new("load rules", table, ns);
    dir.run_in(ns, move || {
        let fd = wire::open(&ctx)?;
        replace_table_on(&fd, ns, table, contents).map(drop)
    })?
}

/// [`replace_table`] on a socket already open in the table's namespace ([`wire::open_in`]):
/// the generation of the transaction, when the kernel announced it ([`wire::commit`]).
pub fn replace_table_on(
    fd: &OwnedFd,
    ns: Option<&str>,
    table: &str,
    contents: &Table,
) -> Result<Option<u32>, KernelError> {
    let ctx = Ctx::new("load rules", table, ns);
    let batch = table::replace(table, &contents.chains, &contents.sets)
        .map_err(|e| ctx.invalid(e.to_string()))?;
    wire::commit(&ctx, fd, batch)
}

/// Change a live table from `old` to `new` in one transaction: chains flushed and refilled,
/// set and map elements added and removed.
pub fn update_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    old: &Table,
    new: &Table,
) -> Result<(), KernelError> {
    let ctx = Ctx::new("update rules", table, ns);
    dir.run_in(ns, move || {
        let fd = wire::open(&ctx)?;
        update_table_on(&fd, ns, table, (old, new), None).map(drop)
    })?
}

/// [`update_table`] on a socket already open in the table's namespace ([`wire::open_in`]):
/// the generation of the transaction, when it is known ([`wire::commit_at`]; `at`: the
/// generation the caller knows the namespace's ruleset to be at).
pub fn update_table_on(
    fd: &OwnedFd,
    ns: Option<&str>,
    table: &str,
    (old, new): (&Table, &Table),
    at: Option<u32>,
) -> Result<Option<u32>, KernelError> {
    let ctx = Ctx::new("update rules", table, ns);
    let batch = table::update(table, (&old.chains, &old.sets), (&new.chains, &new.sets))
        .map_err(|e| ctx.invalid(e.to_string()))?;
    wire::commit_at(&ctx, fd, &batch.finish(), at)
}
