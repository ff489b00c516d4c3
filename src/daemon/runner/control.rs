//! `netcompose stop|start|restart`: the runner's side. A stopped process is *held*: its
//! restart policy does not bring it back, nor does a reload with a changed definition (the new
//! definition is kept for its next start); `start`, `restart`, or the reload of an `up` (as
//! `docker compose up` starts stopped containers) release it.

use super::{grace, terminate, Runner, State, BACKOFF_MIN, EVENT};
use crate::daemon::processes::Action;
use std::time::Duration;

impl Runner {
    /// The processes of `services` (all when empty), by name.
    pub fn select(&self, services: &[String]) -> Vec<String> {
        let mut names: Vec<String> = self
            .procs
            .values()
            .filter(|p| services.is_empty() || services.contains(&p.def.service))
            .map(|p| p.def.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Stop, start or restart `names`; returns what could not be started.
    pub fn control(&mut self, action: Action, names: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        for name in names {
            match action {
                Action::Stop => self.hold(name),
                Action::Start => errors.extend(self.release(name, false)),
                Action::Restart => errors.extend(self.release(name, true)),
            }
        }
        errors
    }

    /// `up`: start again whatever `stop` held.
    pub fn release_all(&mut self) -> Vec<String> {
        let held: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, p)| p.held)
            .map(|(n, _)| n.clone())
            .collect();
        held.iter().filter_map(|n| self.release(n, false)).collect()
    }

    /// Whether one of `names` is still on its way out.
    pub fn stopping(&self, names: &[String]) -> bool {
        names.iter().any(|n| {
            self.procs
                .get(n)
                .is_some_and(|p| matches!(p.state, State::Stopping { .. }))
        })
    }

    /// The longest grace period of the processes: how long a stop of all of them may take.
    pub fn max_grace(&self) -> Duration {
        self.procs
            .values()
            .map(|p| grace(&p.def))
            .max()
            .unwrap_or(super::GRACE)
    }

    fn hold(&mut self, name: &str) {
        let Some(p) = self.procs.get_mut(name) else {
            return;
        };
        p.held = true;
        match p.state.clone() {
            State::Running { pid } => {
                p.state = State::Stopping { pid, next: None };
                self.log.line(name, EVENT, "stopping: netcompose stop");
                terminate(&p.def, pid, &p.terminated, &self.events, name);
            }
            // The start it was waiting for will not come (RestartDue wants State::Waiting, and
            // only a Pending process waits for its dependencies).
            State::Waiting { .. } | State::Pending { .. } | State::Blocked { .. } => {
                p.state = State::Exited {
                    status: "stopped".into(),
                }
            }
            State::Stopping { pid, .. } => p.state = State::Stopping { pid, next: None },
            State::Exited { .. } | State::Failed { .. } => {}
        }
    }

    /// Let `name` run again: start it if it is not running; with `restart`, stop a running
    /// one first. Returns why it could not start.
    fn release(&mut self, name: &str, restart: bool) -> Option<String> {
        let p = self.procs.get_mut(name)?;
        p.held = false;
        match p.state.clone() {
            State::Running { pid } if restart => {
                p.state = State::Stopping {
                    pid,
                    next: Some(Box::new(p.def.clone())),
                };
                self.log.line(name, EVENT, "restarting: netcompose restart");
                terminate(&p.def, pid, &p.terminated, &self.events, name);
                None
            }
            State::Running { .. } | State::Pending { .. } => None,
            // Its dependencies are asked again, as a new `up` would.
            State::Blocked { .. } => {
                p.state = State::Pending {
                    reason: "not started yet".into(),
                };
                self.advance().into_iter().next()
            }
            State::Stopping { pid, next } => {
                let def = next.unwrap_or_else(|| Box::new(p.def.clone()));
                p.state = State::Stopping {
                    pid,
                    next: Some(def),
                };
                None
            }
            State::Waiting { .. } | State::Exited { .. } | State::Failed { .. } => {
                p.restarts = 0;
                p.backoff = BACKOFF_MIN;
                p.token += 1;
                self.start(name).err()
            }
        }
    }
}
