//! A table's named maps (each VIP's backends) and sets (each service a policy names): a scale
//! adds and removes their elements, so the plan shows a changed one as one line of elements
//! that come and go, `~ vip.web.front: + 172.16.1.8`, as apply writes it.

use super::Style;
use crate::firewall::rule::{Map, Set};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::net::IpAddr;

fn parse_maps(v: Option<&Value>) -> Vec<Map> {
    v.and_then(|v| <Vec<Map> as serde::Deserialize>::deserialize(v).ok())
        .unwrap_or_default()
}

fn parse_sets(v: Option<&Value>) -> Vec<Set> {
    v.and_then(|v| <Vec<Set> as serde::Deserialize>::deserialize(v).ok())
        .unwrap_or_default()
}

/// Every map of a table created or deleted, or the maps that change between `old` and `new`.
pub(super) fn maps(out: &mut String, old: Option<&Value>, new: Option<&Value>, st: &Style) {
    typed_maps(out, &parse_maps(old), &parse_maps(new), st);
}

/// A table's named sets (the services its policy names), as [`maps`] shows maps:
/// `~ from.web: + 172.16.1.8`.
pub(super) fn sets(out: &mut String, old: Option<&Value>, new: Option<&Value>, st: &Style) {
    typed_sets(out, &parse_sets(old), &parse_sets(new), st);
}

/// [`maps`] of typed maps (none on the side where the table has none).
pub(super) fn typed_maps(out: &mut String, old: &[Map], new: &[Map], st: &Style) {
    fn named(maps: &[Map]) -> Vec<(&str, &[IpAddr])> {
        maps.iter()
            .map(|m| (m.name.as_str(), m.backends.as_slice()))
            .collect()
    }
    named_changes(out, &named(old), &named(new), IpAddr::to_string, st);
}

/// [`sets`] of typed sets. A policy's set lists addresses as the VIP maps do (a host's network
/// without its /32).
pub(super) fn typed_sets(out: &mut String, old: &[Set], new: &[Set], st: &Style) {
    fn named(sets: &[Set]) -> Vec<(&str, &[IpNetwork])> {
        sets.iter()
            .map(|s| (s.name.as_str(), s.elements.as_slice()))
            .collect()
    }
    let element = |n: &IpNetwork| match n.prefix() == if n.is_ipv4() { 32 } else { 128 } {
        true => n.ip().to_string(),
        false => n.to_string(),
    };
    named_changes(out, &named(old), &named(new), element, st);
}

/// Named maps or sets, each its name and its elements: those that come, go or change. The
/// elements are compared as values (equal values are equal text) and written as text only
/// when shown: the host table holds a map per VIP, thousands of them in a large project.
fn named_changes<E: PartialEq>(
    out: &mut String,
    old: &[(&str, &[E])],
    new: &[(&str, &[E])],
    text: impl Fn(&E) -> String,
    st: &Style,
) {
    let by_name: HashMap<&str, &[E]> = old.iter().copied().collect();
    let new_names: HashSet<&str> = new.iter().map(|(n, _)| *n).collect();
    let joined = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(", ");
    for &(name, elements) in new {
        match by_name.get(name) {
            None => {
                let _ = writeln!(
                    out,
                    "      {} {name}: {}",
                    st.paint("32", "+"),
                    joined(&mut elements.iter().map(&text))
                );
            }
            Some(was) if *was != elements => {
                let mut items: Vec<String> = elements
                    .iter()
                    .filter(|e| !was.contains(e))
                    .map(|e| format!("+ {}", text(e)))
                    .collect();
                items.extend(
                    was.iter()
                        .filter(|e| !elements.contains(e))
                        .map(|e| format!("- {}", text(e))),
                );
                if items.is_empty() {
                    items.push("(reordered)".into());
                }
                let _ = writeln!(
                    out,
                    "      {} {name}: {}",
                    st.paint("33", "~"),
                    items.join(", ")
                );
            }
            Some(_) => {}
        }
    }
    for (name, _) in old.iter().filter(|(o, _)| !new_names.contains(o)) {
        let _ = writeln!(out, "      {} {name}", st.paint("31", "-"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scaled_vip_is_one_line_of_backends() {
        let old = json!([{"name": "vip.web.front", "backends": ["172.16.1.2", "172.16.1.3"]}]);
        let new = json!([
            {"name": "vip.web.front", "backends": ["172.16.1.2", "172.16.1.3", "172.16.1.8"]},
            {"name": "vip.api.front", "backends": ["172.16.1.9"]}
        ]);
        let mut out = String::new();
        maps(&mut out, Some(&old), Some(&new), &Style { color: false });
        assert_eq!(
            out,
            "      ~ vip.web.front: + 172.16.1.8\n      + vip.api.front: 172.16.1.9\n"
        );
    }

    #[test]
    fn a_scaled_policy_peer_is_one_line_of_addresses() {
        let old = json!([{"name": "from.web", "elements": ["172.16.1.2/32", "fd00::/64"]}]);
        let new = json!([{"name": "from.web", "elements": ["172.16.1.2/32", "172.16.1.8/32"]}]);
        let mut out = String::new();
        sets(&mut out, Some(&old), Some(&new), &Style { color: false });
        assert_eq!(out, "      ~ from.web: + 172.16.1.8, - fd00::/64\n");
        let mut gone = String::new();
        sets(
            &mut gone,
            Some(&old),
            Some(&json!([])),
            &Style { color: false },
        );
        assert_eq!(gone, "      - from.web\n");
    }
}
