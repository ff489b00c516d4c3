//! `deploy.placement.constraints` as Swarm reads them (moby/swarmkit manager/constraint): a
//! key, `==` or `!=`, a value; the value compared without regard to case, a missing label read
//! as the empty string (so `node.labels.ssd!=true` matches a node without the label). Only the
//! fields a netcompose node has are matched: its hostname, its id and its labels; Swarm's
//! other fields parse (files made for Swarm carry them) and match no node, as in Swarm.

use super::Node;
use crate::spec::{Constraint, ConstraintOp, NodeField};
use regex::Regex;
use std::sync::LazyLock;
use thiserror::Error;

/// Swarm's patterns: a key is a word of letters, digits, `-`, `_` and `.`; a value may not
/// hold an operator character (`<`, `>`, `~`, `=`, `!`), for operators Swarm may add later.
static KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?i)[a-z_][a-z0-9\-_.]+$").expect("a valid pattern"));
static VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i)[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$").expect("a valid pattern")
});

const LABELS: &str = "node.labels.";

/// Why a constraint does not parse. The messages are Swarm's where Swarm has one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConstraintError {
    #[error("constraint expected one operator from ==, !=")]
    NoOperator,
    #[error("key '{0}' is invalid")]
    BadKey(String),
    #[error("value '{0}' is invalid")]
    BadValue(String),
    #[error("unknown node field `{0}`")]
    UnknownField(String),
}

impl ConstraintError {
    /// What to write instead.
    pub fn hint(&self) -> &'static str {
        match self {
            ConstraintError::NoOperator => {
                "write FIELD==VALUE or FIELD!=VALUE, e.g. `node.labels.zone==eu` or `node.hostname!=db1`"
            }
            ConstraintError::BadKey(_) | ConstraintError::UnknownField(_) => {
                "netcompose places on `node.hostname`, `node.id` and `node.labels.KEY` (an agent's --label KEY=VALUE)"
            }
            ConstraintError::BadValue(_) => {
                "a value is letters, digits, spaces and `:-_.*()?+[]\\^$|/`; it cannot hold `<`, `>`, `~`, `=` or `!`"
            }
        }
    }
}

/// One constraint as Swarm parses it: the first operator found, in the order `==`, `!=`, splits
/// the text; key and value are trimmed.
pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
    let (key, op, value) = [("==", ConstraintOp::Eq), ("!=", ConstraintOp::Ne)]
        .into_iter()
        .find_map(|(sym, op)| text.split_once(sym).map(|(k, v)| (k.trim(), op, v.trim())))
        .ok_or(ConstraintError::NoOperator)?;
    if !KEY.is_match(key) {
        return Err(ConstraintError::BadKey(key.to_string()));
    }
    if !VALUE.is_match(value) {
        return Err(ConstraintError::BadValue(value.to_string()));
    }
    Ok(Constraint {
        field: field(key)?,
        op,
        value: value.to_string(),
    })
}

fn field(key: &str) -> Result<NodeField, ConstraintError> {
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "node.hostname" => return Ok(NodeField::Hostname),
        "node.id" => return Ok(NodeField::Id),
        "node.role" | "node.ip" | "node.platform.os" | "node.platform.arch" => {
            return Ok(NodeField::Swarm(key.to_string()));
        }
        _ => {}
    }
    // The prefix is matched without regard to case, the label key with it (as Swarm does).
    if lower.len() > LABELS.len() && lower.starts_with(LABELS) {
        return Ok(NodeField::Label(key[LABELS.len()..].to_string()));
    }
    if lower.starts_with("engine.labels.") {
        return Ok(NodeField::Swarm(key.to_string()));
    }
    Err(ConstraintError::UnknownField(key.to_string()))
}

