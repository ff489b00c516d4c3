//! Shared plumbing of the commands that touch the kernel: the root check, the async runtime,
//! the project lock, and observing a project's live objects.

use crate::kernel::Kernel;
use crate::model::Resource;
use crate::state;
use miette::IntoDiagnostic;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Commands that change the kernel say plainly that they need root.
pub fn require_root(command: &str) -> miette::Result<()> {
    if is_root() {
        return Ok(());
    }
    Err(miette::miette!(
        help = "run it with sudo; `netcompose plan` shows what it would do without root",
        "`netcompose {command}` needs root: it creates network namespaces, links and firewall rules"
    ))
}

pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .into_diagnostic()
}

/// Hold the project's lock; wait (saying so) when another netcompose holds it.
pub fn lock(project: &str) -> miette::Result<state::Lock> {
    let root = super::context::state_root();
    match state::lock(&root, project, false) {
        Ok(l) => Ok(l),
        Err(state::StateError::Locked { .. }) => {
            eprintln!("Waiting for another netcompose working on project {project}...");
            state::lock(&root, project, true).into_diagnostic()
        }
        Err(e) => Err(e).into_diagnostic(),
    }
}

/// What `up` and `down` work with: a runtime, the kernel handle of the project, and its state
/// (empty when there is none).
pub fn open_project(
    project: &str,
) -> miette::Result<(tokio::runtime::Runtime, Kernel, state::State)> {
    let rt = runtime()?;
    let k = Kernel::open(project, rt.handle().clone()).into_diagnostic()?;
    let prior = state::load(&super::context::state_root(), project)
        .into_diagnostic()?
        .unwrap_or_default();
    Ok((rt, k, prior))
}

/// The project's live objects, read with a short-lived runtime.
pub fn observe_project(
    project: &str,
    state: &[Resource],
    desired: &[Resource],
) -> miette::Result<Vec<Resource>> {
    let rt = runtime()?;
    let k = Kernel::open(project, rt.handle().clone()).into_diagnostic()?;
    rt.block_on(crate::observe::live::observe(&k, state, desired))
        .into_diagnostic()
}
