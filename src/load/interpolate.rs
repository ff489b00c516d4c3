//! Variable interpolation as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}` and `$$`
//! for a literal dollar. Defaults may themselves hold interpolations. Only values are
//! interpolated, never keys (as in compose-go).

use super::node::{Node, Value};
use crate::source::Span;
use std::collections::{BTreeSet, HashMap};

/// The variables interpolation reads: the process environment over the `.env` file.
pub type Vars = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub enum InterpolationError {
    /// `${VAR:?message}` or `${VAR?message}` with VAR missing.
    Required {
        var: String,
        message: String,
        span: Span,
    },
    /// A `${` without its `}`, or a bad variable name.
    Syntax { message: String, span: Span },
}

/// What interpolation of a tree found: its errors and the variables that were not set.
#[derive(Debug, Default)]
pub struct Outcome {
    pub errors: Vec<InterpolationError>,
    pub unset: BTreeSet<String>,
}

/// Mappings whose values are data, kept even when empty: `FOO: ${UNSET}` in `environment`
/// sets FOO to the empty string, as in Compose.
const FREE_FORM: &[&str] = &[
    "environment",
    "labels",
    "annotations",
    "driver_opts",
    "options",
    "sysctls",
    "args",
];

/// Sequences whose items are arguments, where an empty one is meaningful.
const ARGUMENTS: &[&str] = &["command", "entrypoint", "test", "x-run"];

/// Interpolate every scalar value of the tree in place. A value that held a variable and
/// comes out empty is dropped, as if the key were not written (`dns: ${UNSET}` gives no DNS
/// server, not an empty one; Compose reads an empty string as the key's zero value), except
/// in the mappings and argument lists where an empty string is data.
pub fn interpolate_tree(node: &mut Node, vars: &Vars, out: &mut Outcome) {
    walk(node, vars, out, "");
}

fn walk(node: &mut Node, vars: &Vars, out: &mut Outcome, key: &str) {
    match &mut node.value {
        Value::Scalar { text, .. } if text.contains('$') => {
            match expand(text, vars, &mut out.unset) {
                Ok(s) => *text = s,
                Err(e) => out.errors.push(e.at(node.span)),
            }
        }
        Value::Seq(items) => {
            let keep_empty = ARGUMENTS.contains(&key);
            items.retain_mut(|n| {
                let interpolated = holds_variable(n);
                walk(n, vars, out, key);
                keep_empty || !(interpolated && n.as_str() == Some(""))
            });
        }
        Value::Map(entries) => {
            let keep_empty = FREE_FORM.contains(&key);
            entries.retain_mut(|(k, v)| {
                let interpolated = holds_variable(v);
                walk(v, vars, out, k.as_str().unwrap_or_default());
                keep_empty || !(interpolated && v.as_str() == Some(""))
            });
        }
        _ => {}
    }
}

fn holds_variable(node: &Node) -> bool {
    node.as_str().is_some_and(|t| t.contains('$'))
}

/// An error before it is given the span of the scalar it occurred in.
#[derive(Debug, PartialEq)]
pub enum ExpandError {
    Required { var: String, message: String },
    Syntax(String),
}

impl ExpandError {
    fn at(self, span: Span) -> InterpolationError {
        match self {
            ExpandError::Required { var, message } => {
                InterpolationError::Required { var, message, span }
            }
            ExpandError::Syntax(message) => InterpolationError::Syntax { message, span },
        }
    }
}

/// Expand one string.
pub fn expand(
    input: &str,
    vars: &Vars,
    unset: &mut BTreeSet<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                ExpandError::Syntax(format!("`${{` without a closing `}}` in `{input}`"))
            })?;
            out.push_str(&braced(&body[..end], vars, unset)?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len], vars, unset));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` closing a `${`, counting nested `${ ... }`.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

fn lookup(name: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

fn braced(body: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> Result<String, ExpandError> {
    let len = name_len(body);
    if len == 0 {
        return Err(ExpandError::Syntax(format!(
            "`${{{body}}}` does not start with a variable name"
        )));
    }
    let (name, op) = body.split_at(len);
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, op),
    };
    let present = if colon { set_nonempty } else { value.is_some() };
    match op.chars().next() {
        None if !colon => Ok(lookup(name, vars, unset)),
        Some('-') if present => Ok(value.cloned().unwrap_or_default()),
        Some('-') => expand(&op[1..], vars, unset),
        Some('+') if present => expand(&op[1..], vars, unset),
        Some('+') => Ok(String::new()),
        Some('?') if present => Ok(value.cloned().unwrap_or_default()),
        Some('?') => Err(ExpandError::Required { var: name.to_string(), message: expand(&op[1..], vars, unset)? }),
        _ => Err(ExpandError::Syntax(format!("`${{{body}}}` is not a valid substitution (after the name: `:-`, `-`, `:?`, `?`, `:+` or `+`)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Result<String, ExpandError> {
        let vars: Vars = [("A", "a"), ("E", ""), ("N", "8080")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand(s, &vars, &mut BTreeSet::new())
    }

    #[test]
    fn forms() {
        assert_eq!(ex("$A ${A} x${N}y").unwrap(), "a a x8080y");
        assert_eq!(ex("${U:-d} ${E:-d} ${E-d} ${U-d}").unwrap(), "d d  d");
        assert_eq!(
            ex("${A:+alt} ${E:+alt} ${E+alt} ${U+alt}").unwrap(),
            "alt  alt "
        );
        assert_eq!(ex("$$A $${A}").unwrap(), "$A ${A}");
        assert_eq!(ex("${U:-${A}-x}").unwrap(), "a-x");
        assert_eq!(ex("cost: 5$").unwrap(), "cost: 5$");
    }

    #[test]
    fn required() {
        assert_eq!(
            ex("${U:?need U}"),
            Err(ExpandError::Required {
                var: "U".into(),
                message: "need U".into()
            })
        );
        assert!(ex("${E:?x}").is_err());
        assert_eq!(ex("${E?x}").unwrap(), "");
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(ex("${A"), Err(ExpandError::Syntax(_))));
        assert!(matches!(ex("${1A}"), Err(ExpandError::Syntax(_))));
        assert!(matches!(ex("${A!x}"), Err(ExpandError::Syntax(_))));
    }

    #[test]
    fn values_that_become_empty_are_dropped_except_data() {
        let mut tree = crate::load::yaml::parse(
            "a: ${U}\nb: ''\nl: [x, '${U}']\nenvironment: {E: '${U}'}\ncommand: [c, '${U}']\n",
            0,
        )
        .unwrap();
        interpolate_tree(&mut tree, &Vars::new(), &mut Outcome::default());
        assert_eq!(
            tree.to_json(),
            serde_json::json!({"b": "", "l": ["x"], "environment": {"E": ""}, "command": ["c", ""]})
        );
    }

    #[test]
    fn unset_is_recorded() {
        let mut unset = BTreeSet::new();
        assert_eq!(expand("${NOPE}", &Vars::new(), &mut unset).unwrap(), "");
        assert!(unset.contains("NOPE"));
    }
}
