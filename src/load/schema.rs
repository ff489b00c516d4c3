//! Unknown-key detection driven by the Compose specification's own JSON Schema
//! (schemas/compose-spec.json, compose-spec/compose-spec). Only object keys are checked here:
//! the typed decoder checks the values of the keys netcompose acts on, and keys that are not
//! about networking are accepted as long as the schema knows them.

use super::node::{Node, Value};
use crate::diag::{did_you_mean, ConfigError, Diagnostics};
use crate::spec::Keyed;
use regex::Regex;
use serde_json::Value as J;
use std::collections::HashMap;
use std::sync::OnceLock;

const COMPOSE_SCHEMA: &str = include_str!("../../schemas/compose-spec.json");

/// The schema compiled once per run into what the walk asks of it: a node per schema object
/// (`$ref`s followed), its keywords looked up once. Walking the JSON value itself looked each
/// keyword up again at every key of the file (460,000 lookups for 5,000 services).
struct Schema {
    shapes: Vec<Shape>,
    /// The patterns of `patternProperties`, compiled when a key first needs one.
    patterns: Vec<(String, OnceLock<Option<Regex>>)>,
}

/// Where a schema node stands in [`Schema::shapes`].
type ShapeId = usize;

/// One schema object, as far as key checking goes.
#[derive(Default)]
struct Shape {
    /// The shapes of node its `type` allows (all without one).
    allows: Allows,
    /// Its `oneOf` (else `anyOf`) alternatives, in order.
    alternatives: Vec<ShapeId>,
    /// `properties`, in the schema's order (the order suggestions are taken in).
    properties: Keyed<ShapeId>,
    /// `patternProperties`: an index into [`Schema::patterns`] and the schema of its keys.
    patterns: Vec<(usize, ShapeId)>,
    additional: Additional,
    items: Option<ShapeId>,
}

/// The shapes of node a schema's `type` allows.
#[derive(Clone, Copy)]
struct Allows {
    object: bool,
    array: bool,
    null: bool,
    scalar: bool,
}

impl Default for Allows {
    fn default() -> Self {
        Allows {
            object: true,
            array: true,
            null: true,
            scalar: true,
        }
    }
}

/// What `additionalProperties` says of a key that no property or pattern names.
#[derive(Default)]
enum Additional {
    /// Absent or `true`: any such key.
    #[default]
    Open,
    /// `false`: none; each is reported.
    Closed,
    /// A schema: such keys, walked with it.
    Schema(ShapeId),
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let root: J = serde_json::from_str(COMPOSE_SCHEMA).unwrap_or(J::Null);
        let mut compiler = Compiler {
            root: &root,
            ids: HashMap::new(),
            shapes: Vec::new(),
            patterns: Vec::new(),
        };
        compiler.shape(&root);
        Schema {
            shapes: compiler.shapes,
            patterns: compiler
                .patterns
                .into_iter()
                .map(|p| (p, OnceLock::new()))
                .collect(),
        }
    })
}

/// Builds the [`Shape`]s of a schema, each object once (by its address in the parsed JSON, so
/// that recursive `$ref`s end).
struct Compiler<'j> {
    root: &'j J,
    ids: HashMap<*const J, ShapeId>,
    shapes: Vec<Shape>,
    patterns: Vec<String>,
}

impl<'j> Compiler<'j> {
    /// `sch` after its `$ref`s (a reference that leads nowhere leaves the object as it is).
    fn resolve(&self, mut sch: &'j J) -> &'j J {
        while let Some(r) = sch.get("$ref").and_then(J::as_str) {
            let path = r.trim_start_matches("#/");
            match path.split('/').try_fold(self.root, |acc, seg| acc.get(seg)) {
                Some(target) => sch = target,
                None => break,
            }
        }
        sch
    }

    fn shape(&mut self, sch: &'j J) -> ShapeId {
        let sch = self.resolve(sch);
        if let Some(&id) = self.ids.get(&std::ptr::from_ref(sch)) {
            return id;
        }
        let id = self.shapes.len();
        self.shapes.push(Shape::default());
        self.ids.insert(std::ptr::from_ref(sch), id);
        let shape = Shape {
            allows: allows(sch),
            alternatives: match sch.get("oneOf").or_else(|| sch.get("anyOf")) {
                Some(J::Array(alts)) => alts.iter().map(|a| self.shape(a)).collect(),
                _ => Vec::new(),
            },
            properties: match sch.get("properties") {
                Some(J::Object(props)) => props
                    .iter()
                    .map(|(k, v)| (k.clone(), self.shape(v)))
                    .collect(),
                _ => Default::default(),
            },
            patterns: match sch.get("patternProperties") {
                Some(J::Object(pp)) => pp
                    .iter()
                    .map(|(p, v)| (self.pattern(p), self.shape(v)))
                    .collect(),
                _ => Vec::new(),
            },
            additional: match sch.get("additionalProperties") {
                Some(J::Bool(false)) => Additional::Closed,
                Some(extra @ J::Object(_)) => Additional::Schema(self.shape(extra)),
                _ => Additional::Open,
            },
            items: sch.get("items").map(|i| self.shape(i)),
        };
        self.shapes[id] = shape;
        id
    }

    fn pattern(&mut self, p: &str) -> usize {
        match self.patterns.iter().position(|q| q == p) {
            Some(i) => i,
            None => {
                self.patterns.push(p.to_string());
                self.patterns.len() - 1
            }
        }
    }
}

/// The shapes of node that the schema's `type` allows.
fn allows(sch: &J) -> Allows {
    let types: Vec<&str> = match sch.get("type") {
        Some(J::String(t)) => vec![t.as_str()],
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).collect(),
        _ => return Allows::default(),
    };
    Allows {
        object: types.contains(&"object"),
        array: types.contains(&"array"),
        null: types.contains(&"null"),
        scalar: types
            .iter()
            .any(|t| !matches!(*t, "object" | "array" | "null")),
    }
}

