//! Unknown-key detection driven by the Compose specification's own JSON Schema
//! (schemas/compose-spec.json, compose-spec/compose-spec). Only object keys are checked here:
//! the typed decoder checks the values of the keys netcompose acts on, and keys that are not
//! about networking are accepted as long as the schema knows them.

use super::node::{Node, Value};
use crate::diag::{did_you_mean, ConfigError, Diagnostics};
use regex::Regex;
use serde_json::Value as J;
use std::collections::HashMap;
use std::sync::OnceLock;

const COMPOSE_SCHEMA: &str = include_str!("../../schemas/compose-spec.json");

struct Schema {
    root: J,
    patterns: HashMap<String, Option<Regex>>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let root: J = serde_json::from_str(COMPOSE_SCHEMA).unwrap_or(J::Null);
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        Schema { root, patterns }
    })
}

fn collect_patterns(v: &J, out: &mut HashMap<String, Option<Regex>>) {
    match v {
        J::Object(m) => {
            if let Some(J::Object(pp)) = m.get("patternProperties") {
                for p in pp.keys() {
                    out.entry(p.clone()).or_insert_with(|| Regex::new(p).ok());
                }
            }
            m.values().for_each(|x| collect_patterns(x, out));
        }
        J::Array(a) => a.iter().for_each(|x| collect_patterns(x, out)),
        _ => {}
    }
}

/// Report every key of `root` that the Compose schema does not allow where it stands.
pub fn check_keys(root: &Node, diags: &mut Diagnostics) {
    let s = schema();
    Walker { schema: s, diags }.walk(root, &s.root, &Place::Top);
}

struct Walker<'a> {
    schema: &'static Schema,
    diags: &'a mut Diagnostics,
}

impl Walker<'_> {
    fn resolve(&self, mut sch: &'static J) -> &'static J {
        while let Some(r) = sch.get("$ref").and_then(J::as_str) {
            let path = r.trim_start_matches("#/");
            match path
                .split('/')
                .try_fold(&self.schema.root, |acc, seg| acc.get(seg))
            {
                Some(target) => sch = target,
                None => break,
            }
        }
        sch
    }

    /// The branch of a oneOf/anyOf that fits the node's shape, or the schema itself.
    fn branch(&self, node: &Node, sch: &'static J) -> Option<&'static J> {
        let sch = self.resolve(sch);
        let alts = sch
            .get("oneOf")
            .or_else(|| sch.get("anyOf"))
            .and_then(J::as_array);
        let Some(alts) = alts else { return Some(sch) };
        alts.iter().map(|a| self.resolve(a)).find_map(|a| {
            let nested = a.get("oneOf").or_else(|| a.get("anyOf")).is_some();
            if nested {
                self.branch(node, a)
            } else {
                fits(node, a).then_some(a)
            }
        })
    }

    fn walk(&mut self, node: &Node, sch: &'static J, place: &Place) {
        let Some(sch) = self.branch(node, sch) else {
            return;
        };
        match &node.value {
            Value::Map(entries) => self.walk_map(entries, sch, place),
            Value::Seq(items) => {
                if let Some(item_schema) = sch.get("items") {
                    items.iter().for_each(|i| self.walk(i, item_schema, place));
                }
            }
            _ => {}
        }
    }

    fn walk_map(&mut self, entries: &[(Node, Node)], sch: &'static J, place: &Place) {
        let props = sch.get("properties").and_then(J::as_object);
        let pattern_props = sch.get("patternProperties").and_then(J::as_object);
        let closed = sch.get("additionalProperties") == Some(&J::Bool(false));
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            if let Some(child) = props.and_then(|p| p.get(key)) {
                self.walk(v, child, &Place::Key(place, key));
                continue;
            }
            let by_pattern =
                pattern_props.and_then(|pp| pp.iter().find(|(p, _)| self.matches(p, key)));
            if let Some((_, child)) = by_pattern {
                self.walk(v, child, &Place::Key(place, key));
            } else if let Some(extra) = sch.get("additionalProperties").filter(|a| a.is_object()) {
                self.walk(v, extra, &Place::Key(place, key));
            } else if closed {
                self.unknown(key, k, props, place);
            }
        }
    }

    fn matches(&self, pattern: &str, key: &str) -> bool {
        matches!(self.schema.patterns.get(pattern), Some(Some(re)) if re.is_match(key))
    }

    fn unknown(
        &mut self,
        key: &str,
        at: &Node,
        props: Option<&'static serde_json::Map<String, J>>,
        place: &Place,
    ) {
        let names: Vec<&str> = props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let hint = match did_you_mean(key, names.iter().copied()) {
            Some(c) => format!("did you mean `{c}`? (extension keys start with `x-`)"),
            None => "remove it, or prefix it with `x-` to keep it as an extension".to_string(),
        };
        self.diags.push(ConfigError::UnknownKey {
            key: key.to_string(),
            place: place.to_string(),
            hint,
            at: at.span,
        });
    }
}

/// Whether the node's shape is one the schema's `type` allows.
fn fits(node: &Node, sch: &J) -> bool {
    let shape = match &node.value {
        Value::Map(_) => "object",
        Value::Seq(_) => "array",
        Value::Null => "null",
        Value::Scalar { .. } => "scalar",
    };
    let allows = |t: &str| match shape {
        "scalar" => !matches!(t, "object" | "array" | "null"),
        s => t == s,
    };
    match sch.get("type") {
        Some(J::String(t)) => allows(t),
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).any(allows),
        _ => true,
    }
}

/// Where a key stands (`services › `web``), written out only for a key that is reported:
/// the walk visits every key of the file.
enum Place<'p> {
    Top,
    Key(&'p Place<'p>, &'p str),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Top => f.write_str("the top level"),
            Place::Key(Place::Top, key) => write!(f, "`{key}`"),
            Place::Key(parent, key) => write!(f, "{parent} › `{key}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::yaml;

    fn unknown(src: &str) -> Vec<(String, String, String)> {
        let node = yaml::parse(src, 0).unwrap();
        let mut d = Diagnostics::default();
        check_keys(&node, &mut d);
        d.errors
            .into_iter()
            .filter_map(|e| match e {
                ConfigError::UnknownKey {
                    key, place, hint, ..
                } => Some((key, place, hint)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn known_keys_pass() {
        let src = "services:\n  web:\n    image: x\n    networks:\n      front: {aliases: [a], ipv4_address: 10.0.0.2}\n    x-run: echo\n    deploy: {replicas: 2}\nnetworks:\n  front:\n    ipam: {config: [{subnet: 10.0.0.0/24}]}\nx-checks: []\n";
        assert!(unknown(src).is_empty());
    }

    #[test]
    fn typo_gets_a_suggestion() {
        let e = unknown("services:\n  web:\n    netwroks: [a]\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "netwroks");
        assert!(e[0].2.contains("`networks`"), "{}", e[0].2);
    }

    #[test]
    fn nested_unknown_keys() {
        let e =
            unknown("networks:\n  n:\n    ipam:\n      config:\n        - subnett: 10.0.0.0/24\n");
        assert_eq!(e[0].0, "subnett");
        let e = unknown("services:\n  s:\n    networks:\n      n: {alias: [x]}\n");
        assert_eq!(e[0].0, "alias");
    }
}
