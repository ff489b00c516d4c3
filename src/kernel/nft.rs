//! nftables through its JSON API: documents are built with the nftables crate's schema types
//! and fed to `nft -j -f -` on a thread inside the target namespace (a child process inherits
//! the namespace of the thread that spawns it), with nft's error text kept for the message.
//! A table is always replaced in one transaction, so a namespace never sees half a rule set.

use super::netns::NetnsDir;
use super::KernelError;
use crate::firewall::rule::{Chain, Rule};
use nftables::schema::{self, NfCmd, NfListObject, NfObject};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Write;
use std::process::{Command, Stdio};

/// Each rule carries a comment with a hash of its text, so that `observe` can tell which of
/// the desired rules a live table holds without parsing nft's normalized output back.
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

/// A rule command: through the crate's typed schema, or as raw JSON for what its types lack
/// (anonymous verdict maps, numgen maps).
fn add_rule(table: &str, chain: &str, r: &Rule) -> Result<Value, serde_json::Error> {
    let comment = rule_tag(r);
    if r.verdict.needs_raw_json() {
        return Ok(
            serde_json::json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain, "expr": r.to_json(), "comment": comment}}}),
        );
    }
    let expr: Vec<nftables::stmt::Statement> = r
        .to_json()
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    let rule = schema::Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(table),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(Cow::Owned(comment)),
    };
    cmd(NfCmd::Add(NfListObject::Rule(rule)))
}

fn document(objects: Vec<Value>) -> String {
    serde_json::json!({"nftables": objects}).to_string()
}

/// The document that replaces `table` (family inet) with `chains`, atomically: add (so the
/// delete cannot fail), delete, then create it again with its chains and rules.
pub fn replace_document(table: &str, chains: &[Chain]) -> Result<String, serde_json::Error> {
    let t = table_obj(table);
    let mut objects = vec![
        cmd(NfCmd::Add(NfListObject::Table(t.clone())))?,
        cmd(NfCmd::Delete(NfListObject::Table(t.clone())))?,
        cmd(NfCmd::Add(NfListObject::Table(t)))?,
    ];
    for c in chains {
        objects.push(cmd(NfCmd::Add(NfListObject::Chain(chain_obj(table, c))))?);
    }
    for c in chains {
        for r in &c.rules {
            objects.push(add_rule(table, &c.name, r)?);
        }
    }
    Ok(document(objects))
}

/// The document that turns `old` into `new` chain by chain: new chains are added, changed
/// ones flushed and refilled, dropped ones deleted, in one transaction. When a base chain's
/// hook, type or priority changes, the whole table is replaced instead.
pub fn update_document(
    table: &str,
    old: &[Chain],
    new: &[Chain],
) -> Result<String, serde_json::Error> {
    let props = |c: &Chain| {
        (
            c.name.clone(),
            c.chain_type.clone(),
            c.hook.clone(),
            c.priority,
        )
    };
    let same_shape = new.iter().all(|n| {
        old.iter()
            .find(|o| o.name == n.name)
            .is_none_or(|o| props(o) == props(n))
    });
    if !same_shape {
        return replace_document(table, new);
    }
    let find = |list: &'_ [Chain], name: &str| list.iter().find(|c| c.name == name).cloned();
    let mut objects = vec![cmd(NfCmd::Add(NfListObject::Table(table_obj(table))))?];
    for c in new.iter().filter(|c| find(old, &c.name).is_none()) {
        objects.push(cmd(NfCmd::Add(NfListObject::Chain(chain_obj(table, c))))?);
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
            chain_obj(table, c),
        )))?);
    }
    for c in &changed {
        for r in &c.rules {
            objects.push(add_rule(table, &c.name, r)?);
        }
    }
    for c in dropped {
        objects.push(cmd(NfCmd::Delete(NfListObject::Chain(chain_obj(
            table, c,
        ))))?);
    }
    Ok(document(objects))
}

