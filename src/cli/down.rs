//! `netcompose down`: remove every object of the project, found by its marks in the kernel
//! (the state file helps but is not needed), and nothing else.

use super::context::state_root;
use super::live::{lock, open_project, require_root};
use super::up::{progress_printer, report};
use super::Global;
use crate::apply;
use crate::load::LoadError;
use crate::pipeline::{checked_project, Failure};
use crate::plan;
use crate::state;
use miette::IntoDiagnostic;
use std::process::ExitCode;

pub fn run(global: &Global) -> miette::Result<ExitCode> {
    require_root("down")?;
    let project = project_name(global)?;
    let _lock = lock(&project)?;
    // The daemon's processes live in the namespaces: stop them before the namespaces go.
    super::daemon::before_down(&project)?;
    let (rt, k, prior) = open_project(&project)?;
    let root = state_root();
    let observed = rt
        .block_on(crate::observe::live::observe(&k, &prior.resources, &[]))
        .into_diagnostic()?;
    let changes = plan::diff(&observed, &[]);
    let outcome = rt.block_on(apply::apply(
        &k,
        &observed,
        &[],
        &changes,
        &progress_printer(),
    ));
    match outcome {
        Ok(o) => {
            state::remove(&root, &project).into_diagnostic()?;
            println!(
                "Removed project {project} in {} ms: {} objects destroyed.",
                o.elapsed.as_millis(),
                o.deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => report(errors),
    }
}

/// The project's name from the file, or from -p alone when the file is gone.
fn project_name(global: &Global) -> miette::Result<String> {
    match checked_project(&global.load_options()) {
        Ok(c) => Ok(c.project.name),
        Err(Failure::Load(LoadError::NoFile { .. })) if global.project_name.is_some() => {
            Ok(global.project_name.clone().unwrap_or_default())
        }
        Err(_) if global.project_name.is_some() => {
            Ok(global.project_name.clone().unwrap_or_default())
        }
        Err(_) => super::checked(global).map(|c| c.project.name),
    }
}
