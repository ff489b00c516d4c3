//! An updated attribute shown element by element: lists and maps (DNS records, VIP backends,
//! addresses, sysctls) print only the elements that come, go or change, and a count of the rest,
//! so that a one-replica scale reads as one new record rather than two whole maps.

use super::{scalar, Style};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Where the lines after an attribute's first line start (under its value).
const PAD: &str = "                     ";

/// One changed attribute of an update or replacement; `None` is a side without the attribute.
pub(super) fn attribute(
    out: &mut String,
    key: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    st: &Style,
) {
    let (old, new) = (old.unwrap_or(&Value::Null), new.unwrap_or(&Value::Null));
    for (i, line) in lines(old, new, st).iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "      {key:<14} {line}");
        } else {
            let _ = writeln!(out, "{PAD}{line}");
        }
    }
}

/// The lines of one change; a missing side of a list or map counts as empty.
fn lines(old: &Value, new: &Value, st: &Style) -> Vec<String> {
    let empty_map = Map::new();
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => map(o, n, st),
        (Value::Null, Value::Object(n)) => map(&empty_map, n, st),
        (Value::Object(o), Value::Null) => map(o, &empty_map, st),
        (Value::Array(o), Value::Array(n)) => list(o, n, st).unwrap_or_else(|| whole(old, new, st)),
        (Value::Null, Value::Array(n)) => list(&[], n, st).unwrap_or_else(|| whole(old, new, st)),
        (Value::Array(o), Value::Null) => list(o, &[], st).unwrap_or_else(|| whole(old, new, st)),
        _ => whole(old, new, st),
    }
}

/// Both sides in full, on one line.
fn whole(old: &Value, new: &Value, st: &Style) -> Vec<String> {
    vec![format!(
        "{} → {}",
        st.paint("31", &scalar(old)),
        st.paint("32", &scalar(new))
    )]
}

/// Elements removed, then elements added (as a multiset); `None` when the lists hold the same
/// elements in another order, which only the whole lists can show.
fn list(old: &[Value], new: &[Value], st: &Style) -> Option<Vec<String>> {
    let mut left: Vec<&Value> = old.iter().collect();
    let mut added = Vec::new();
    for item in new {
        match left.iter().position(|o| *o == item) {
            Some(i) => {
                left.remove(i);
            }
            None => added.push(item),
        }
    }
    if left.is_empty() && added.is_empty() {
        return None;
    }
    let unchanged = new.len() - added.len();
    let mut out: Vec<String> = left
        .iter()
        .map(|v| st.paint("31", &format!("- {}", scalar(v))))
        .collect();
    out.extend(
        added
            .iter()
            .map(|v| st.paint("32", &format!("+ {}", scalar(v)))),
    );
    out.extend(hidden(unchanged, "element", st));
    Some(out)
}

/// Keys added, removed or changed, in key order.
fn map(old: &Map<String, Value>, new: &Map<String, Value>, st: &Style) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut unchanged = 0;
    let mut out = Vec::new();
    for k in keys {
        match (old.get(k), new.get(k)) {
            (None, Some(v)) => out.push(st.paint("32", &format!("+ {k} = {}", element(v)))),
            (Some(v), None) => out.push(st.paint("31", &format!("- {k} = {}", element(v)))),
            (Some(a), Some(b)) if a == b => unchanged += 1,
            (Some(a), Some(b)) => match nested(a, b, st) {
                Some(inner) => {
                    out.push(st.paint("33", &format!("~ {k}")));
                    out.extend(inner.into_iter().map(|l| format!("    {l}")));
                }
                None => {
                    out.push(st.paint("33", &format!("~ {k} = {} → {}", element(a), element(b))))
                }
            },
            (None, None) => {}
        }
    }
    out.extend(hidden(unchanged, "element", st));
    out
}