fn chain_obj<'a>(table: &'a str, c: &Chain) -> schema::Chain<'a> {
    let mut chain = schema::Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(table),
        name: Cow::Owned(c.name.clone()),
        ..Default::default()
    };
    if c.hook.is_empty() {
        return chain;
    }
    chain.hook = Some(match c.hook.as_str() {
        "prerouting" => NfHook::Prerouting,
        "input" => NfHook::Input,
        "output" => NfHook::Output,
        "postrouting" => NfHook::Postrouting,
        _ => NfHook::Forward,
    });
    chain._type = Some(if c.chain_type == "nat" {
        NfChainType::NAT
    } else {
        NfChainType::Filter
    });
    chain.prio = Some(c.priority);
    chain.policy = Some(NfChainPolicy::Accept);
    chain
}

/// Run nft with `args` (and `input` on stdin) inside namespace `ns` (None: this one).
fn nft(
    dir: &NetnsDir,
    ns: Option<&str>,
    args: &[&str],
    input: Option<&str>,
    what: &str,
) -> Result<String, KernelError> {
    let ctx = super::Ctx::new(what, "nftables", ns);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let input = input.map(str::to_string);
    let out = dir.run_in(ns, move || {
        let mut child = Command::new("nft")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    })?;
    let out = out.map_err(|e| ctx.os(e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ctx.invalid(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

pub fn replace_table(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
    chains: &[Chain],
) -> Result<(), KernelError> {
    let doc = replace_document(table, chains)
        .map_err(|e| super::Ctx::new("build rules", table, ns).invalid(e.to_string()))?;
    nft(dir, ns, &["-j", "-f", "-"], Some(&doc), "load rules").map(|_| ())
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
        .map_err(|e| super::Ctx::new("build rules", table, ns).invalid(e.to_string()))?;
    nft(dir, ns, &["-j", "-f", "-"], Some(&doc), "update rules").map(|_| ())
}

pub fn delete_table(dir: &NetnsDir, ns: Option<&str>, table: &str) -> Result<(), KernelError> {
    match nft(
        dir,
        ns,
        &["delete", "table", "inet", table],
        None,
        "delete table",
    ) {
        Err(e) if e.to_string().contains("No such file") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Each chain of a live table with the tags of its rules, in order.
pub type ChainTags = Vec<(String, Vec<String>)>;

/// The rule tags of each chain of a live table, in order; None when the table does not exist.
pub fn table_tags(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<ChainTags>, KernelError> {
    let text = match nft(
        dir,
        ns,
        &["-j", "list", "table", "inet", table],
        None,
        "list table",
    ) {
        Ok(t) => t,
        Err(e) if e.to_string().contains("No such file") => return Ok(None),
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| super::Ctx::new("list table", table, ns).invalid(e.to_string()))?;
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    for obj in doc
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = obj.get("chain") {
            chains.push((
                c["name"].as_str().unwrap_or_default().to_string(),
                Vec::new(),
            ));
        } else if let Some(r) = obj.get("rule") {
            let chain = r["chain"].as_str().unwrap_or_default();
            let tag = r
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if let Some((_, tags)) = chains.iter_mut().find(|(n, _)| n == chain) {
                tags.push(tag);
            }
        }
    }
    Ok(Some(chains))
}

/// Names of the inet tables in a namespace.
pub fn tables(dir: &NetnsDir, ns: Option<&str>) -> Result<Vec<String>, KernelError> {
    let text = nft(
        dir,
        ns,
        &["-j", "list", "tables", "inet"],
        None,
        "list tables",
    )?;
    let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(doc
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("table")?.get("name")?.as_str().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rule::rule;

    #[test]
    fn replace_document_is_atomic_and_tagged() {
        let chain = Chain {
            name: "forward".into(),
            chain_type: "filter".into(),
            hook: "forward".into(),
            priority: 0,
            rules: vec![rule().iif("br0").accept()],
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
        assert!(objs[4]["add"]["rule"]["comment"]
            .as_str()
            .unwrap()
            .starts_with("nc:"));
    }
}
