//! The gates of the runner's processes: `depends_on` conditions that hold a start back
//! ([`crate::daemon::order`] decides), and healthchecks run on a schedule for each run
//! ([`crate::daemon::health`] keeps the verdict).

use super::{spawn, Event, Proc, Runner, State, EVENT};
use crate::daemon::health::{self, Outcome};
use crate::daemon::order::{self, Phase, Seen, Verdict};
use crate::kernel::NetnsDir;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl Runner {
    /// Start the processes whose dependencies now hold, and give up on those whose
    /// dependencies failed; again until nothing changes (a start can let another start).
    pub(super) fn advance(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while !self.shutting_down {
            let mut pending: Vec<String> = self
                .procs
                .iter()
                .filter(|(_, p)| matches!(p.state, State::Pending { .. }))
                .map(|(n, _)| n.clone())
                .collect();
            pending.sort();
            let mut changed = false;
            for name in pending {
                match self.dependencies(&name) {
                    Verdict::Holds => {
                        changed = true;
                        if let Err(e) = self.start(&name) {
                            errors.push(e);
                        }
                    }
                    Verdict::Waits(reason) => {
                        let Some(p) = self.procs.get_mut(&name) else {
                            continue;
                        };
                        if p.state
                            != (State::Pending {
                                reason: reason.clone(),
                            })
                        {
                            self.log.line(&name, EVENT, &reason);
                            p.state = State::Pending { reason };
                        }
                    }
                    Verdict::Fails(reason) => {
                        changed = true;
                        self.log
                            .line(&name, EVENT, &format!("not started: {reason}"));
                        if let Some(p) = self.procs.get_mut(&name) {
                            p.state = State::Blocked { reason };
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        errors
    }

    /// What the `depends_on` conditions of `name` say now; a condition that is not required
    /// and fails is logged and counts as holding.
    fn dependencies(&self, name: &str) -> Verdict {
        let Some(p) = self.procs.get(name) else {
            return Verdict::Holds;
        };
        let seen: Vec<Seen> = self
            .procs
            .values()
            .filter(|d| !d.removed)
            .map(|d| Seen {
                name: &d.def.name,
                service: &d.def.service,
                phase: phase(d),
            })
            .collect();
        let (verdict, notes) = order::decide(&p.def.depends_on, &seen);
        for note in notes {
            self.log.line(name, EVENT, &note);
        }
        verdict
    }

    /// Start a healthcheck of `name`'s current run as the process itself was started.
    pub(super) fn probe(&mut self, name: &str, token: u64) {
        let Some(p) = self.procs.get(name) else {
            return;
        };
        let (State::Running { .. }, Some(h)) = (&p.state, &p.health) else {
            return;
        };
        if p.run_token != token {
            return;
        }
        let mut def = p.def.clone();
        def.argv = h.probe().argv.clone();
        let timeout = h.timeout();
        let dir = NetnsDir::new(&self.netns_dir);
        let child = spawn(
            &def,
            &dir,
            &self.etc_netns,
            &self.working_dir,
            p.leaf.as_ref(),
        );
        let tx = self.events.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let outcome = match child {
                Ok(child) => health::run_probe(child, timeout).await,
                Err(error) => Outcome::NotRun { error },
            };
            let _ = tx.send(Event::ProbeDone {
                name,
                token,
                outcome,
            });
        });
    }

    /// Record a healthcheck's outcome and schedule the next one.
    pub(super) fn probed(&mut self, name: &str, token: u64, outcome: &Outcome) {
        let Some(p) = self.procs.get_mut(name) else {
            return;
        };
        let (State::Running { .. }, Some(h)) = (&p.state, p.health.as_mut()) else {
            return;
        };
        if p.run_token != token {
            return;
        }
        let now = Instant::now();
        if let Some(health) = h.record(outcome, now) {
            let line = match health {
                health::Health::Healthy => "health: healthy".to_string(),
                other => format!(
                    "health: {} (last probe: {})",
                    other.as_str(),
                    h.status().last
                ),
            };
            self.log.line(name, EVENT, &line);
        }
        probe_after(&self.events, name, token, h.next_delay(now));
    }
}

/// Where `p` is, as its dependents see it.
pub(super) fn phase(p: &Proc) -> Phase {
    match &p.state {
        State::Running { .. } => Phase::Running {
            health: p.health.as_ref().map(|h| h.status().status),
        },
        State::Stopping { .. } => Phase::Stopping,
        State::Waiting { .. } => Phase::Restarting,
        State::Exited { .. } => Phase::Exited {
            success: p.exit_code == Some(0),
        },
        State::Failed { .. } => Phase::Failed,
        State::Pending { .. } => Phase::Pending,
        State::Blocked { .. } => Phase::Blocked,
    }
}

/// A [`Event::ProbeDue`] for run `token` of `name` after `delay`.
pub(super) fn probe_after(
    events: &mpsc::UnboundedSender<Event>,
    name: &str,
    token: u64,
    delay: Duration,
) {
    let tx = events.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(Event::ProbeDue { name, token });
    });
}
