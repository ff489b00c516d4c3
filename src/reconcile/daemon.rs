//! The project daemon's part of a run: before `up` deletes namespaces, make it let go of them;
//! after the kernel matches, hand the daemon its new configuration (starting it if it died);
//! before `down`, stop its processes, and after it, make sure the daemon is gone.

use super::{DaemonEvent, Events, ReconcileError};
use crate::daemon::{self, DaemonConfig};
use crate::model::Resource;
use crate::plan::Change;
use crate::project_name::ProjectName;

/// Serve `cfg` (or stop the daemon when there is nothing to serve); without a configuration
/// (a plan of format 1.0) leave the daemon as it is. When the kernel did not change
/// (`kernel_changed` false), a daemon that already serves `cfg` is left alone: no namespace
/// was made again, so its sockets are still the right ones.
pub(super) fn after_up(
    project: &ProjectName,
    cfg: Option<&DaemonConfig>,
    kernel_changed: bool,
    events: &dyn Events,
) -> Result<(), ReconcileError> {
    let Some(cfg) = cfg else {
        events.daemon(&DaemonEvent::NotUpdated {
            project: project.to_string(),
        });
        return Ok(());
    };
    if cfg.is_empty() {
        if let Some(pid) = daemon::stop(project).map_err(ReconcileError::DaemonStop)? {
            events.daemon(&DaemonEvent::Stopped {
                pid,
                nothing_to_serve: true,
            });
        }
        return Ok(());
    }
    let done = match daemon::current(cfg).filter(|_| !kernel_changed) {
        Some(done) => done,
        None => daemon::ensure(cfg).map_err(ReconcileError::Daemon)?,
    };
    events.daemon(&DaemonEvent::Serving {
        action: done.action,
        pid: done.pid,
        namespaces: done.reply.serving,
        processes: done.reply.processes.len(),
        errors: done.reply.errors,
    });
    Ok(())
}

/// Before `up` deletes namespaces (a scale-down, a replica made again): a running daemon lets
/// go of them, or its sockets and processes inside would keep each one, and the host end of
/// its veth, alive until the apply stops waiting for the kernel (two seconds) and deletes the
/// link itself. A daemon that does not answer only costs that wait: a warning.
pub(super) fn before_apply(
    project: &ProjectName,
    observed: &[Resource],
    changes: &[Change],
    events: &dyn Events,
) {
    let doomed: Vec<String> = crate::apply::namespaces_deleted(observed, changes)
        .into_iter()
        .map(str::to_string)
        .collect();
    if let Err(e) = daemon::release(project, doomed) {
        events.warning(&format!(
            "{e}: the namespaces it serves are deleted without it"
        ));
    }
}

/// Before `down` deletes the namespaces: the daemon's processes live in them, so they are
/// stopped now; the daemon's own exit is waited for by [`after_down`].
pub(super) fn before_down(project: &ProjectName) -> Result<daemon::StopWait, ReconcileError> {
    daemon::stop_then_wait(project).map_err(ReconcileError::DaemonStop)
}

/// Once `down` has deleted what it could: no process of the project is left.
pub(super) fn after_down(
    stopping: daemon::StopWait,
    events: &dyn Events,
) -> Result<(), ReconcileError> {
    if let Some(pid) = stopping.wait().map_err(ReconcileError::DaemonStop)? {
        events.daemon(&DaemonEvent::Stopped {
            pid,
            nothing_to_serve: false,
        });
    }
    Ok(())
}
