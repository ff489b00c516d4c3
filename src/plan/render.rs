//! The human form of a plan: one block per changed resource with the familiar symbols
//! (`+` create, `~` update, `-/+` replace, `-` destroy), every attribute that matters, and the
//! summary line. Creates and deletes show every attribute; updates and replacements show only
//! what changes, element by element (collections.rs; a rule's sets in rules.rs; a VIP's map in
//! maps.rs), with a count of what is hidden; replicas changed alike are one block (alike.rs).
//! Colour only on a terminal.

mod alike;
mod collections;
mod fields;
mod maps;
mod rules;
mod table;

use super::{Change, Plan};
use crate::firewall::rule::Chain;
use crate::model::{ResourceId, Spec};
use serde_json::Value;
use std::fmt::Write;

struct Style {
    color: bool,
}

impl Style {
    /// [`Style::paint`], appended to `out`.
    fn paint_into(&self, out: &mut String, code: &str, s: &str) {
        if self.color {
            let _ = write!(out, "\x1b[{code}m{s}\x1b[0m");
        } else {
            out.push_str(s);
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub fn render(plan: &Plan, color: bool) -> String {
    let mut out = Vec::new();
    // Writing into memory cannot fail, and the text is built from strings.
    let _ = write(&mut out, plan, color);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`render`], written to `w` a few hundred blocks at a time: a plan of a hundred thousand
/// changes is never held as text whole. The pieces are shown on two threads, every other one
/// on a second thread that keeps at most one piece ahead.
pub fn write(w: &mut dyn std::io::Write, plan: &Plan, color: bool) -> std::io::Result<()> {
    /// About how many changes a piece holds.
    const PIECE: usize = 256;
    /// About how much text a change is shown as: a piece's text is made that large at once
    /// rather than grown (each growth copies it, into pages that fault anew).
    const CHANGE_TEXT: usize = 384;
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
    for note in &plan.notes {
        let _ = writeln!(out, "{} {note}", st.paint("1;36", "Note:"));
    }
    if !plan.notes.is_empty() {
        out.push('\n');
    }
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
    w.write_all(out.as_bytes())?;
    out.clear();
    let mut changes: Vec<&Change> = plan.resource_changes.iter().collect();
    // By group, then address. The diff leaves changes in address order, which a stable sort
    // by group keeps: comparing addresses is most of a sort's cost, and a hundred thousand
    // changes are then compared once each instead of some seventeen times.
    if !changes.is_sorted_by(|a, b| a.address <= b.address) {
        changes.sort_by(|a, b| a.address.cmp(&b.address));
    }
    changes.sort_by_key(|c| group(&c.address));
    let mut pieces = alike::pieces(&changes, PIECE);
    // The last piece holds the project's host table, on a big project one change shown as
    // megabytes of text: it is shown from the start on a thread of its own rather than at the
    // end on one of the two while the other waits.
    let last = match pieces.len() {
        n if n > 2 => pieces.pop(),
        _ => None,
    };
    let shown = |piece: &[&Change]| {
        let mut text = String::with_capacity(piece.len() * CHANGE_TEXT);
        alike::each_group(
            piece,
            |c| body(c, &st),
            |shown| {
                head(&mut text, shown.change, &shown.label, &st);
                text.push_str(&shown.body);
            },
        );
        text
    };
    std::thread::scope(|s| {
        let last = last.map(|piece| s.spawn(move || shown(piece)));
        let (send, received) = std::sync::mpsc::sync_channel(1);
        if pieces.len() > 1 {
            let odd = &pieces;
            s.spawn(move || {
                for piece in odd.iter().skip(1).step_by(2) {
                    // The writer stopped (it failed): nothing more to show.
                    if send.send(shown(piece)).is_err() {
                        return;
                    }
                }
            });
        }
        for (k, piece) in pieces.iter().enumerate() {
            let text = match k % 2 {
                0 => shown(piece),
                // The second thread panicked: the scope passes its panic on.
                _ => match received.recv() {
                    Ok(text) => text,
                    Err(_) => break,
                },
            };
            w.write_all(text.as_bytes())?;
        }
        match last.map(std::thread::ScopedJoinHandle::join) {
            Some(Ok(text)) => w.write_all(text.as_bytes())?,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
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
    w.write_all(out.as_bytes())
}

/// Networks first, then services, then what is derived from both.
fn group(address: &ResourceId) -> u8 {
    match address {
        ResourceId::Network(_) | ResourceId::Vxlan(_) | ResourceId::Remote { .. } => 0,
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

/// One change: its header line, then its attributes.
#[cfg(test)]
fn block(out: &mut String, c: &Change, st: &Style) {
    head(out, c, &c.address.to_string(), st);
    out.push_str(&body(c, st));
}

/// `  ~ service.web[1].firewall (firewall)  # reason`, with `label` in place of the address.
fn head(out: &mut String, c: &Change, label: &str, st: &Style) {
    let (symbol, code) = if c.is_replace() {
        ("-/+", "1;35")
    } else {
        match c.actions.first() {
            Some(super::Action::Create) => ("+", "1;32"),
            Some(super::Action::Update) => ("~", "1;33"),
            _ => ("-", "1;31"),
        }
    };
    out.push_str("  ");
    st.paint_into(out, code, symbol);
    out.push(' ');
    st.paint_into(out, "1", label);
    out.push_str(" (");
    out.push_str(&c.kind);
    out.push(')');
    if let Some(reason) = &c.reason {
        out.push_str("  # ");
        out.push_str(reason);
    }
    out.push('\n');
}

/// A change's attributes: all of them for a create or delete, what changes for the rest.
fn body(c: &Change, st: &Style) -> String {
    // Room for most bodies at once: grown from empty, the bodies of a plan of 99,561
    // creations took 517,000 reallocations, and only one service's bodies are held at a time
    // (alike.rs), so the room left over costs little.
    let mut text = String::with_capacity(512);
    let out = &mut text;
    if let (None, Some(super::Attributes::Spec(spec)))
    | (Some(super::Attributes::Spec(spec)), None) = (&c.before, &c.after)
    {
        if fields::attributes(out, spec, st).is_ok() {
            out.push('\n');
            return text;
        }
    }
    if let (Some(super::Attributes::Spec(old)), Some(super::Attributes::Spec(new))) =
        (&c.before, &c.after)
    {
        if let (Spec::Firewall(old), Spec::Firewall(new)) = (old.as_ref(), new.as_ref()) {
            table::update(out, old, new, st);
            out.push('\n');
            return text;
        }
    }
    let (before, after) = c.sides();
    let shown = if c.after.is_some() { &after } else { &before };
    if c.before.is_none() || c.after.is_none() {
        // A table's chains as the diff found them: not read back from their JSON.
        let typed = match c.after.as_ref().or(c.before.as_ref()) {
            Some(super::Attributes::Spec(spec)) => match spec.as_ref() {
                crate::model::Spec::Firewall(f) => Some(&f.chains),
                _ => None,
            },
            Some(super::Attributes::Value(_)) | None => None,
        };
        for (key, value) in shown.iter().filter(|(k, _)| *k != "kind") {
            if key == "chains" {
                match typed {
                    Some(list) => listed(out, list),
                    None => chains(out, None, value, st),
                }
            } else if key == "maps" {
                maps::maps(out, None, Some(value), st);
            } else if key == "sets" {
                maps::sets(out, None, Some(value), st);
            } else {
                let _ = writeln!(out, "      {key:<14} {}", multiline(value));
            }
        }
        out.push('\n');
        return text;
    }
    let mut unchanged = 0;
    for (key, value) in after.iter().filter(|(k, _)| *k != "kind") {
        let old = before.get(key);
        if old == Some(value) {
            unchanged += 1;
        } else if key == "chains" {
            chains(out, old, value, st);
        } else if key == "maps" {
            maps::maps(out, old, Some(value), st);
        } else if key == "sets" {
            maps::sets(out, old, Some(value), st);
        } else {
            collections::attribute(out, key, old, Some(value), st);
        }
    }
    for (key, value) in before.iter().filter(|(k, _)| !after.contains_key(*k)) {
        collections::attribute(out, key, Some(value), None, st);
    }
    if let Some(line) = collections::hidden(unchanged, "attribute", st) {
        let _ = writeln!(out, "      {line}");
    }
    out.push('\n');
    text
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

/// Firewall chains as nft rules. On update, only chains that come, go or change, and in a
/// changed chain only the rules that come and go.
fn chains(out: &mut String, old: Option<&Value>, new: &Value, st: &Style) {
    let parse = |v: &Value| <Vec<Chain> as serde::Deserialize>::deserialize(v).unwrap_or_default();
    typed_chains(out, old.map(parse).as_deref(), &parse(new), st);
}

/// [`chains`] of typed chains.
fn typed_chains(out: &mut String, old: Option<&[Chain]>, new: &[Chain], st: &Style) {
    let Some(old) = old else {
        listed(out, new);
        return;
    };
    let mut unchanged = 0;
    for chain in new {
        let Some(prev) = old.iter().find(|c| c.name == chain.name) else {
            let _ = writeln!(
                out,
                "      {}",
                st.paint("32", &format!("+ {}", header(chain)))
            );
            for rule in &chain.rules {
                let _ = writeln!(out, "        {}", st.paint("32", &format!("+ {rule}")));
            }
            continue;
        };
        if prev == chain {
            unchanged += 1;
            continue;
        }
        if header(prev) == header(chain) {
            let _ = writeln!(out, "      {}", header(chain));
        } else {
            let _ = writeln!(
                out,
                "      {} → {}",
                st.paint("31", &header(prev)),
                st.paint("32", &header(chain))
            );
        }
        let before: Vec<String> = prev.rules.iter().map(ToString::to_string).collect();
        let now: Vec<String> = chain.rules.iter().map(ToString::to_string).collect();
        let added: Vec<&str> = now
            .iter()
            .filter(|r| !before.contains(r))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = before
            .iter()
            .filter(|r| !now.contains(r))
            .map(String::as_str)
            .collect();
        let (pairs, added, removed) = rules::pair(&added, &removed);
        for (old, new) in pairs {
            let line = format!("~ {}", rules::changed(old, new));
            let _ = writeln!(out, "        {}", st.paint("33", &line));
        }
        for rule in added {
            let _ = writeln!(out, "        {}", st.paint("32", &format!("+ {rule}")));
        }
        for rule in removed {
            let _ = writeln!(out, "        {}", st.paint("31", &format!("- {rule}")));
        }
        let kept = now.iter().filter(|r| before.contains(r)).count();
        if let Some(line) = collections::hidden(kept, "rule", st) {
            let _ = writeln!(out, "        {line}");
        }
    }
    for prev in old.iter().filter(|p| new.iter().all(|c| c.name != p.name)) {
        let _ = writeln!(
            out,
            "      {}",
            st.paint("31", &format!("- {}", header(prev)))
        );
    }
    if let Some(line) = collections::hidden(unchanged, "chain", st) {
        let _ = writeln!(out, "      {line}");
    }
}

/// Chains that are all new (or all gone): each header and every rule.
fn listed(out: &mut String, chains: &[Chain]) {
    for chain in chains {
        let _ = writeln!(out, "      {}", header(chain));
        for rule in &chain.rules {
            let _ = writeln!(out, "        {rule}");
        }
    }
}

/// A base chain with its hook and priority; a regular chain (a jump target) by name alone.
fn header(chain: &Chain) -> String {
    if chain.hook.is_empty() {
        format!("chain {}", chain.name)
    } else {
        format!(
            "chain {} ({} hook {}, priority {})",
            chain.name, chain.chain_type, chain.hook, chain.priority
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rule::rule;
    use crate::plan::Action;
    use serde_json::json;

    fn shown(actions: Vec<Action>, before: Option<Value>, after: Option<Value>) -> String {
        let mut out = String::new();
        let c = Change {
            address: ResourceId::HostFirewall,
            kind: "firewall".into(),
            actions,
            before: before.map(Into::into),
            after: after.map(Into::into),
            reason: None,
        };
        block(&mut out, &c, &Style { color: false });
        out
    }

    fn table(chains: &[Chain]) -> Value {
        json!({"kind": "firewall", "table": "t", "chains": chains})
    }

    #[test]
    fn regular_chains_have_no_hook_or_priority() {
        let chains = [
            Chain::base("forward", "filter", "forward", 0, vec![rule().accept()]),
            Chain::regular("vip_db_back", vec![]),
        ];
        assert_eq!(
            shown(vec![Action::Create], None, Some(table(&chains))),
            "  + firewall.host (firewall)\n\
             \x20     table          t\n\
             \x20     chain forward (filter hook forward, priority 0)\n\
             \x20       accept\n\
             \x20     chain vip_db_back\n\n"
        );
    }

    #[test]
    fn an_update_shows_changed_chains_and_rules_only() {
        let keep = rule().iif("a").accept();
        let old = [
            Chain::base("forward", "filter", "forward", 0, vec![keep.clone()]),
            Chain::regular("vip_web", vec![keep.clone(), rule().iif("b").drop()]),
            Chain::regular("vip_gone", vec![]),
        ];
        let new = [
            Chain::base("forward", "filter", "forward", 0, vec![keep.clone()]),
            Chain::regular("vip_web", vec![keep.clone(), rule().iif("c").drop()]),
            Chain::regular("vip_new", vec![keep]),
        ];
        assert_eq!(
            shown(vec![Action::Update], Some(table(&old)), Some(table(&new))),
            "  ~ firewall.host (firewall)\n\
             \x20     chain vip_web\n\
             \x20       + iifname \"c\" drop\n\
             \x20       - iifname \"b\" drop\n\
             \x20       # (1 unchanged rule hidden)\n\
             \x20     + chain vip_new\n\
             \x20       + iifname \"a\" accept\n\
             \x20     - chain vip_gone\n\
             \x20     # (1 unchanged chain hidden)\n\
             \x20     # (1 unchanged attribute hidden)\n\n"
        );
    }

    #[test]
    fn an_update_hides_unchanged_attributes_and_diffs_collections() {
        let before = json!({"kind": "vip", "service": "web", "network": "front",
            "address": "10.0.0.7", "backends": ["10.0.0.3", "10.0.0.4"]});
        let after = json!({"kind": "vip", "service": "web", "network": "front",
            "address": "10.0.0.7", "backends": ["10.0.0.3", "10.0.0.4", "10.0.0.8"]});
        assert_eq!(
            shown(vec![Action::Update], Some(before), Some(after)),
            "  ~ firewall.host (firewall)\n\
             \x20     backends       + 10.0.0.8\n\
             \x20                    # (2 unchanged elements hidden)\n\
             \x20     # (3 unchanged attributes hidden)\n\n"
        );
    }

    #[test]
    fn deletes_show_every_attribute() {
        let before = json!({"kind": "vip", "service": "web", "backends": ["10.0.0.3"]});
        assert_eq!(
            shown(vec![Action::Delete], Some(before), None),
            "  - firewall.host (firewall)\n\
             \x20     service        web\n\
             \x20     backends       [10.0.0.3]\n\n"
        );
    }
}
