//! nftables through its JSON API: documents are built with the nftables crate's schema types
//! and fed to `nft -j -f -` on a thread inside the target namespace (a child process inherits
//! the namespace of the thread that spawns it), with nft's error text kept for the message.
//! A table is always replaced in one transaction, so a namespace never sees half a rule set.
//! Reading tables back and deleting them goes over nfnetlink ([`super::nfnl`]).
//!
//! Chains and rules come in as a neutral description ([`Chain`], [`Rule`]): what the rules
//! mean and how they are recognised again is the firewall's business, not this layer's.

use super::netns::NetnsDir;
use super::{Ctx, KernelError};
use nftables::schema::{self, NfCmd, NfListObject, NfObject};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;
use std::borrow::Cow;
use std::io::Write;
use std::process::{Command, Stdio};

/// A chain of an inet table as nftables takes it: a base chain when `base` is set, else a
/// regular chain to jump to.
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

/// One rule: its statements in nft's JSON schema (libnftables-json(5)), and the tag it
/// carries as its comment, by which the live rule is recognised ([`super::nfnl::table_tags`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub expr: Vec<Value>,
    pub tag: String,
}

/// Why a document could not be built from the chains given.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("unknown chain hook `{0}`")]
    Hook(String),
    #[error("unknown chain type `{0}`")]
    ChainType(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

fn table_obj(table: &str) -> schema::Table<'_> {
    schema::Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(table),
        handle: None,
    }
}

fn cmd(c: NfCmd<'_>) -> Result<Value, serde_json::Error> {
    serde_json::to_value(NfObject::CmdObject(c))
}

/// A rule command with its statements as given: the nftables crate's statement types lack
/// some of them (anonymous verdict maps, numgen maps), and nft checks every statement.
fn add_rule(table: &str, chain: &str, r: &Rule) -> Value {
    serde_json::json!({"add": {"rule": {
        "family": "inet", "table": table, "chain": chain, "expr": r.expr, "comment": r.tag,
    }}})
}

fn document(objects: Vec<Value>) -> String {
    serde_json::json!({"nftables": objects}).to_string()
}

/// The document that replaces `table` (family inet) with `chains`, atomically: add (so the
/// delete cannot fail), delete, then create it again with its chains and rules.
pub fn replace_document(table: &str, chains: &[Chain]) -> Result<String, DocumentError> {
    let t = table_obj(table);
    let mut objects = vec![
        cmd(NfCmd::Add(NfListObject::Table(t.clone())))?,
        cmd(NfCmd::Delete(NfListObject::Table(t.clone())))?,
        cmd(NfCmd::Add(NfListObject::Table(t)))?,
    ];
    for c in chains {
        objects.push(cmd(NfCmd::Add(NfListObject::Chain(chain_obj(table, c)?)))?);
    }
    for c in chains {
        objects.extend(c.rules.iter().map(|r| add_rule(table, &c.name, r)));
    }
    Ok(document(objects))
}

/// The document that turns `old` into `new` chain by chain: new chains are added, changed
/// ones flushed and refilled, dropped ones deleted, in one transaction. When a base chain's
/// hook, type or priority changes, the whole table is replaced instead.
pub fn update_document(table: &str, old: &[Chain], new: &[Chain]) -> Result<String, DocumentError> {
    let same_shape = new.iter().all(|n| {
        old.iter()
            .find(|o| o.name == n.name)
            .is_none_or(|o| o.base == n.base)
    });
    if !same_shape {
        return replace_document(table, new);
    }
    let find = |list: &'_ [Chain], name: &str| list.iter().find(|c| c.name == name).cloned();
    let mut objects = vec![cmd(NfCmd::Add(NfListObject::Table(table_obj(table))))?];
    for c in new.iter().filter(|c| find(old, &c.name).is_none()) {
        objects.push(cmd(NfCmd::Add(NfListObject::Chain(chain_obj(table, c)?)))?);
    }
    let changed: Vec<&Chain> = new
        .iter()
        .filter(|c| find(old, &c.name).is_none_or(|o| o.rules != c.rules))
        .collect();
    let dropped: Vec<&Chain> = old
        .iter()
        .filter(|c| find(new, &c.name).is_none())
        .collect();
    for c in changed.iter().copied().chain(dropped.iter().copied()) {
        objects.push(cmd(NfCmd::Flush(nftables::schema::FlushObject::Chain(
            chain_obj(table, c)?,
        )))?);
    }
    for c in &changed {
        objects.extend(c.rules.iter().map(|r| add_rule(table, &c.name, r)));
    }
    for c in dropped {
        objects.push(cmd(NfCmd::Delete(NfListObject::Chain(chain_obj(
            table, c,
        )?)))?);
    }
    Ok(document(objects))
}