/// Whether `node` satisfies one constraint.
pub fn matches(c: &Constraint, node: &Node) -> bool {
    let actual = match &c.field {
        NodeField::Hostname => node.name.as_str(),
        NodeField::Id => node.id.as_str(),
        NodeField::Label(key) => node.labels.get(key).map_or("", String::as_str),
        NodeField::Swarm(_) => return false,
    };
    let equal = actual.eq_ignore_ascii_case(&c.value);
    match c.op {
        ConstraintOp::Eq => equal,
        ConstraintOp::Ne => !equal,
    }
}

/// Whether `node` satisfies every constraint (none: every node).
pub fn matches_all(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| matches(c, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            id: format!("id-{name}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            alive: true,
        }
    }

    #[test]
    fn parses_the_three_fields_with_both_operators() {
        assert_eq!(
            parse("node.hostname == h1").unwrap(),
            Constraint {
                field: NodeField::Hostname,
                op: ConstraintOp::Eq,
                value: "h1".into()
            }
        );
        assert_eq!(parse("node.id!=abc").unwrap().op, ConstraintOp::Ne);
        assert_eq!(parse("node.id!=abc").unwrap().field, NodeField::Id);
        assert_eq!(
            parse("Node.Labels.Zone==eu").unwrap().field,
            NodeField::Label("Zone".into())
        );
        assert_eq!(
            parse("node.labels.zone==eu").unwrap().to_string(),
            "node.labels.zone==eu"
        );
    }

    #[test]
    fn rejects_what_swarm_rejects_with_its_words() {
        assert_eq!(parse("node=foo"), Err(ConstraintError::NoOperator));
        assert_eq!(parse("node.labels.x>=3"), Err(ConstraintError::NoOperator));
        assert_eq!(
            parse("node.hostname!==a"),
            Err(ConstraintError::BadKey("node.hostname!".into()))
        );
        assert_eq!(
            parse("1node==a"),
            Err(ConstraintError::BadKey("1node".into()))
        );
        assert_eq!(
            parse("node.hostname==a<b"),
            Err(ConstraintError::BadValue("a<b".into()))
        );
        assert_eq!(
            parse("node.hostname=="),
            Err(ConstraintError::BadValue(String::new()))
        );
        assert_eq!(
            ConstraintError::NoOperator.to_string(),
            "constraint expected one operator from ==, !="
        );
    }

    #[test]
    fn keeps_swarms_other_fields_matching_nothing_and_rejects_unknown_ones() {
        let role = parse("node.role==manager").unwrap();
        assert_eq!(role.field, NodeField::Swarm("node.role".into()));
        assert_eq!(role.to_string(), "node.role==manager");
        assert!(!matches(&role, &node("m", &[])));
        assert!(!matches(
            &parse("node.role!=manager").unwrap(),
            &node("m", &[])
        ));
        assert_eq!(
            parse("engine.labels.os==linux").unwrap().field,
            NodeField::Swarm("engine.labels.os".into())
        );
        assert_eq!(
            parse("node.name==a"),
            Err(ConstraintError::UnknownField("node.name".into()))
        );
        assert_eq!(
            parse("node.labels.==a"),
            Err(ConstraintError::UnknownField("node.labels.".into()))
        );
    }

    #[test]
    fn matches_values_without_case_and_a_missing_label_as_empty() {
        let n = node("Host-A", &[("zone", "EU")]);
        assert!(matches(&parse("node.hostname==host-a").unwrap(), &n));
        assert!(!matches(&parse("node.hostname!=HOST-A").unwrap(), &n));
        assert!(matches(&parse("node.labels.zone==eu").unwrap(), &n));
        // The label key is case-sensitive: `Zone` is another label, absent.
        assert!(!matches(&parse("node.labels.Zone==eu").unwrap(), &n));
        assert!(matches(&parse("node.labels.ssd!=true").unwrap(), &n));
        assert!(matches(&parse("node.id==ID-host-a").unwrap(), &n));
        assert!(matches_all(&[], &n));
        let both = [
            parse("node.labels.zone==eu").unwrap(),
            parse("node.hostname!=host-a").unwrap(),
        ];
        assert!(!matches_all(&both, &n));
    }
}
