//! The keys of a service that control how its `x-run` process starts and stops: `env_file`,
//! `init`, `stop_signal`, `stop_grace_period`. The env files themselves are read later, by
//! [`super::super::env_file`], once the loader knows the project directory.

use super::duration::parse_duration;
use super::Decoder;
use crate::load::node::{Node, Value};
use crate::spec::{EnvFile, Exec, Spanned};
use nix::sys::signal::Signal;
use std::str::FromStr;

/// Linux's real-time signals as Docker numbers them (`RTMIN` is glibc's first free one).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

pub(super) fn decode(d: &mut Decoder, node: &Node, exec: &mut Exec) {
    exec.env_files = env_files(d, node.get("env_file"));
    if let Some(init) = node.get("init").filter(|n| !n.is_null()) {
        exec.init = d.bool(init, "init").is_some_and(|b| b.value);
    }
    if let Some(s) = d.opt_string(node, "stop_signal") {
        match signal_number(&s.value) {
            Some(n) => exec.stop_signal = Some(Spanned::new(n, s.span)),
            None => {
                if let Some(n) = node.get("stop_signal") {
                    d.invalid(
                        "stop_signal",
                        n,
                        "not a signal",
                        "name a signal (SIGTERM, SIGINT, SIGUSR1, RTMIN+3) or give its number",
                    );
                }
            }
        }
    }
    if let Some(s) = d.opt_string(node, "stop_grace_period") {
        match parse_duration(&s.value) {
            Ok(t) => exec.stop_grace_period = Some(Spanned::new(t, s.span)),
            Err(e) => {
                if let Some(n) = node.get("stop_grace_period") {
                    d.invalid(
                        "stop_grace_period",
                        n,
                        e.to_string(),
                        "write a duration such as `10s`, `1m30s` or `500ms`",
                    );
                }
            }
        }
    }
}

/// `env_file`: a path, or a list of paths and `{path, required, format}` mappings.
fn env_files(d: &mut Decoder, node: Option<&Node>) -> Vec<EnvFile> {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut out = Vec::new();
    for item in items {
        if item.as_map().is_none() {
            if let Some(path) = d.string(item, "env_file") {
                out.push(EnvFile {
                    path,
                    required: true,
                    raw: false,
                });
            }
            continue;
        }
        let Some(path) = d.opt_string(item, "path") else {
            d.invalid(
                "env_file",
                item,
                "an entry without a path",
                "write `{path: ./app.env}`",
            );
            continue;
        };
        let required = d.opt_bool(item, "required").is_none_or(|r| r.value);
        let raw = match d.opt_string(item, "format") {
            None => false,
            Some(f) if f.value == "raw" => true,
            Some(_) => {
                if let Some(f) = item.get("format") {
                    d.invalid(
                        "env_file format",
                        f,
                        "unknown format",
                        "leave `format` out for Compose's .env syntax, or write `format: raw`",
                    );
                }
                continue;
            }
        };
        out.push(EnvFile {
            path,
            required,
            raw,
        });
    }
    out
}

/// `SIGTERM`, `term`, `15`, `RTMIN+3`, as Docker reads a signal; None if it is none.
pub fn signal_number(text: &str) -> Option<i32> {
    let s = text.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |base: &str, sign: i32| -> Option<i32> {
        let rest = bare.strip_prefix(base)?;
        let n = match rest {
            "" => 0,
            r => r
                .strip_prefix(if sign > 0 { '+' } else { '-' })?
                .parse::<i32>()
                .ok()?,
        };
        let sig = if sign > 0 { RTMIN + n } else { RTMAX - n };
        (RTMIN..=RTMAX).contains(&sig).then_some(sig)
    };
    if let Some(n) = rt("RTMIN", 1).or_else(|| rt("RTMAX", -1)) {
        return Some(n);
    }
    Signal::from_str(&format!("SIG{bare}"))
        .ok()
        .map(|sig| sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::ConfigError;
    use std::time::Duration;

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("sigusr1"), Some(10));
        assert_eq!(signal_number("INT"), Some(2));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("RTMIN+3"), Some(37));
        assert_eq!(signal_number("SIGRTMAX-1"), Some(63));
        assert_eq!(signal_number("RTMIN"), Some(34));
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_number("65"), None);
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("RTMIN+40"), None);
    }

    fn load(yaml: &str) -> crate::load::Loaded {
        super::super::load_for_test(yaml, &[])
    }

    #[test]
    fn process_keys() {
        let loaded = load(
            "services:\n  a:\n    init: true\n    stop_signal: SIGUSR1\n    \
             stop_grace_period: 1m30s\n  b:\n    stop_signal: \"2\"\n  c: {}\n",
        );
        assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags);
        let a = &loaded.project.services["a"].exec;
        assert!(a.init);
        assert_eq!(a.stop_signal.as_ref().unwrap().value, 10);
        assert_eq!(
            a.stop_grace_period.as_ref().unwrap().value,
            Duration::from_secs(90)
        );
        let b = &loaded.project.services["b"].exec;
        assert_eq!(b.stop_signal.as_ref().unwrap().value, 2);
        let c = &loaded.project.services["c"].exec;
        assert!(!c.init && c.stop_signal.is_none() && c.stop_grace_period.is_none());
    }

    #[test]
    fn bad_process_keys_are_diagnosed_at_the_value() {
        let yaml = "services:\n  a:\n    init: maybe\n    stop_signal: SIGFLY\n    \
                    stop_grace_period: 10\n    env_file: [{format: toml, path: x}, {required: false}]\n";
        let loaded = load(yaml);
        let mut what: Vec<(String, usize)> = loaded
            .diags
            .errors
            .iter()
            .map(|e| match e {
                ConfigError::InvalidValue { what, at, .. } => (what.clone(), at.offset as usize),
                ConfigError::WrongType { key, at, .. } => (key.clone(), at.offset as usize),
                other => panic!("{other:?}"),
            })
            .collect();
        what.sort();
        let at = |needle: &str| yaml.find(needle).unwrap();
        assert_eq!(
            what,
            [
                ("env_file".to_string(), at("{required")),
                ("env_file format".to_string(), at("toml")),
                ("init".to_string(), at("maybe")),
                ("stop_grace_period".to_string(), at("10\n")),
                ("stop_signal".to_string(), at("SIGFLY")),
            ]
        );
    }
}
