//! A table's named maps (each VIP's backends) and sets (each service a policy names): a scale
//! adds and removes their elements, so the plan shows a changed one as one line of elements
//! that come and go, `~ vip.web.front: + 172.16.1.8`, as apply writes it.

use super::Style;
use crate::firewall::rule::{Map, Set};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// A named map or set as the plan lists it: its name and its elements.
type Named = (String, Vec<String>);

fn parse_maps(v: Option<&Value>) -> Vec<Named> {
    v.and_then(|v| <Vec<Map> as serde::Deserialize>::deserialize(v).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.name, m.backends.iter().map(ToString::to_string).collect()))
        .collect()
}

/// A policy's set lists addresses as the VIP maps do (a host's network without its /32).
fn parse_sets(v: Option<&Value>) -> Vec<Named> {
    let element = |n: &IpNetwork| match n.prefix() == if n.is_ipv4() { 32 } else { 128 } {
        true => n.ip().to_string(),
        false => n.to_string(),
    };
    v.and_then(|v| <Vec<Set> as serde::Deserialize>::deserialize(v).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.elements.iter().map(element).collect()))
        .collect()
}

/// Every map of a table created or deleted, or the maps that change between `old` and `new`.
pub(super) fn maps(out: &mut String, old: Option<&Value>, new: Option<&Value>, st: &Style) {
    named(out, parse_maps(old), parse_maps(new), st);
}

/// A table's named sets (the services its policy names), as [`maps`] shows maps:
/// `~ from.web: + 172.16.1.8`.
pub(super) fn sets(out: &mut String, old: Option<&Value>, new: Option<&Value>, st: &Style) {
    named(out, parse_sets(old), parse_sets(new), st);
}

fn named(out: &mut String, old: Vec<Named>, new: Vec<Named>, st: &Style) {
    // By name: the host table holds a map per VIP, thousands of them in a large project.
    let by_name: HashMap<&str, &Vec<String>> = old.iter().map(|(n, e)| (n.as_str(), e)).collect();
    let new_names: HashSet<&str> = new.iter().map(|(n, _)| n.as_str()).collect();
    for (name, elements) in &new {
        match by_name.get(name.as_str()).map(|was| (name, *was)) {
            None => {
                let _ = writeln!(
                    out,
                    "      {} {name}: {}",
                    st.paint("32", "+"),
                    elements.join(", ")
                );
            }
            Some((_, was)) if was != elements => {
                let mut items: Vec<String> = elements
                    .iter()
                    .filter(|e| !was.contains(e))
                    .map(|e| format!("+ {e}"))
                    .collect();
                items.extend(
                    was.iter()
                        .filter(|e| !elements.contains(e))
                        .map(|e| format!("- {e}")),
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
    for (name, _) in old.iter().filter(|(o, _)| !new_names.contains(o.as_str())) {
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