fn chain_obj<'a>(table: &'a str, c: &Chain) -> Result<schema::Chain<'a>, DocumentError> {
    let mut chain = schema::Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(table),
        name: Cow::Owned(c.name.clone()),
        ..Default::default()
    };
    let Some(base) = &c.base else {
        return Ok(chain);
    };
    chain.hook = Some(match base.hook.as_str() {
        "prerouting" => NfHook::Prerouting,
        "input" => NfHook::Input,
        "forward" => NfHook::Forward,
        "output" => NfHook::Output,
        "postrouting" => NfHook::Postrouting,
        other => return Err(DocumentError::Hook(other.to_string())),
    });
    chain._type = Some(match base.chain_type.as_str() {
        "filter" => NfChainType::Filter,
        "nat" => NfChainType::NAT,
        other => return Err(DocumentError::ChainType(other.to_string())),
    });
    chain.prio = Some(base.priority);
    chain.policy = Some(NfChainPolicy::Accept);
    Ok(chain)
}

/// Feed `doc` to `nft -j -f -` inside namespace `ns` (None: this one).
fn load(dir: &NetnsDir, ns: Option<&str>, doc: String, what: &str) -> Result<(), KernelError> {
    let ctx = Ctx::new(what, "nftables", ns);
    let out = dir.run_in(ns, move || {
        let mut child = Command::new("nft")
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(doc.as_bytes())?;
        }
        child.wait_with_output()
    })?;
    let out = out.map_err(|e| ctx.os(e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ctx.invalid(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Replace table `table` with `chains` in one transaction (created if missing).
pub fn replace_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    chains: &[Chain],
) -> Result<(), KernelError> {
    let doc = replace_document(table, chains)
        .map_err(|e| Ctx::new("build rules", table, ns).invalid(e.to_string()))?;
    load(dir, ns, doc, "load rules")
}

/// Change a live table from `old` to `new` chains in one transaction.
pub fn update_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    old: &[Chain],
    new: &[Chain],
) -> Result<(), KernelError> {
    let doc = update_document(table, old, new)
        .map_err(|e| Ctx::new("build rules", table, ns).invalid(e.to_string()))?;
    load(dir, ns, doc, "update rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_document_is_atomic_and_tagged() {
        let chain = Chain {
            name: "forward".into(),
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "forward".into(),
                priority: 0,
            }),
            rules: vec![Rule {
                expr: vec![serde_json::json!({"accept": null})],
                tag: "nc:0123456789ab".into(),
            }],
        };
        let doc: Value =
            serde_json::from_str(&replace_document("netcompose-p", &[chain]).unwrap()).unwrap();
        let objs = doc["nftables"].as_array().unwrap();
        assert!(
            objs[0]["add"]["table"].is_object()
                && objs[1]["delete"]["table"].is_object()
                && objs[2]["add"]["table"].is_object()
        );
        assert_eq!(objs[3]["add"]["chain"]["hook"], "forward");
        assert_eq!(objs[4]["add"]["rule"]["comment"], "nc:0123456789ab");
        assert_eq!(
            objs[4]["add"]["rule"]["expr"][0],
            serde_json::json!({"accept": null})
        );
    }

    #[test]
    fn an_unknown_hook_is_refused() {
        let chain = Chain {
            name: "x".into(),
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "ingress-ish".into(),
                priority: 0,
            }),
            rules: vec![],
        };
        assert!(matches!(
            replace_document("t", &[chain]),
            Err(DocumentError::Hook(h)) if h == "ingress-ish"
        ));
    }
}
