//! Merging several `-f` files as Compose does (compose-go's `override` package): mappings
//! merge key by key, a null value keeps the earlier one, scalars are replaced, and sequences
//! are appended, except where Compose has a rule of its own for a key:
//!
//! - keys written as a list or a mapping (`networks`, `sysctls`, `environment`, labels, ...)
//!   are merged in their mapping form, whichever form each file uses;
//! - `dns`, `dns_search`, `dns_opt` and `extra_hosts` take a string or a list in either file
//!   and become one list;
//! - sequences Compose treats as sets (`ports`, `dns`, `aliases`, `link_local_ips`, ...) drop
//!   an entry the earlier files already have;
//! - `command`, `entrypoint`, `healthcheck.test` and `x-run` are replaced whole;
//! - `ipam.config` entries are merged per subnet (so their `aux_addresses` merge too);
//! - the YAML tags `!reset` (remove the key) and `!override` (replace instead of merging)
//!   work on any key.

use super::node::{Node, Tag, Value};

/// Appended sequences whose entries are kept once (compose-go's `EnforceUnicity`).
const UNIQUE: &[&str] = &[
    "ports",
    "expose",
    "dns",
    "dns_search",
    "dns_opt",
    "extra_hosts",
    "links",
    "external_links",
    "cap_add",
    "cap_drop",
    "devices",
    "volumes",
    "secrets",
    "configs",
    "env_file",
    "tmpfs",
    "security_opt",
    "profiles",
    "aliases",
    "link_local_ips",
    "allow",
    "deny",
    "x-checks",
];

/// Service keys whose later value replaces the earlier one whole.
const REPLACED: &[&str] = &["command", "entrypoint", "x-run"];

/// Service keys that take a string or a list and merge as one list.
const STRING_OR_LIST: &[&str] = &["dns", "dns_search", "dns_opt", "extra_hosts", "tmpfs"];

/// Keys written either as a list or as a mapping, merged in their mapping form, by where they
/// stand (`*` is any service or network name).
const LIST_OR_MAP: &[(&[&str], ListForm)] = &[
    (&["services", "*", "networks"], ListForm::Names),
    (&["services", "*", "depends_on"], ListForm::Names),
    (&["services", "*", "sysctls"], ListForm::KeyValue),
    (&["services", "*", "labels"], ListForm::KeyValue),
    (&["services", "*", "environment"], ListForm::KeyValue),
    (&["services", "*", "annotations"], ListForm::KeyValue),
    (&["networks", "*", "labels"], ListForm::KeyValue),
];

#[derive(Clone, Copy)]
enum ListForm {
    /// `[a, b]` → `{a: null, b: null}`
    Names,
    /// `[A=1]` → `{A: "1"}`
    KeyValue,
}

/// Merge `over` (a later file) into `base`, then drop what `!reset` removes.
pub fn merge(base: &mut Node, over: Node) {
    merge_at(base, over, &mut Vec::new());
    strip_resets(base);
}

/// Remove every value tagged `!reset` (a file may reset its own keys too), and forget the
/// tags once merging is done with them.
pub fn strip_resets(node: &mut Node) {
    node.tag = None;
    match &mut node.value {
        Value::Map(entries) => {
            entries.retain(|(_, v)| v.tag != Some(Tag::Reset));
            entries.iter_mut().for_each(|(_, v)| strip_resets(v));
        }
        Value::Seq(items) => {
            items.retain(|v| v.tag != Some(Tag::Reset));
            items.iter_mut().for_each(strip_resets);
        }
        Value::Null | Value::Scalar { .. } => {}
    }
}

fn matches(path: &[String], pattern: &[&str]) -> bool {
    path.len() == pattern.len() && path.iter().zip(pattern).all(|(p, q)| *q == "*" || p == q)
}

fn is_service_key(path: &[String], keys: &[&str]) -> bool {
    path.len() == 3 && path[0] == "services" && keys.contains(&path[2].as_str())
}

