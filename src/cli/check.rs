//! `netcompose check`: run the file's `x-checks` as real probes and compare with what each
//! expects; exit 1 if any check fails.

use super::reconcile::planning;
use super::reconcile::require_root;
use super::Global;
use crate::check::probe::{self, Outcome};
use crate::check::{probes, Probe};
use crate::kernel::netns::NetnsDir;
use crate::spec::Expect;
use miette::IntoDiagnostic;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sudo netcompose check\n  sudo netcompose check --json")]
pub struct CheckArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    probe: Probe,
    outcome: Outcome,
    detail: String,
    passed: bool,
}

pub fn run(global: &Global, args: &CheckArgs) -> miette::Result<ExitCode> {
    require_root("check")?;
    let p = planning(global, None)?;
    let list = probes(&p.checked.project, &p.plan.desired);
    if list.is_empty() {
        println!("No x-checks in the file.");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = NetnsDir::system();
    let rows: Vec<Row> = std::thread::scope(|s| {
        let handles: Vec<_> = list
            .into_iter()
            .map(|probe| s.spawn(|| run_one(&dir, probe)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let failed = rows.iter().filter(|r| !r.passed).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).into_diagnostic()?);
    } else {
        print!("{}", table(&rows));
        println!("{} passed, {} failed", rows.len() - failed, failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_one(dir: &NetnsDir, probe: Probe) -> Row {
    let (outcome, detail) = probe::run(dir, &probe);
    let passed = match probe.expect {
        Expect::Reach => outcome.reached(),
        Expect::Blocked => {
            matches!(
                outcome,
                Outcome::Filtered | Outcome::Refused | Outcome::Unreachable
            )
        }
    };
    Row {
        probe,
        outcome,
        detail,
        passed,
    }
}

fn table(rows: &[Row]) -> String {
    let mut lines = vec![["FROM", "TO", "ADDRESS", "PROBE", "EXPECT", "RESULT", ""]
        .map(String::from)
        .to_vec()];
    for r in rows {
        let p = &r.probe;
        let proto = serde_json::to_value(p.protocol)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let probe = p
            .port
            .map_or(proto.clone(), |port| format!("{proto}/{port}"));
        let expect = if p.expect == Expect::Reach {
            "reach"
        } else {
            "blocked"
        };
        let result = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let verdict = if r.passed { "ok" } else { "FAIL" };
        lines.push(vec![
            p.from.clone(),
            p.to.clone(),
            p.address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            probe,
            expect.into(),
            result,
            verdict.into(),
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}
