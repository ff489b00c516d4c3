//! Merging several `-f` files as Compose does: mappings merge key by key, scalars and most
//! sequences are replaced by the later file, and the sequences that Compose treats as sets
//! (`ports`, `expose`, `dns`, `dns_search`, `dns_opt`, ...) are appended without duplicates.
//! Keys that may be a list or a mapping are first normalized to the mapping form.

use super::node::{Node, Value};

/// Sequences Compose appends (and de-duplicates) instead of replacing.
const APPENDED: &[&str] = &[
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
    "allow",
    "deny",
    "x-checks",
];

/// Keys written either as a list or as a mapping, merged in their mapping form.
const LIST_OR_MAP: &[(&str, ListForm)] = &[
    ("networks", ListForm::Names),
    ("depends_on", ListForm::Names),
    ("sysctls", ListForm::KeyValue),
    ("labels", ListForm::KeyValue),
    ("environment", ListForm::KeyValue),
    ("annotations", ListForm::KeyValue),
];

#[derive(Clone, Copy)]
enum ListForm {
    /// `[a, b]` → `{a: null, b: null}`
    Names,
    /// `[A=1]` → `{A: "1"}`
    KeyValue,
}

/// Merge `over` into `base`.
pub fn merge(base: &mut Node, over: Node) {
    merge_at(base, over, "")
}

fn merge_at(base: &mut Node, over: Node, key: &str) {
    if let Some((_, form)) = LIST_OR_MAP.iter().find(|(k, _)| *k == key) {
        if matches!(base.value, Value::Seq(_)) != matches!(over.value, Value::Seq(_)) {
            to_map(base, *form);
            let mut over = over;
            to_map(&mut over, *form);
            return merge_maps(base, over);
        }
    }
    match (&mut base.value, over.value) {
        (Value::Map(_), Value::Map(o)) => merge_maps(base, Node::new(Value::Map(o), over.span)),
        (Value::Seq(b), Value::Seq(o)) if APPENDED.contains(&key) => {
            for item in o {
                if !b.iter().any(|x| x.to_json() == item.to_json()) {
                    b.push(item);
                }
            }
        }
        (_, value) => *base = Node::new(value, over.span),
    }
}

fn merge_maps(base: &mut Node, over: Node) {
    let Value::Map(over_entries) = over.value else {
        return;
    };
    let Value::Map(entries) = &mut base.value else {
        *base = Node::new(Value::Map(over_entries), over.span);
        return;
    };
    for (k, v) in over_entries {
        let name = k.as_str().unwrap_or_default().to_string();
        match entries
            .iter_mut()
            .find(|(bk, _)| bk.as_str() == Some(name.as_str()))
        {
            Some((_, existing)) => merge_at(existing, v, &name),
            None => entries.push((k, v)),
        }
    }
}

fn to_map(node: &mut Node, form: ListForm) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let entries = items
        .iter()
        .filter_map(|item| {
            let text = item.as_str()?;
            let (k, v) = match (form, text.split_once('=')) {
                (ListForm::KeyValue, Some((k, v))) => (k, Node::str(v, item.span)),
                _ => (text, Node::new(Value::Null, item.span)),
            };
            Some((Node::str(k, item.span), v))
        })
        .collect();
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
}