fn merge_at(base: &mut Node, over: Node, path: &mut Vec<String>) {
    if over.tag == Some(Tag::Override) {
        *base = over;
        return;
    }
    if over.is_null() {
        return;
    }
    if let Some((_, form)) = LIST_OR_MAP.iter().find(|(p, _)| matches(path, p)) {
        to_map(base, *form);
        let mut over = over;
        to_map(&mut over, *form);
        return merge_maps(base, over, path);
    }
    if matches(path, &["networks", "*", "ipam", "config"]) {
        return merge_ipam_config(base, over, path);
    }
    if is_service_key(path, REPLACED) || matches(path, &["services", "*", "healthcheck", "test"]) {
        *base = over;
        return;
    }
    let mut over = over;
    if is_service_key(path, STRING_OR_LIST) {
        to_seq(base);
        to_seq(&mut over);
    }
    let unique = path.last().is_some_and(|k| UNIQUE.contains(&k.as_str()));
    match (&mut base.value, over.value) {
        (Value::Map(_), Value::Map(o)) => {
            merge_maps(base, Node::new(Value::Map(o), over.span), path)
        }
        (Value::Seq(b), Value::Seq(o)) => {
            for item in o {
                if !unique || !b.iter().any(|x| x.to_json() == item.to_json()) {
                    b.push(item);
                }
            }
        }
        (_, value) => {
            *base = Node {
                value,
                span: over.span,
                tag: over.tag,
            }
        }
    }
}

fn merge_maps(base: &mut Node, over: Node, path: &mut Vec<String>) {
    let Value::Map(over_entries) = over.value else {
        return;
    };
    let Value::Map(entries) = &mut base.value else {
        *base = Node::new(Value::Map(over_entries), over.span);
        return;
    };
    for (k, v) in over_entries {
        let name = k.as_str().unwrap_or_default().to_string();
        let existing = entries
            .iter()
            .position(|(bk, _)| bk.as_str() == Some(name.as_str()));
        match existing {
            Some(i) if v.tag == Some(Tag::Reset) => {
                entries.remove(i);
            }
            Some(i) => {
                path.push(name);
                merge_at(&mut entries[i].1, v, path);
                path.pop();
            }
            None => entries.push((k, v)),
        }
    }
}

/// `ipam.config` as compose-go merges it: an entry of the later file with the subnet of an
/// earlier entry merges into it key by key (so `aux_addresses` merge); others are added.
fn merge_ipam_config(base: &mut Node, over: Node, path: &mut Vec<String>) {
    let (Value::Seq(entries), Value::Seq(overs)) = (&mut base.value, &over.value) else {
        *base = over;
        return;
    };
    let subnet = |n: &Node| n.get("subnet").map(Node::to_json);
    for item in overs.iter().cloned() {
        match entries.iter_mut().find(|e| subnet(e) == subnet(&item)) {
            Some(entry) => {
                path.push("[]".into());
                merge_at(entry, item, path);
                path.pop();
            }
            None => entries.push(item),
        }
    }
}

/// A string becomes a one-item list; a mapping becomes `key=value` items, sorted (an item
/// per value when a key has a list, as extra_hosts allows).
fn to_seq(node: &mut Node) {
    let items = match &node.value {
        Value::Scalar { .. } => vec![node.clone()],
        Value::Map(entries) => {
            let mut items = Vec::new();
            for (k, v) in entries {
                let key = k.as_str().unwrap_or_default();
                match &v.value {
                    Value::Null => items.push(Node::str(key, k.span)),
                    Value::Seq(values) => items.extend(values.iter().map(|x| {
                        Node::str(format!("{key}={}", x.as_str().unwrap_or_default()), x.span)
                    })),
                    Value::Scalar { text, .. } => {
                        items.push(Node::str(format!("{key}={text}"), v.span))
                    }
                    Value::Map(_) => items.push(v.clone()),
                }
            }
            items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            items
        }
        Value::Null | Value::Seq(_) => return,
    };
    node.value = Value::Seq(items);
}

