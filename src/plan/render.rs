//! The human form of a plan: one block per changed resource with the familiar symbols
//! (`+` create, `~` update, `-/+` replace, `-` destroy), every attribute that matters, and the
//! summary line. Colour only on a terminal.

use super::{Change, Plan};
use crate::firewall::rule::Chain;
use crate::model::ResourceId;
use serde_json::Value;
use std::fmt::Write;

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub fn render(plan: &Plan, color: bool) -> String {
    let st = Style { color };
    let mut out = String::new();
    let against = match plan.baseline.as_str() {
        "empty" => "nothing (no state, no live objects)".to_string(),
        "state" => "the project's state file".to_string(),
        "live" => "the live machine".to_string(),
        other => other
            .strip_prefix("file:")
            .map_or_else(|| other.to_string(), |f| format!("the file {f}")),
    };
    let _ = writeln!(
        out,
        "Project {}: planned against {against}.\n",
        plan.project
    );
    if !plan.drift.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            st.paint("1;33", "Changed outside netcompose (drift):")
        );
        for c in &plan.drift {
            let _ = writeln!(
                out,
                "  ! {}: {}",
                c.address,
                c.reason.as_deref().unwrap_or("changed")
            );
        }
        out.push('\n');
    }
    let mut changes: Vec<&Change> = plan.resource_changes.iter().collect();
    changes.sort_by(|a, b| {
        group(&a.address)
            .cmp(&group(&b.address))
            .then_with(|| a.address.cmp(&b.address))
    });
    for c in changes {
        block(&mut out, c, &st);
    }
    let s = plan.summary;
    if plan.has_changes() {
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to change, {} to destroy.",
            s.add, s.change, s.destroy
        );
    } else {
        let _ = writeln!(out, "No changes.");
    }
    out
}

/// Networks first, then services, then what is derived from both.
fn group(address: &ResourceId) -> u8 {
    match address {
        ResourceId::Network(_) => 0,
        ResourceId::Replica(_)
        | ResourceId::Link(..)
        | ResourceId::Route(..)
        | ResourceId::Files(_)
        | ResourceId::ReplicaFirewall(_)
        | ResourceId::Vip { .. } => 1,
        ResourceId::Dns(_) => 2,
        ResourceId::HostFirewall | ResourceId::Daemon => 3,
    }
}

fn block(out: &mut String, c: &Change, st: &Style) {
    let (symbol, code) = if c.is_replace() {
        ("-/+", "1;35")
    } else {
        match c.actions.first() {
            Some(super::Action::Create) => ("+", "1;32"),
            Some(super::Action::Update) => ("~", "1;33"),
            _ => ("-", "1;31"),
        }
    };
    let reason = c
        .reason
        .as_ref()
        .map(|r| format!("  # {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {} {} ({}){}",
        st.paint(code, symbol),
        st.paint("1", &c.address.to_string()),
        c.kind,
        reason
    );
    let (before, after) = c.sides();
    let shown = if c.after.is_some() { after } else { before };
    for (key, value) in shown.iter().filter(|(k, _)| *k != "kind") {
        let old = before.get(key);
        let changed = c.before.is_some() && c.after.is_some() && old != Some(value);
        if key == "chains" {
            chains(out, old.filter(|_| changed), value, st);
        } else if changed {
            let from = old.map_or_else(|| "(none)".to_string(), scalar);
            let _ = writeln!(
                out,
                "      {key:<14} {} → {}",
                st.paint("31", &from),
                st.paint("32", &scalar(value))
            );
        } else if c.actions.len() == 1 && c.before.is_some() && c.after.is_some() {
            continue;
        } else {
            let _ = writeln!(out, "      {key:<14} {}", multiline(value));
        }
    }
    out.push('\n');
}

/// Long lists and maps one item a line, under the attribute name.
fn multiline(v: &Value) -> String {
    let pad = "\n                     ";
    match v {
        Value::Array(items)
            if items
                .iter()
                .any(|i| matches!(i, Value::String(s) if s.contains(char::is_whitespace))) =>
        {
            items.iter().map(scalar).collect::<Vec<_>>().join(pad)
        }
        Value::Object(m) if m.len() > 1 => m
            .iter()
            .map(|(k, v)| format!("{k} = {}", scalar(v)))
            .collect::<Vec<_>>()
            .join(pad),
        other => scalar(other),
    }
}

/// Firewall chains as nft rules; on update, only the rules that come and go.
fn chains(out: &mut String, old: Option<&Value>, new: &Value, st: &Style) {
    let parse = |v: &Value| serde_json::from_value::<Vec<Chain>>(v.clone()).unwrap_or_default();
    let (old, new) = (old.map(parse), parse(new));
    for chain in &new {
        let _ = writeln!(
            out,
            "      chain {} ({} hook {}, priority {})",
            chain.name, chain.chain_type, chain.hook, chain.priority
        );
        let before: Vec<String> = old
            .as_ref()
            .and_then(|o| o.iter().find(|c| c.name == chain.name))
            .map(|c| c.rules.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        let now: Vec<String> = chain.rules.iter().map(|r| r.to_string()).collect();
        for rule in &now {
            match &old {
                Some(_) if !before.contains(rule) => {
                    let _ = writeln!(out, "        {}", st.paint("32", &format!("+ {rule}")));
                }
                Some(_) => {}
                None => {
                    let _ = writeln!(out, "        {rule}");
                }
            }
        }
        for rule in before.iter().filter(|r| !now.contains(r)) {
            let _ = writeln!(out, "        {}", st.paint("31", &format!("- {rule}")));
        }
    }
}

/// A value on one line: strings bare, lists in brackets, maps as `k=v`.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", scalar(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}
