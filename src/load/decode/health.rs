//! `healthcheck` and `depends_on`: when a service's `x-run` processes count as healthy, and
//! which of them wait for which. Compose's defaults (interval 30s, timeout 30s, retries 3,
//! start_period 0s, start_interval 5s) are filled in here, so later stages see plain values.

use super::duration::parse_duration;
use super::Decoder;
use crate::load::node::{Node, Value};
use crate::spec::{Condition, Dependency, Healthcheck, Spanned};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const START_INTERVAL: Duration = Duration::from_secs(5);
const RETRIES: u32 = 3;

const DURATION_HINT: &str =
    "write a duration as Compose does: a number and a unit (ns, us, ms, s, m, h), e.g. 10s, 1m30s, 500ms";

/// `healthcheck`; None when absent, disabled (`disable: true`, `test: [NONE]`) or without a
/// test (an image's test has nothing to override here).
pub(super) fn healthcheck(d: &mut Decoder, node: Option<&Node>) -> Option<Spanned<Healthcheck>> {
    let node = node.filter(|n| !n.is_null())?;
    if node.as_map().is_none() {
        d.wrong_type("healthcheck", "a mapping", node);
        return None;
    }
    let disabled = d.opt_bool(node, "disable").is_some_and(|b| b.value);
    let argv = node
        .get("test")
        .filter(|n| !n.is_null())
        .and_then(|t| test(d, t));
    let mut durations = [
        ("interval", INTERVAL),
        ("timeout", TIMEOUT),
        ("start_period", Duration::ZERO),
        ("start_interval", START_INTERVAL),
    ];
    // As Docker reads them, 0 means the default (start_period's default is 0 anyway).
    for (key, value) in &mut durations {
        if let Some(v) = node.get(key).filter(|n| !n.is_null()) {
            *value = duration_node(d, v, key)
                .filter(|v| !v.is_zero())
                .unwrap_or(*value);
        }
    }
    let retries = node
        .get("retries")
        .filter(|n| !n.is_null())
        .and_then(|n| {
            let v = d.int(n, "retries")?;
            let r = u32::try_from(v.value).ok();
            if r.is_none() {
                d.invalid(
                    "retries",
                    n,
                    "must not be negative",
                    "the number of failed probes in a row that make a replica unhealthy, e.g. 3",
                );
            }
            r
        })
        .filter(|r| *r > 0)
        .unwrap_or(RETRIES);
    let [interval, timeout, start_period, start_interval] = durations.map(|(_, v)| v);
    let argv = argv.filter(|a| !a.is_empty() && !disabled)?;
    Some(Spanned::new(
        Healthcheck {
            argv,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        },
        node.span,
    ))
}

/// The probe's argv: `[CMD, args...]`, `[CMD-SHELL, command]` or a string (a shell command);
/// `[NONE]` (disabled) is empty.
fn test(d: &mut Decoder, node: &Node) -> Option<Vec<String>> {
    let hint = "write [\"CMD\", \"program\", \"arg\"], [\"CMD-SHELL\", \"command\"], a command string, or [\"NONE\"]";
    let words: Vec<String> = match &node.value {
        Value::Scalar { .. } => {
            let s = d.string(node, "test")?;
            return Some(shell(s.value));
        }
        Value::Seq(_) => d
            .strings(Some(node), "test")
            .into_iter()
            .map(|s| s.value)
            .collect(),
        _ => {
            d.wrong_type("test", "a string or a list of strings", node);
            return None;
        }
    };
    match words.split_first() {
        None => Some(Vec::new()),
        Some((kind, rest)) => match kind.as_str() {
            "NONE" => Some(Vec::new()),
            "CMD" if !rest.is_empty() => Some(rest.to_vec()),
            "CMD-SHELL" if !rest.is_empty() => Some(shell(rest.join(" "))),
            "CMD" | "CMD-SHELL" => {
                d.diags.push(crate::diag::ConfigError::InvalidValue {
                    what: "test".into(),
                    value: kind.clone(),
                    reason: format!("{kind} without a command"),
                    hint: hint.into(),
                    at: node.span,
                });
                None
            }
            other => {
                d.diags.push(crate::diag::ConfigError::InvalidValue {
                    what: "test".into(),
                    value: words.join(" "),
                    reason: format!("starts with `{other}`, not CMD, CMD-SHELL or NONE"),
                    hint: hint.into(),
                    at: node.span,
                });
                None
            }
        },
    }
}

fn shell(command: String) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), command]
}

fn duration_node(d: &mut Decoder, node: &Node, key: &str) -> Option<Duration> {
    let s = d.string(node, key)?;
    match parse_duration(&s.value) {
        Ok(v) => Some(v),
        Err(reason) => {
            d.invalid(key, node, reason.to_string(), DURATION_HINT);
            None
        }
    }
}