/// A changed value of a map that is itself a collection (a DNS name's addresses when a replica
/// comes or goes) diffed element by element under its key, so that one new address of a name
/// with a hundred reads as one line; `None` when the value reads better whole (one element on
/// each side, scalars, a reordered list).
fn nested(old: &Value, new: &Value, st: &Style) -> Option<Vec<String>> {
    match (old, new) {
        (Value::Array(o), Value::Array(n)) if o.len() > 1 || n.len() > 1 => list(o, n, st),
        (Value::Object(o), Value::Object(n)) => Some(map(o, n, st)),
        _ => None,
    }
}

/// A map's value: a one-element list (a DNS name with one address) reads as that element.
fn element(v: &Value) -> String {
    match v.as_array().map(Vec::as_slice) {
        Some([one]) => scalar(one),
        _ => scalar(v),
    }
}

/// `# (3 unchanged elements hidden)`, or nothing when nothing is hidden.
pub(super) fn hidden(n: usize, what: &str, st: &Style) -> Option<String> {
    let plural = if n == 1 { "" } else { "s" };
    (n > 0).then(|| st.paint("2", &format!("# ({n} unchanged {what}{plural} hidden)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn show(old: Option<Value>, new: Option<Value>) -> String {
        let mut out = String::new();
        attribute(
            &mut out,
            "k",
            old.as_ref(),
            new.as_ref(),
            &Style { color: false },
        );
        out
    }

    #[test]
    fn dns_records_show_only_the_names_that_change() {
        let old = json!({"db": ["10.0.0.6"], "quickstart-web-1": ["10.0.0.3"],
            "quickstart-web-9": ["10.0.0.9"], "web": ["10.0.0.3", "10.0.0.4"]});
        let new = json!({"db": ["10.0.0.6"], "quickstart-web-1": ["10.0.0.3"],
            "quickstart-web-4": ["10.0.0.8"], "web": ["10.0.0.3", "10.0.0.4", "10.0.0.8"]});
        assert_eq!(
            show(Some(old), Some(new)),
            "      k              + quickstart-web-4 = 10.0.0.8\n\
             \x20                    - quickstart-web-9 = 10.0.0.9\n\
             \x20                    ~ web\n\
             \x20                        + 10.0.0.8\n\
             \x20                        # (2 unchanged elements hidden)\n\
             \x20                    # (2 unchanged elements hidden)\n"
        );
    }

    #[test]
    fn lists_show_elements_added_and_removed_with_a_count_of_the_rest() {
        let old = json!(["10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        let new = json!(["10.0.0.3", "10.0.0.5", "10.0.0.8"]);
        assert_eq!(
            show(Some(old), Some(new)),
            "      k              - 10.0.0.4\n\
             \x20                    + 10.0.0.8\n\
             \x20                    # (2 unchanged elements hidden)\n"
        );
    }

    #[test]
    fn a_reordered_list_shows_both_orders() {
        assert_eq!(
            show(Some(json!(["a", "b"])), Some(json!(["b", "a"]))),
            "      k              [a, b] → [b, a]\n"
        );
    }

    #[test]
    fn sysctl_maps_and_attributes_that_appear_or_vanish() {
        assert_eq!(
            show(
                Some(json!({"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "1"})),
                Some(json!({"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}))
            ),
            "      k              ~ net.ipv4.ip_forward = 0 → 1\n\
             \x20                    # (1 unchanged element hidden)\n"
        );
        assert_eq!(
            show(None, Some(json!(["10.0.0.2/24"]))),
            "      k              + 10.0.0.2/24\n"
        );
        assert_eq!(
            show(Some(json!({"a": "1"})), None),
            "      k              - a = 1\n"
        );
    }

    #[test]
    fn scalars_show_old_and_new() {
        assert_eq!(
            show(Some(json!(1500)), Some(json!(9000))),
            "      k              1500 → 9000\n"
        );
        assert_eq!(
            show(None, Some(json!("x"))),
            "      k              (none) → x\n"
        );
    }
}
