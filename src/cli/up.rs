//! `netcompose up`: make the machine match the file (or a saved plan), then record the state.

use super::context::{build, context, state_root};
use super::live::{lock, open_project, require_root};
use super::Global;
use crate::apply;
use crate::model::Desired;
use crate::plan::{self, Plan};
use crate::state::{self, State};
use miette::IntoDiagnostic;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose up\n  netcompose plan --out demo.plan && sudo netcompose up --plan demo.plan"
)]
pub struct UpArgs {
    /// Apply a plan saved with `plan --out`; refused if the machine changed since.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

pub fn run(global: &Global, args: &UpArgs) -> miette::Result<ExitCode> {
    require_root("up")?;
    let saved = args.plan.as_ref().map(read_plan).transpose()?;
    let checked = match &saved {
        Some(_) => None,
        None => Some(super::checked(global)?),
    };
    let project = saved.as_ref().map_or_else(
        || {
            checked
                .as_ref()
                .map(|c| c.project.name.clone())
                .unwrap_or_default()
        },
        |p| p.project.clone(),
    );
    let _lock = lock(&project)?;
    let (rt, k, prior) = open_project(&project)?;
    let root = state_root();
    let desired: Desired = match (&saved, &checked) {
        (Some(p), _) => p.desired.clone(),
        (None, Some(c)) => build(c, &context(c, &prior.allocations)?)?,
        (None, None) => return Err(miette::miette!("nothing to apply: no plan and no project")),
    };
    let observed = rt
        .block_on(crate::observe::live::observe(
            &k,
            &prior.resources,
            &desired.resources,
        ))
        .into_diagnostic()?;
    if let Some(p) = &saved {
        if plan::fingerprint(&observed) != p.fingerprint {
            return Err(miette::miette!(
                help = "make a new plan with `netcompose plan --out`",
                "the machine changed since the plan was made; nothing was applied"
            ));
        }
    }
    for d in plan::drift(&prior.resources, &observed) {
        eprintln!("drift: {} {}", d.address, d.reason.unwrap_or_default());
    }
    let changes = plan::diff(&observed, &desired.resources);
    let save = |resources: Vec<crate::model::Resource>| {
        state::save(
            &root,
            &State {
                format_version: state::FORMAT_VERSION,
                project: project.clone(),
                allocations: desired.allocations.clone(),
                resources,
            },
        )
        .into_diagnostic()
    };
    if changes.is_empty() {
        save(desired.resources.clone())?;
        println!("No changes.");
        // The daemon (DNS, x-run) is not in the kernel diff: start it if it died, update it.
        super::daemon::after_up(global, checked.as_ref(), &desired)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Allocations first: an interrupted run keeps its addresses on the next try.
    save(observed.clone())?;
    let s = plan::summarize(&changes);
    eprintln!(
        "Applying: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    );
    let outcome = rt.block_on(apply::apply(
        &k,
        &observed,
        &desired.resources,
        &changes,
        &progress_printer(),
    ));
    match outcome {
        Ok(o) => {
            save(desired.resources.clone())?;
            println!(
                "Applied in {} ms: {} created, {} changed, {} destroyed.",
                o.elapsed.as_millis(),
                o.created,
                o.updated,
                o.deleted
            );
            super::daemon::after_up(global, checked.as_ref(), &desired)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => report(errors),
    }
}

fn read_plan(path: &PathBuf) -> miette::Result<Plan> {
    let text = std::fs::read_to_string(path).into_diagnostic()?;
    serde_json::from_str(&text)
        .map_err(|e| miette::miette!("{} is not a netcompose plan: {e}", path.display()))
}

/// A line per resource on a terminal; nothing otherwise (the summary line says it all).
pub fn progress_printer() -> impl Fn(&str, &str, Duration) + Sync {
    let verbose = std::io::stderr().is_terminal();
    move |symbol: &str, address: &str, took: Duration| {
        if verbose {
            eprintln!("  {symbol} {address} ({} ms)", took.as_millis());
        }
    }
}

pub fn report(errors: Vec<apply::ApplyError>) -> miette::Result<ExitCode> {
    for e in &errors {
        eprintln!("error: {e}");
    }
    Err(miette::miette!(
        help = "run the command again: it picks up where this one stopped",
        "{} operation(s) failed",
        errors.len()
    ))
}
