//! `netcompose down`: remove every object of the project, found by its marks in the kernel
//! (the state file helps but is not needed), and nothing else.

use super::reconcile::{is_root, report, require_root, store, Terminal};
use super::Global;
use crate::project_name::ProjectName;
use crate::reconcile;
use std::process::ExitCode;
use std::time::Duration;

/// With an etcd store: how long `down` waits for every node to take its share down.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(global: &Global) -> miette::Result<ExitCode> {
    if global.dry_run {
        let project = project_name(global)?;
        let plan = reconcile::down_plan(&store(), &project, is_root(), &Terminal::new())
            .map_err(report)?;
        super::plan::print(&plan);
        eprintln!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some((store, _)) = super::reconcile::cluster() {
        let project = project_name(global)?;
        let outcome = reconcile::agent::down_cluster(
            store,
            &project,
            CLUSTER_TIMEOUT,
            &super::reconcile::NodeLines,
        );
        outcome.map_err(report)?;
        println!("Removed project {project} from every node.");
        return Ok(ExitCode::SUCCESS);
    }
    require_root("down")?;
    let project = project_name(global)?;
    // The events (and their live status line) end with this statement, before an error is
    // printed.
    let outcome = reconcile::down(&store(), &project, &Terminal::new());
    outcome.map_err(report)?;
    Ok(ExitCode::SUCCESS)
}

/// The project's name from -p (so that `down` works when the file is gone), else from the
/// file.
fn project_name(global: &Global) -> miette::Result<ProjectName> {
    if let Some(name) = global.named_project()? {
        return Ok(name);
    }
    let checked = super::checked(global)?;
    Ok(ProjectName::new(checked.project.name)?)
}
