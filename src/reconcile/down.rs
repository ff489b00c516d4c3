//! `down`: remove every object of the project, found by its marks in the kernel (the stored
//! state helps but is not needed), and nothing else; then forget the project.

use super::session::Session;
use super::timing::Stages;
use super::{daemon, lock, Applied, Events, ReconcileError};
use crate::apply::Outcome;
use crate::model::Desired;
use crate::observe::live::Depth;
use crate::plan::{self, Plan};
use crate::project_name::ProjectName;
use crate::state::Store;

pub type DownOutcome = Outcome;

pub fn down(
    store: &dyn Store,
    project: &ProjectName,
    events: &dyn Events,
) -> Result<DownOutcome, ReconcileError> {
    let stages = Stages::from_env("down");
    let lock = lock(store, project, events)?;
    // The namespaces are read while the daemon stops (it does not change what they hold).
    let session = Session::open(project)?;
    session.read_ahead(Depth::Outline);
    // The daemon's processes live in the namespaces: they are stopped before the namespaces
    // go. The daemon's own exit goes on meanwhile; until it is done, its sockets keep the
    // deleted namespaces alive, which the apply waits for anyway.
    let stopping = daemon::before_down(project)?;
    stages.stage("session and daemon");
    let prior = store.load(project)?.unwrap_or_default();
    stages.stage("state read");
    // Everything inside a namespace goes with it: its table, files and routes are not read.
    let observed = session.observe_outline(&prior.resources)?;
    stages.stage("observe");
    let changes = plan::diff_to_apply(&observed, &[]);
    let applied = session.apply(&observed, &[], &changes, &|step| {
        super::report_step(events, step)
    });
    stages.stage("apply");
    daemon::after_down(stopping, events)?;
    let outcome = applied.map_err(ReconcileError::Apply)?;
    stages.stage("daemon");
    store.remove(&lock)?;
    stages.stage("state remove");
    events.applied(&Applied::Down {
        project: project.clone(),
        outcome,
    });
    Ok(outcome)
}

/// What `down` would destroy (`down --dry-run`): the project's objects, read back from the
/// kernel when `live`, else as the store records them; nothing is locked or changed.
pub fn down_plan(
    store: &dyn Store,
    project: &ProjectName,
    live: bool,
    events: &dyn Events,
) -> Result<Plan, ReconcileError> {
    let current = super::resources(store, project, live, events)?;
    let nothing = Desired {
        project: project.to_string(),
        resources: Vec::new(),
        allocations: Default::default(),
    };
    Ok(Plan::new(
        nothing,
        &current,
        if live { "live" } else { "state" },
    ))
}
