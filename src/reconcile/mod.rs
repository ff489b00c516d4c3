//! The reconciler: load → plan → observe → diff → apply → daemon update, the one sequence
//! behind `plan`, `up`, `up --plan` and `down` (and, later, a per-host agent running it in a
//! loop against a shared store). It reads and writes state only through a [`Store`], reaches
//! the kernel only through `session.rs`, reports progress through [`Events`] and fails with a
//! typed [`ReconcileError`]; it never prints, so any front end can render it.

pub mod agent;
mod daemon;
mod down;
mod drill;
mod planning;
mod projects;
mod saved;
mod session;
mod timing;
mod up;

pub use down::{down, down_plan, DownOutcome};
pub use drill::{set_link, DrillEnd};
pub use planning::{plan, plan_for, plan_on, Baseline, Planning, Purpose};
pub use projects::{projects, ProjectStatus};
pub use up::{read_plan, up, up_on, up_plan, up_with, Observation, UpOutcome};

use crate::apply::{ApplyError, Outcome, Step};
use crate::daemon::DaemonError;
use crate::diag::Diagnostics;
use crate::graph::CycleError;
use crate::kernel::KernelError;
use crate::load::LoadError;
use crate::model::Resource;
use crate::pipeline::{self, Checked, Failure};
use crate::plan::{Change, Summary};
use crate::project_name::{NameError, ProjectName};
use crate::source::Sources;
use crate::state::{Lock, StateError, Store, Wait};
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// Why a reconciliation stopped. Variants carry what a front end needs to explain it.
#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The file (or the allocation it asks for) is invalid: every diagnostic, with the sources
    /// they point into.
    #[error("{} error{} found; nothing was done", .diags.errors.len(), if .diags.errors.len() == 1 { "" } else { "s" })]
    Invalid {
        diags: Box<Diagnostics>,
        sources: Box<Sources>,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    State(#[from] StateError),
    /// A fact of the host that planning needs (routes, nameservers, listening sockets) could
    /// not be read: planning without it could pick a subnet the host already routes.
    #[error(transparent)]
    Host(#[from] crate::observe::host::HostError),
    /// Other projects' states that could not be read: their subnets are unknown, and `up`
    /// does not allocate over a project it cannot see.
    #[error("the state of {} other project{} cannot be read, so the subnets in use are not known; nothing was done", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    OthersUnreadable(Vec<StateError>),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a netcompose plan: {source}")]
    NotAPlan {
        path: String,
        source: serde_json::Error,
    },
    #[error("{name} is neither a netcompose plan nor a state file: {source}")]
    NotAPlanOrState {
        name: String,
        source: serde_json::Error,
    },
    #[error("the plan names project `{plan}` but its {part} is for `{other}`")]
    InconsistentPlan {
        plan: String,
        part: &'static str,
        other: String,
    },
    /// External networks (by name) that do not exist on the host: nothing was built.
    #[error("network {} declared as external, but could not be found", .0.join(", "))]
    ExternalMissing(Vec<String>),
    #[error("the machine changed since the plan was made; nothing was applied")]
    StalePlan,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Graph(#[from] CycleError),
    #[error("{} operation(s) failed", .0.len())]
    Apply(Vec<ApplyError>),
    /// The daemon could not be started or updated.
    #[error(transparent)]
    Daemon(DaemonError),
    /// The daemon could not be stopped.
    #[error(transparent)]
    DaemonStop(DaemonError),
    /// A cluster `up` or `down`: no live node, nodes that did not converge or failed.
    #[error(transparent)]
    Cluster(#[from] agent::ClusterError),
    /// A drill names an attachment the project does not have (or is not up).
    #[error("the project has no link {address}")]
    NoSuchLink { address: String, known: Vec<String> },
}

/// What a run did, as it happens; the front end decides how (and whether) to show it.
pub trait Events: Sync {
    /// Something the user should know that does not stop the run.
    fn warning(&self, message: &str);
    /// Another process holds the project's lock; this run waits for it.
    fn waiting_for_lock(&self, project: &ProjectName);
    /// A live object differs from what the state says was applied.
    fn drift(&self, change: &Change);
    /// About to apply this many changes.
    fn applying(&self, summary: &Summary);
    /// The kernel operations this run does (each then reported by `started` and `progress`).
    /// A front end without live progress need not count them.
    fn operations(&self, _total: usize) {}
    /// One resource's operation began: its symbol (`+`, `~`, `-`) and address.
    fn started(&self, _symbol: &str, _address: &str) {}
    /// One resource done: its symbol (`+`, `~`, `-`), address and time taken.
    fn progress(&self, symbol: &str, address: &str, took: Duration);
    /// The kernel now matches (before the daemon is updated).
    fn applied(&self, applied: &Applied);
    fn daemon(&self, event: &DaemonEvent);
}

/// The kernel side of a run, once it is done.
#[derive(Debug, Clone)]
pub enum Applied {
    NoChanges,
    Up(Outcome),
    Down {
        project: ProjectName,
        outcome: Outcome,
    },
}

/// What happened to the project daemon (DNS resolver, x-run processes).
#[derive(Debug, Clone)]
pub enum DaemonEvent {
    /// Stopped before `down`, or because there is nothing left to serve.
    Stopped { pid: u32, nothing_to_serve: bool },
    /// Started, restarted or updated, with what it serves and what it could not do.
    Serving {
        action: &'static str,
        pid: u32,
        namespaces: usize,
        processes: usize,
        errors: Vec<String>,
    },
    /// The plan carries no daemon configuration (format 1.0): the daemon was left as it is.
    NotUpdated { project: String },
}

/// Drop `value` on a thread of its own. Freeing a project's resources (observed, desired and
/// recorded: three thousand specs with their strings and tables at 200 replicas) took a run
/// 2 ms after its work was done; a CLI run exits without waiting for that thread, and a
/// long-lived caller (the agent) lets it finish.
fn drop_later<T: Send + 'static>(value: T) {
    // If no thread can be spawned, the closure, and the value with it, is dropped here.
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// An apply's step, as the [`Events`] of the run.
fn report_step(events: &dyn Events, step: Step<'_>) {
    match step {
        Step::Planned(total) => events.operations(total),
        Step::Started { symbol, address } => events.started(symbol, address),
        Step::Done {
            symbol,
            address,
            took,
        } => events.progress(symbol, address, took),
    }
}

/// Load and validate, handing warnings to `events`.
fn load(opts: &crate::load::LoadOptions, events: &dyn Events) -> Result<Checked, ReconcileError> {
    match pipeline::checked_on(opts, crate::observe::host::kernel_facts) {
        Ok(c) => {
            for w in &c.warnings {
                events.warning(w);
            }
            Ok(c)
        }
        Err(Failure::Load(e)) => Err(ReconcileError::Load(e)),
        Err(Failure::Invalid { diags, sources }) => Err(ReconcileError::Invalid {
            diags: Box::new(diags),
            sources: Box::new(sources),
        }),
    }
}

/// Hold the project's lock; wait (saying so) when another run holds it.
fn lock(
    store: &dyn Store,
    project: &ProjectName,
    events: &dyn Events,
) -> Result<Lock, ReconcileError> {
    match store.lock(project, Wait::No) {
        Ok(l) => Ok(l),
        Err(StateError::Locked { .. }) => {
            events.waiting_for_lock(project);
            Ok(store.lock(project, Wait::Yes)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The project's resources for display (`ps`): read back from the kernel when `live`, else as
/// the store records them. An unreadable state is a warning: the kernel's marks suffice.
pub fn resources(
    store: &dyn Store,
    project: &ProjectName,
    live: bool,
    events: &dyn Events,
) -> Result<Vec<Resource>, ReconcileError> {
    let prior = match store.load(project) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            events.warning(&e.to_string());
            Default::default()
        }
    };
    if !live {
        return Ok(prior.resources);
    }
    session::Session::open(project)?.observe(&prior.resources, &[])
}

/// The allocations the last `up` recorded (addresses, ephemeral host ports); none before the
/// first `up`.
pub fn allocations(
    store: &dyn Store,
    project: &ProjectName,
) -> Result<crate::ipam::Allocations, ReconcileError> {
    Ok(recorded_allocations(store, project)?.unwrap_or_default())
}

/// The project's allocations when it is up on this machine (its state is recorded), else None.
pub fn recorded_allocations(
    store: &dyn Store,
    project: &ProjectName,
) -> Result<Option<crate::ipam::Allocations>, ReconcileError> {
    Ok(store.load(project)?.map(|s| s.allocations))
}

/// The replica counts the `up --scale` that built the project set (empty without one).
pub fn recorded_scale(
    store: &dyn Store,
    project: &ProjectName,
) -> Result<BTreeMap<String, u32>, ReconcileError> {
    Ok(store.load(project)?.map(|s| s.scale).unwrap_or_default())
}

#[cfg(test)]
mod converge_tests;
#[cfg(test)]
mod encrypted_tests;
#[cfg(test)]
mod overlay_tests;
#[cfg(test)]
mod qos_tests;
#[cfg(test)]
mod tests;