fn to_map(node: &mut Node, form: ListForm) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let mut entries: Vec<(Node, Node)> = Vec::new();
    for item in items {
        let Some(text) = item.as_str() else { continue };
        let (k, v) = match (form, text.split_once('=')) {
            (ListForm::KeyValue, Some((k, v))) => (k, Node::str(v, item.span)),
            _ => (text, Node::new(Value::Null, item.span)),
        };
        // A key given twice in one list: the later entry wins, as Compose's unicity has it.
        match entries.iter_mut().find(|(ek, _)| ek.as_str() == Some(k)) {
            Some(entry) => entry.1 = v,
            None => entries.push((Node::str(k, item.span), v)),
        }
    }
    node.value = Value::Map(entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::yaml::parse;

    fn merged(a: &str, b: &str) -> serde_json::Value {
        let mut base = parse(a, 0).unwrap();
        merge(&mut base, parse(b, 1).unwrap());
        base.to_json()
    }

    #[test]
    fn compose_merge_rules() {
        let a = "services:\n  web:\n    image: a\n    ports: ['80:80']\n    dns: [1.1.1.1]\n    command: [a, b]\n    networks: [front]\n";
        let b = "services:\n  web:\n    image: b\n    ports: ['80:80', '443:443']\n    dns: [8.8.8.8]\n    command: [c]\n    networks:\n      back: {}\n";
        let v = merged(a, b);
        let web = &v["services"]["web"];
        assert_eq!(web["image"], "b");
        assert_eq!(web["ports"], serde_json::json!(["80:80", "443:443"]));
        assert_eq!(web["dns"], serde_json::json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(web["command"], serde_json::json!(["c"]));
        assert_eq!(
            web["networks"],
            serde_json::json!({"front": null, "back": {}})
        );
    }

    #[test]
    fn new_services_and_networks_are_added() {
        let v = merged(
            "services:\n  a: {image: x}\n",
            "services:\n  b: {image: y}\nnetworks:\n  n: {}\n",
        );
        assert!(
            v["services"]["a"].is_object()
                && v["services"]["b"].is_object()
                && v["networks"]["n"].is_object()
        );
    }

    #[test]
    fn a_null_keeps_the_earlier_value() {
        let v = merged(
            "services:\n  a:\n    networks:\n      front: {aliases: [x]}\n",
            "services:\n  a:\n    networks:\n      front:\n",
        );
        assert_eq!(
            v["services"]["a"]["networks"],
            serde_json::json!({"front": {"aliases": ["x"]}})
        );
    }

    #[test]
    fn the_top_level_networks_key_is_not_a_service_list() {
        let v = merged("networks:\n  a: {}\n", "networks:\n  b: {}\n");
        assert_eq!(v["networks"], serde_json::json!({"a": {}, "b": {}}));
    }

    #[test]
    fn string_and_list_forms_merge_into_one_list() {
        let v = merged(
            "services:\n  a:\n    dns: 1.1.1.1\n    extra_hosts: {h: [1.2.3.4]}\n",
            "services:\n  a:\n    dns: [1.1.1.1, 8.8.8.8]\n    extra_hosts: ['g=5.6.7.8']\n",
        );
        let a = &v["services"]["a"];
        assert_eq!(a["dns"], serde_json::json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(
            a["extra_hosts"],
            serde_json::json!(["h=1.2.3.4", "g=5.6.7.8"])
        );
    }

    #[test]
    fn ipam_config_entries_merge_by_subnet() {
        let v = merged(
            "networks:\n  n:\n    ipam:\n      config:\n        - {subnet: 10.0.0.0/24, aux_addresses: {a: 10.0.0.2}}\n        - {subnet: 10.0.1.0/24}\n",
            "networks:\n  n:\n    ipam:\n      config:\n        - {subnet: 10.0.0.0/24, aux_addresses: {b: 10.0.0.3}}\n        - {subnet: 10.0.2.0/24}\n",
        );
        assert_eq!(
            v["networks"]["n"]["ipam"]["config"],
            serde_json::json!([
                {"subnet": "10.0.0.0/24", "aux_addresses": {"a": "10.0.0.2", "b": "10.0.0.3"}},
                {"subnet": "10.0.1.0/24"},
                {"subnet": "10.0.2.0/24"},
            ])
        );
    }

    #[test]
    fn reset_and_override_tags() {
        let v = merged(
            "services:\n  a:\n    dns: [1.1.1.1]\n    sysctls: {net.a: '1'}\n    networks: {front: {aliases: [x]}}\n",
            "services:\n  a:\n    dns: !reset []\n    sysctls: !override {net.b: '2'}\n    networks:\n      front: !override {aliases: [y]}\n      back: !reset\n",
        );
        let a = &v["services"]["a"];
        assert!(a.get("dns").is_none(), "{a}");
        assert_eq!(a["sysctls"], serde_json::json!({"net.b": "2"}));
        assert_eq!(
            a["networks"],
            serde_json::json!({"front": {"aliases": ["y"]}})
        );
    }
}