/// Report every key of `root` that the Compose schema does not allow where it stands.
pub fn check_keys(root: &Node, diags: &mut Diagnostics) {
    // The compiler numbers the schema's root first.
    Walker {
        schema: schema(),
        diags,
    }
    .walk(root, 0, &Place::Top);
}

struct Walker<'a> {
    schema: &'static Schema,
    diags: &'a mut Diagnostics,
}

impl Walker<'_> {
    /// The branch of a oneOf/anyOf that fits the node's shape, or the schema itself.
    fn branch(&self, node: &Node, id: ShapeId) -> Option<ShapeId> {
        let shapes = &self.schema.shapes;
        if shapes[id].alternatives.is_empty() {
            return Some(id);
        }
        shapes[id].alternatives.iter().find_map(|&alt| {
            if shapes[alt].alternatives.is_empty() {
                fits(node, shapes[alt].allows).then_some(alt)
            } else {
                self.branch(node, alt)
            }
        })
    }

    fn walk(&mut self, node: &Node, id: ShapeId, place: &Place) {
        let Some(id) = self.branch(node, id) else {
            return;
        };
        match &node.value {
            Value::Map(entries) => self.walk_map(entries, id, place),
            Value::Seq(items) => {
                if let Some(item) = self.schema.shapes[id].items {
                    items.iter().for_each(|i| self.walk(i, item, place));
                }
            }
            Value::Null | Value::Scalar { .. } => {}
        }
    }

    fn walk_map(&mut self, entries: &[(Node, Node)], id: ShapeId, place: &Place) {
        let shape = &self.schema.shapes[id];
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            let by_name = shape.properties.get(key).copied();
            let by_pattern = || {
                let found = shape.patterns.iter().find(|(p, _)| self.matches(*p, key));
                found.map(|&(_, child)| child)
            };
            match (by_name.or_else(by_pattern), &shape.additional) {
                (Some(child), _) | (None, &Additional::Schema(child)) => {
                    self.walk(v, child, &Place::Key(place, key))
                }
                (None, Additional::Closed) => self.unknown(key, k, shape, place),
                (None, Additional::Open) => {}
            }
        }
    }

    fn matches(&self, pattern: usize, key: &str) -> bool {
        let Some((text, compiled)) = self.schema.patterns.get(pattern) else {
            return false;
        };
        matches!(compiled.get_or_init(|| Regex::new(text).ok()), Some(re) if re.is_match(key))
    }

    fn unknown(&mut self, key: &str, at: &Node, shape: &Shape, place: &Place) {
        let hint = match did_you_mean(key, shape.properties.keys().map(String::as_str)) {
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
fn fits(node: &Node, allows: Allows) -> bool {
    match &node.value {
        Value::Map(_) => allows.object,
        Value::Seq(_) => allows.array,
        Value::Null => allows.null,
        Value::Scalar { .. } => allows.scalar,
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

    #[test]
    fn the_branch_that_fits_the_shape_is_checked() {
        // `ports` items are a oneOf of a number, a string and an object: only the object's
        // keys are checked, against the object branch's properties.
        let e = unknown("services:\n  s:\n    ports:\n      - 80\n      - \"8080:80\"\n      - {target: 80, publshed: 8081}\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "publshed");
        assert!(e[0].2.contains("`published`"), "{}", e[0].2);
        assert_eq!(e[0].1, "`services` › `s` › `ports`");
        // `networks` of a service: a list of names, or a map of (nullable) attachments.
        assert!(unknown("services:\n  s:\n    networks: [a, b]\n").is_empty());
        assert!(unknown("services:\n  s:\n    networks:\n      a:\n").is_empty());
    }
}