/// `depends_on` as a list of names (each `service_started`, required) or a mapping of names to
/// `{condition, required, restart}`.
pub(super) fn depends_on(d: &mut Decoder, node: Option<&Node>) -> Vec<Dependency> {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Vec::new();
    };
    let Value::Map(entries) = &node.value else {
        return d
            .strings(Some(node), "depends_on")
            .into_iter()
            .map(|s| Dependency {
                condition: Spanned::new(Condition::ServiceStarted, s.span),
                service: s,
                required: true,
                restart: false,
            })
            .collect();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let service = Spanned::new(k.as_str().unwrap_or_default().to_string(), k.span);
        let mut dep = Dependency {
            condition: Spanned::new(Condition::ServiceStarted, k.span),
            service,
            required: true,
            restart: false,
        };
        if v.as_map().is_none() && !v.is_null() {
            d.wrong_type(&dep.service.value, "a mapping with condition", v);
        }
        if let Some(c) = d.opt_string(v, "condition") {
            match condition(&c.value) {
                Some(cond) => dep.condition = Spanned::new(cond, c.span),
                None => d.diags.push(crate::diag::ConfigError::InvalidValue {
                    what: "condition".into(),
                    value: c.value.clone(),
                    reason: "unknown condition".into(),
                    hint: "use service_started, service_healthy or service_completed_successfully"
                        .into(),
                    at: c.span,
                }),
            }
        }
        dep.required = d.opt_bool(v, "required").is_none_or(|b| b.value);
        dep.restart = d.opt_bool(v, "restart").is_some_and(|b| b.value);
        out.push(dep);
    }
    out
}

fn condition(s: &str) -> Option<Condition> {
    [
        Condition::ServiceStarted,
        Condition::ServiceHealthy,
        Condition::ServiceCompletedSuccessfully,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> crate::load::Loaded {
        super::super::load_for_test(yaml, &[])
    }

    #[test]
    fn healthcheck_forms_and_defaults() {
        let loaded = load(
            "services:\n  a:\n    healthcheck:\n      test: [CMD, ping, -c1, db]\n      \
             interval: 2s\n      timeout: 1500ms\n      retries: 5\n      start_period: 1m\n  \
             b:\n    healthcheck: {test: \"curl -f localhost\", interval: \"0s\", retries: 0}\n  \
             c:\n    healthcheck: {test: [CMD-SHELL, \"exit 1\"], start_interval: 100ms}\n  \
             d:\n    healthcheck: {test: [NONE]}\n  \
             e:\n    healthcheck: {test: [CMD, \"true\"], disable: true}\n  \
             f:\n    healthcheck: {interval: 5s}\n",
        );
        assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags);
        let hc = |s: &str| {
            loaded.project.services[s]
                .healthcheck
                .as_ref()
                .map(|h| h.value.clone())
        };
        let a = hc("a").unwrap();
        assert_eq!(a.argv, ["ping", "-c1", "db"]);
        assert_eq!(a.interval, Duration::from_secs(2));
        assert_eq!(a.timeout, Duration::from_millis(1500));
        assert_eq!(a.retries, 5);
        assert_eq!(a.start_period, Duration::from_secs(60));
        assert_eq!(a.start_interval, START_INTERVAL);
        let b = hc("b").unwrap();
        assert_eq!(b.argv, ["/bin/sh", "-c", "curl -f localhost"]);
        assert_eq!((b.interval, b.timeout, b.retries), (INTERVAL, TIMEOUT, 3));
        let c = hc("c").unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "exit 1"]);
        assert_eq!(c.start_interval, Duration::from_millis(100));
        for off in ["d", "e", "f"] {
            assert_eq!(hc(off), None, "{off}");
        }
    }

    #[test]
    fn depends_on_forms() {
        let loaded = load(
            "services:\n  db: {}\n  init: {}\n  \
             web:\n    depends_on:\n      db: {condition: service_healthy, restart: true}\n      \
             init: {condition: service_completed_successfully, required: false}\n  \
             api:\n    depends_on: [db]\n",
        );
        let deps = |s: &str| {
            loaded.project.services[s]
                .depends_on
                .iter()
                .map(|d| {
                    (
                        d.service.value.clone(),
                        d.condition.value,
                        d.required,
                        d.restart,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            deps("web"),
            [
                ("db".into(), Condition::ServiceHealthy, true, true),
                (
                    "init".into(),
                    Condition::ServiceCompletedSuccessfully,
                    false,
                    false
                )
            ]
        );
        assert_eq!(
            deps("api"),
            [("db".into(), Condition::ServiceStarted, true, false)]
        );
    }

    #[test]
    fn bad_values_are_diagnosed_where_written() {
        let loaded = load(
            "services:\n  db: {}\n  a:\n    healthcheck: {test: [CMD], interval: 10}\n    \
             depends_on: {db: {condition: service_ready}}\n  \
             b:\n    healthcheck: {test: [RUN, x], timeout: 5 parsecs, retries: -1}\n",
        );
        let what: Vec<String> = loaded
            .diags
            .errors
            .iter()
            .map(|e| match e {
                crate::diag::ConfigError::InvalidValue { what, .. } => what.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        let mut sorted = what.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "condition",
                "interval",
                "retries",
                "test",
                "test",
                "timeout"
            ],
            "{what:?}"
        );
    }

    #[test]
    fn durations_as_go_reads_them() {
        let ms = |n| Duration::from_millis(n);
        for (text, want) in [
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("500ms", ms(500)),
            ("1.5s", ms(1_500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("2us", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "10", "5x", "s", "-1s", "1.2.3s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }
}
