//! `.env` files as Compose reads them: `KEY=value` lines, optional `export`, comments, single
//! quotes (literal), double quotes (with `\n`-style escapes), ` #` comments after unquoted
//! values, and a bare `KEY` that takes the variable from the environment. `${VAR}` in a value
//! is resolved as compose-go's dotenv does: from the environment first (the shell, and files
//! read before), then from the lines above it.

use super::interpolate::{expand, Vars};
use std::collections::BTreeSet;

/// A line that is not `KEY=value`: its 1-based number and text.
#[derive(Debug, PartialEq)]
pub struct EnvSyntaxError {
    pub line: usize,
    pub text: String,
}

impl EnvSyntaxError {
    /// Where the line starts in `text`: whole lines summed with their own terminators, since
    /// `lines()` drops a `\r` too and one byte per line would end mid-line in a CRLF file.
    pub fn offset(&self, text: &str) -> usize {
        text.split_inclusive('\n')
            .take(self.line.saturating_sub(1))
            .map(str::len)
            .sum()
    }
}

/// Parse a `.env` file; values may refer to variables of `base` (the environment, which wins)
/// or defined on earlier lines.
pub fn parse(text: &str, base: &Vars) -> Result<Vars, EnvSyntaxError> {
    let mut vars = Vars::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let err = || EnvSyntaxError {
            line: i + 1,
            text: raw.to_string(),
        };
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(err());
        }
        match value {
            Some(value) => {
                let resolved = value_of(value, &|name: &str| {
                    base.get(name).or_else(|| vars.get(name)).cloned()
                });
                vars.insert(key.to_string(), resolved);
            }
            None => {
                if let Some(inherited) = base.get(key) {
                    vars.insert(key.to_string(), inherited.clone());
                }
            }
        }
    }
    Ok(vars)
}

fn value_of(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let interp = |s: &str| {
        if !s.contains('$') {
            return s.to_string();
        }
        // Only the variables the value names, looked up in order of precedence.
        let scope: Vars = referenced(s)
            .into_iter()
            .filter_map(|name| Some((name.to_string(), lookup(name)?)))
            .collect();
        expand(s, &scope, &mut BTreeSet::new()).unwrap_or_else(|_| s.to_string())
    };
    if let Some(inner) = value
        .strip_prefix('\'')
        .and_then(|v| v.rsplit_once('\''))
        .map(|(v, _)| v)
    {
        return inner.to_string();
    }
    if let Some(inner) = value
        .strip_prefix('"')
        .and_then(|v| v.rsplit_once('"'))
        .map(|(v, _)| v)
    {
        let unescaped = inner
            .replace("\\n", "\n")
            .replace("\\t", "\t")
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        return interp(&unescaped);
    }
    let unquoted = match value.find(" #") {
        Some(pos) => value[..pos].trim_end(),
        None => value,
    };
    interp(unquoted)
}

/// Every name that could be a variable in `s`: runs of name characters (over-approximate,
/// which is harmless: only what `expand` asks for is used).
fn referenced(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let text =
            "# c\nA=1\nexport B = two # note\nC='lit $A'\nD=\"x${A}\\ny\"\nE=\nF=${A}-${B}\n";
        let v = parse(text, &Vars::new()).unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two");
        assert_eq!(v["C"], "lit $A");
        assert_eq!(v["D"], "x1\ny");
        assert_eq!(v["E"], "");
        assert_eq!(v["F"], "1-two");
    }

    #[test]
    fn the_environment_wins_inside_the_file_and_bare_keys_inherit() {
        let base: Vars = [("FOO".to_string(), "zot".to_string())].into();
        let v = parse("FOO=foo\nBAR=${FOO}\nFOO\nNOPE\nC=${C2:-d}\n", &base).unwrap();
        assert_eq!((v["FOO"].as_str(), v["BAR"].as_str()), ("zot", "zot"));
        assert!(!v.contains_key("NOPE"));
        assert_eq!(v["C"], "d");
        let v = parse("FOO=foo\nBAR=${FOO}\n", &Vars::new()).unwrap();
        assert_eq!(v["BAR"], "foo");
    }

    #[test]
    fn bad_line() {
        assert_eq!(parse("A=1\n=x\n", &Vars::new()).unwrap_err().line, 2);
    }
}
