//! A table's named maps (each VIP's backends): a scale adds and removes map elements, so the
//! plan shows a changed map as one line of backends that come and go,
//! `~ vip.web.front: + 172.16.1.8`, as apply writes it.

use super::Style;
use crate::firewall::rule::Map;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

fn parse(v: Option<&Value>) -> Vec<Map> {
    v.and_then(|v| <Vec<Map> as serde::Deserialize>::deserialize(v).ok())
        .unwrap_or_default()
}

fn list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every map of a table created or deleted, or the maps that change between `old` and `new`.
pub(super) fn maps(out: &mut String, old: Option<&Value>, new: Option<&Value>, st: &Style) {
    let (old, new) = (parse(old), parse(new));
    // By name: the host table holds a map per VIP, thousands of them in a large project.
    let by_name: HashMap<&str, &Map> = old.iter().map(|o| (o.name.as_str(), o)).collect();
    let new_names: HashSet<&str> = new.iter().map(|m| m.name.as_str()).collect();
    for m in &new {
        match by_name.get(m.name.as_str()) {
            None => {
                let _ = writeln!(
                    out,
                    "      {} {}: {}",
                    st.paint("32", "+"),
                    m.name,
                    list(&m.backends)
                );
            }
            Some(o) if o.backends != m.backends => {
                let mut items: Vec<String> = m
                    .backends
                    .iter()
                    .filter(|b| !o.backends.contains(b))
                    .map(|b| format!("+ {b}"))
                    .collect();
                items.extend(
                    o.backends
                        .iter()
                        .filter(|b| !m.backends.contains(b))
                        .map(|b| format!("- {b}")),
                );
                if items.is_empty() {
                    items.push("(reordered)".into());
                }
                let _ = writeln!(
                    out,
                    "      {} {}: {}",
                    st.paint("33", "~"),
                    m.name,
                    items.join(", ")
                );
            }
            Some(_) => {}
        }
    }
    for o in old.iter().filter(|o| !new_names.contains(o.name.as_str())) {
        let _ = writeln!(out, "      {} {}", st.paint("31", "-"), o.name);
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
}
