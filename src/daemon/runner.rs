//! `x-run`: a service's command, once per replica, inside the replica's namespace.
//!
//! Each process is started as `netcompose exec` would run it: in the replica's network
//! namespace, in a mount namespace of its own where /etc/netns/<ns>/* is bind-mounted over
//! /etc/* and /sys is the namespace's. All of that happens in the child between fork and exec
//! (`pre_exec`), so no thread of the daemon ever changes namespace. The child first moves into
//! a cgroup leaf of its own (`netcompose/<project>/x-run/<name>.<k>`, see [`super::contain`]),
//! so that it and everything it forks, whatever they do with sessions and groups, can be
//! killed at once; it leads a process group of its own (SIGTERM goes to the whole group: a
//! shell and what it started) and has PR_SET_PDEATHSIG=SIGKILL, so if the daemon dies (even by
//! SIGKILL) its processes die with it; what they forked is left to the kill of the project's
//! cgroups by the next `up` or `down`, so nothing runs twice. Children are forked from the
//! daemon's main thread, which lives as long as the daemon: the death signal follows the thread
//! that forked. When a process ends, what is left in its leaf is killed and the leaf removed
//! before the runner hears of the end, so a restarted process never meets its predecessor.
//!
//! stdout and stderr go line by line to the project log (`web-1 | ...`). `restart:` is
//! honoured with Docker's back-off (100 ms doubling to 10 s, reset after 10 s of running);
//! `unless-stopped` behaves as `always`, except after `netcompose stop` ([`control`]). A
//! process whose command, settings or namespace changed is stopped (its `stop_signal`, SIGTERM
//! by default, to its group; SIGKILL after its `stop_grace_period`, [`GRACE`] by default) and
//! the new one started once the old one is gone, so a port is never held twice. With `init:
//! true` the command runs under a reaper ([`super::init`]).
//!
//! A new process waits until its service's `depends_on` conditions hold ([`super::order`]),
//! and is not started at all when one of them fails. A process with a healthcheck is probed
//! as [`super::health`] says; the probe runs exactly as the process does, in its cgroup leaf.

mod control;
mod gates;
mod spawn;

use gates::probe_after;
use spawn::spawn;

use super::health::{HealthStatus, Outcome, Tracker};
use super::logs::{LogSink, EVENT, OUTPUT};
use crate::kernel::cgroup::Cgroup;
use crate::kernel::NetnsDir;
use crate::model::daemon::{DaemonConfig, Process, RestartPolicy};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Between the stop signal and SIGKILL, unless the service sets `stop_grace_period`.
pub const GRACE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long restarts with the minimal back-off again.
const RESET_AFTER: Duration = Duration::from_secs(10);
/// Longest line kept from a process's output.
const MAX_LINE: usize = 16 << 10;

/// What the runner's tasks report to the supervisor loop.
#[derive(Debug)]
pub enum Event {
    Exited {
        name: String,
        pid: i32,
        status: Option<ExitStatus>,
    },
    RestartDue {
        name: String,
        token: u64,
    },
    Kill {
        name: String,
        pid: i32,
    },
    /// Time for the next healthcheck of the run numbered `token`.
    ProbeDue {
        name: String,
        token: u64,
    },
    ProbeDone {
        name: String,
        token: u64,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Running {
        pid: i32,
    },
    /// Asked to stop; `next` starts once it is gone (None: removed, or stopped for good).
    Stopping {
        pid: i32,
        next: Option<Box<Process>>,
    },
    Waiting {
        until: Instant,
    },
    Exited {
        status: String,
    },
    Failed {
        error: String,
    },
    /// Not started yet: a `depends_on` condition does not hold yet.
    Pending {
        reason: String,
    },
    /// Not started: a `depends_on` condition failed.
    Blocked {
        reason: String,
    },
}

struct Proc {
    def: Process,
    ns_ino: Option<u64>,
    state: State,
    restarts: u32,
    started: Instant,
    backoff: Duration,
    token: u64,
    removed: bool,
    /// The cgroup leaf of the current run.
    leaf: Option<Cgroup>,
    /// Whether the current run was sent its stop signal (its group then gets the grace period
    /// too).
    terminated: Arc<AtomicBool>,
    /// Stopped by `netcompose stop`: neither its restart policy nor a reload starts it again,
    /// only `start`, `restart` or `up`.
    held: bool,
    /// The exit status of the last run (None: not exited, or killed by a signal).
    exit_code: Option<i32>,
    /// The health of the current run, when it has a healthcheck.
    health: Option<Tracker>,
    /// Numbers the runs, so that a probe of an earlier run is ignored.
    run_token: u64,
}

/// One process as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcStatus {
    pub name: String,
    pub service: String,
    /// `running`, `stopping`, `restarting`, `exited`, `failed`, `waiting` (for its
    /// dependencies), `blocked` (a dependency failed: not started).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// While running, when it has a healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Once exited by itself: its exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

pub struct Runner {
    procs: HashMap<String, Proc>,
    events: mpsc::UnboundedSender<Event>,
    log: Arc<LogSink>,
    netns_dir: PathBuf,
    etc_netns: PathBuf,
    working_dir: PathBuf,
    shutting_down: bool,
    /// The parent of the processes' cgroup leaves (None: no cgroup v2).
    x_run: Option<Cgroup>,
    /// Numbers the leaves: one per start, never reused.
    starts: u64,
}

impl Runner {
    pub fn new(
        log: Arc<LogSink>,
        events: mpsc::UnboundedSender<Event>,
        x_run: Option<Cgroup>,
    ) -> Runner {
        Runner {
            procs: HashMap::new(),
            events,
            log,
            netns_dir: PathBuf::from(crate::kernel::netns::DEFAULT_DIR),
            etc_netns: PathBuf::from(crate::kernel::ETC_NETNS),
            working_dir: PathBuf::from("/"),
            shutting_down: false,
            x_run,
            starts: 0,
        }
    }

    /// Bring the processes in line with `cfg`. Must run on the daemon's main thread.
    pub fn apply(&mut self, cfg: &DaemonConfig) -> Vec<String> {
        self.netns_dir = cfg.netns_dir.clone();
        self.etc_netns = cfg.etc_netns.clone();
        self.working_dir = cfg.working_dir.clone();
        let mut errors = Vec::new();
        let wanted: HashMap<&str, &Process> =
            cfg.processes.iter().map(|p| (p.name.as_str(), p)).collect();
        let gone: Vec<String> = self
            .procs
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name);
        }
        let mut names: Vec<&&str> = wanted.keys().collect();
        names.sort();
        for name in names {
            let def = wanted[*name];
            let ino = self.ns_ino(def.netns.as_deref());
            match self.procs.get_mut(*name) {
                None => {
                    self.procs.insert(
                        def.name.clone(),
                        Proc {
                            def: def.clone(),
                            ns_ino: ino,
                            state: State::Pending {
                                reason: "not started yet".into(),
                            },
                            restarts: 0,
                            started: Instant::now(),
                            backoff: BACKOFF_MIN,
                            token: 0,
                            removed: false,
                            leaf: None,
                            terminated: Arc::default(),
                            held: false,
                            exit_code: None,
                            health: None,
                            run_token: 0,
                        },
                    );
                }
                Some(p) => {
                    let changed = p.def.argv != def.argv || p.def.netns != def.netns;
                    let moved = ino.is_some() && p.ns_ino != ino;
                    // How it restarts, stops, is probed and waits applies from now on; whatever else it runs with
                    // (user, environment, env_file, ...) takes a new run, as Compose recreates a
                    // container whose configuration changed.
                    p.def.restart = def.restart;
                    p.def.stop_signal = def.stop_signal;
                    p.def.stop_grace_period_ms = def.stop_grace_period_ms;
                    p.def.healthcheck = def.healthcheck.clone();
                    p.def.depends_on = def.depends_on.clone();
                    let reconfigured = p.def != *def;
                    p.removed = false;
                    // Another `up`: a process its dependencies held back gets another chance.
                    if let State::Blocked { .. } = p.state {
                        p.state = State::Pending {
                            reason: "not started yet".into(),
                        };
                    }
                    if !(changed || moved || reconfigured) {
                        continue;
                    }
                    let why = if changed {
                        "its command changed"
                    } else if reconfigured {
                        "its settings changed"
                    } else {
                        "its namespace was made again"
                    };
                    if !p.held {
                        self.log.line(name, EVENT, &format!("restarting: {why}"));
                    }
                    match p.state.clone() {
                        State::Running { pid } => {
                            p.state = State::Stopping {
                                pid,
                                next: Some(Box::new(def.clone())),
                            };
                            terminate(&p.def, pid, &p.terminated, &self.events, name);
                        }
                        State::Stopping { pid, .. } => {
                            p.state = State::Stopping {
                                pid,
                                next: Some(Box::new(def.clone())),
                            };
                        }
                        // Still waiting for its dependencies: it starts as it is now.
                        State::Pending { .. } => p.def = def.clone(),
                        _ => {
                            p.def = def.clone();
                            p.restarts = 0;
                            if p.held {
                                continue;
                            }
                            if let Err(e) = self.start(name) {
                                errors.push(e);
                            }
                        }
                    }
                }
            }
        }
        errors.extend(self.advance());
        errors
    }

    fn ns_ino(&self, ns: Option<&str>) -> Option<u64> {
        let ns = ns?;
        std::fs::metadata(self.netns_dir.join(ns))
            .ok()
            .map(|m| m.ino())
    }

    fn remove(&mut self, name: &str) {
        let Some(p) = self.procs.get_mut(name) else {
            return;
        };
        p.removed = true;
        match p.state {
            State::Running { pid } => {
                p.state = State::Stopping { pid, next: None };
                self.log
                    .line(name, EVENT, "stopping: removed from the project");
                terminate(&p.def, pid, &p.terminated, &self.events, name);
            }
            State::Stopping { pid, .. } => p.state = State::Stopping { pid, next: None },
            _ => {
                self.procs.remove(name);
            }
        }
    }

    /// Start (or start again) `name` from its current definition.
    fn start(&mut self, name: &str) -> Result<(), String> {
        let netns_dir = NetnsDir::new(&self.netns_dir);
        let etc = self.etc_netns.clone();
        let wd = self.working_dir.clone();
        self.starts += 1;
        let leaf = match &self.x_run {
            Some(parent) => Some(parent.child(&format!("{name}.{}", self.starts))),
            None => None,
        };
        let Some(p) = self.procs.get_mut(name) else {
            return Ok(());
        };
        p.ns_ino = p
            .def
            .netns
            .as_deref()
            .and_then(|ns| std::fs::metadata(netns_dir.path(ns)).ok().map(|m| m.ino()));
        let spawned = match leaf {
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(leaf)) => {
                spawn(&p.def, &netns_dir, &etc, &wd, Some(&leaf)).map(|c| (c, Some(leaf)))
            }
            None => spawn(&p.def, &netns_dir, &etc, &wd, None).map(|c| (c, None)),
        };
        match spawned {
            Ok((mut child, leaf)) => {
                let pid = child.id().map_or(0, |id| id as i32);
                p.state = State::Running { pid };
                p.leaf = leaf.clone();
                p.terminated = Arc::default();
                let terminated = p.terminated.clone();
                let grace = grace(&p.def);
                p.started = Instant::now();
                p.exit_code = None;
                p.run_token += 1;
                p.health = p
                    .def
                    .healthcheck
                    .clone()
                    .map(|probe| Tracker::new(probe, p.started));
                if let Some(h) = &p.health {
                    probe_after(&self.events, name, p.run_token, h.next_delay(p.started));
                }
                self.log.line(name, EVENT, &format!("started (pid {pid})"));
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(pump(out, name.to_string(), self.log.clone()));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(pump(err, name.to_string(), self.log.clone()));
                }
                let tx = self.events.clone();
                let n = name.to_string();
                let log = self.log.clone();
                tokio::spawn(async move {
                    let status = child.wait().await.ok();
                    if let Some(leaf) = leaf {
                        // After its stop signal the rest of its group may still be finishing:
                        // the Kill event SIGKILLs the leaf when the grace period is over.
                        let grace = terminated.load(Ordering::SeqCst).then_some(grace);
                        let cleared = tokio::task::spawn_blocking(move || {
                            if let Some(grace) = grace {
                                leaf.wait_empty(grace + Duration::from_secs(1))?;
                            }
                            leaf.kill_all(super::contain::KILL_WAIT)?;
                            leaf.remove()
                        })
                        .await;
                        if let Ok(Err(e)) = cleared {
                            log.line(&n, EVENT, &format!("cannot clear its cgroup: {e}"));
                        }
                    }
                    let _ = tx.send(Event::Exited {
                        name: n,
                        pid,
                        status,
                    });
                });
                Ok(())
            }
            Err(e) => {
                let msg = format!("{name}: cannot start {:?}: {e}", p.def.argv);
                self.log.line(name, EVENT, &format!("cannot start: {e}"));
                p.state = State::Failed { error: e };
                Err(msg)
            }
        }
    }

    /// Handle what a task reported.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Kill { name, pid } => {
                let still = self
                    .procs
                    .get(&name)
                    .is_some_and(|p| matches!(p.state, State::Stopping { pid: q, .. } if q == pid));
                if still {
                    self.log.line(&name, EVENT, "did not stop in time: SIGKILL");
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    self.kill_leaf(&name);
                }
            }
            Event::RestartDue { name, token } => {
                let due = self
                    .procs
                    .get(&name)
                    .is_some_and(|p| p.token == token && matches!(p.state, State::Waiting { .. }));
                if due && !self.shutting_down {
                    if let Some(p) = self.procs.get_mut(&name) {
                        p.restarts += 1;
                    }
                    let _ = self.start(&name);
                }
            }
            Event::Exited { name, pid, status } => self.exited(&name, pid, status),
            Event::ProbeDue { name, token } => self.probe(&name, token),
            Event::ProbeDone {
                name,
                token,
                outcome,
            } => self.probed(&name, token, &outcome),
        }
        let _ = self.advance();
    }

    fn exited(&mut self, name: &str, pid: i32, status: Option<ExitStatus>) {
        let Some(p) = self.procs.get_mut(name) else {
            return;
        };
        let described = describe(status);
        // Whatever is left of its group goes too.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        match p.state.clone() {
            State::Stopping { pid: q, next } if q == pid => {
                self.log
                    .line(name, EVENT, &format!("stopped ({described})"));
                match next {
                    Some(def) if !self.shutting_down => {
                        p.def = *def;
                        p.restarts = 0;
                        p.backoff = BACKOFF_MIN;
                        if p.held {
                            p.state = State::Exited { status: described };
                        } else {
                            let _ = self.start(name);
                        }
                    }
                    _ if p.removed => {
                        self.procs.remove(name);
                    }
                    _ => p.state = State::Exited { status: described },
                }
            }
            State::Running { pid: q } if q == pid => {
                let success = status.is_some_and(|s| s.success());
                p.exit_code = status.and_then(|s| s.code());
                let ran = p.started.elapsed();
                if ran >= RESET_AFTER {
                    p.backoff = BACKOFF_MIN;
                }
                if !self.shutting_down && p.def.restart.restarts(success, p.restarts) {
                    let delay = p.backoff;
                    p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
                    p.token += 1;
                    p.state = State::Waiting {
                        until: Instant::now() + delay,
                    };
                    self.log.line(
                        name,
                        EVENT,
                        &format!(
                            "{described}; restarting in {} ms ({})",
                            delay.as_millis(),
                            policy_name(p.def.restart)
                        ),
                    );
                    let tx = self.events.clone();
                    let (n, token) = (name.to_string(), p.token);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Event::RestartDue { name: n, token });
                    });
                } else {
                    self.log.line(name, EVENT, &described);
                    p.state = State::Exited { status: described };
                }
            }
            _ => {}
        }
    }

    /// Whether some process is still running or stopping.
    pub fn busy(&self) -> bool {
        self.procs
            .values()
            .any(|p| matches!(p.state, State::Running { .. } | State::Stopping { .. }))
    }

    /// Stop everything (each its stop signal now, SIGKILL after its grace period) and restart
    /// nothing.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in names {
            let Some(p) = self.procs.get_mut(&name) else {
                continue;
            };
            match p.state {
                State::Running { pid } => {
                    p.state = State::Stopping { pid, next: None };
                    self.log.line(&name, EVENT, "stopping");
                    terminate(&p.def, pid, &p.terminated, &self.events, &name);
                }
                State::Waiting { .. } | State::Pending { .. } => {
                    p.state = State::Exited {
                        status: "stopped".into(),
                    }
                }
                _ => {}
            }
        }
    }

    /// SIGKILL every process group still there, and every process in the x-run cgroups (the
    /// last step of a shutdown).
    pub fn kill_all(&mut self) {
        for p in self.procs.values() {
            if let State::Running { pid } | State::Stopping { pid, .. } = p.state {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(Err(e)) = self.x_run.as_ref().map(Cgroup::kill) {
            self.log.line(
                "daemon",
                EVENT,
                &format!("cannot kill the x-run cgroups: {e}"),
            );
        }
    }

    /// SIGKILL what is in the current leaf of `name` (one write to `cgroup.kill`).
    fn kill_leaf(&self, name: &str) {
        let leaf = self.procs.get(name).and_then(|p| p.leaf.as_ref());
        if let Some(Err(e)) = leaf.map(Cgroup::kill) {
            self.log
                .line(name, EVENT, &format!("cannot kill its cgroup: {e}"));
        }
    }

    pub fn status(&self) -> Vec<ProcStatus> {
        let mut v: Vec<ProcStatus> = self
            .procs
            .values()
            .map(|p| {
                let (state, pid, detail) = match &p.state {
                    State::Running { pid } => ("running", Some(*pid), String::new()),
                    State::Stopping { pid, .. } => ("stopping", Some(*pid), String::new()),
                    State::Waiting { until } => (
                        "restarting",
                        None,
                        format!(
                            "in {} ms",
                            until.saturating_duration_since(Instant::now()).as_millis()
                        ),
                    ),
                    State::Exited { .. } if p.held => ("stopped", None, String::new()),
                    State::Exited { status } => ("exited", None, status.clone()),
                    State::Failed { error } => ("failed", None, error.clone()),
                    State::Pending { reason } => ("waiting", None, reason.clone()),
                    State::Blocked { reason } => ("blocked", None, reason.clone()),
                };
                let health = match p.state {
                    State::Running { .. } => p.health.as_ref().map(|h| h.status().clone()),
                    _ => None,
                };
                ProcStatus {
                    name: p.def.name.clone(),
                    service: p.def.service.clone(),
                    state: state.into(),
                    pid,
                    restarts: p.restarts,
                    detail,
                    health,
                    exit_code: match p.state {
                        State::Exited { .. } => p.exit_code,
                        _ => None,
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

fn policy_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::No => "no",
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure { .. } => "on-failure",
        RestartPolicy::UnlessStopped => "unless-stopped",
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => {
                let name =
                    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                format!("killed by {name}")
            }
            _ => "exited".into(),
        },
        None => "lost (cannot wait for it)".into(),
    }
}

/// The grace period of `def` between its stop signal and SIGKILL.
fn grace(def: &Process) -> Duration {
    def.stop_grace_period_ms
        .map_or(GRACE, Duration::from_millis)
}

/// `def`'s stop signal to the group now; a SIGKILL request after its grace period.
fn terminate(
    def: &Process,
    pid: i32,
    terminated: &AtomicBool,
    events: &mpsc::UnboundedSender<Event>,
    name: &str,
) {
    terminated.store(true, Ordering::SeqCst);
    let signal = def.stop_signal.unwrap_or(libc::SIGTERM);
    // A raw number: `stop_signal` may name a real-time signal, which nix's Signal lacks.
    // SAFETY: kill(2) on integers.
    unsafe { libc::kill(-pid, signal) };
    let tx = events.clone();
    let name = name.to_string();
    let grace = grace(def);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let _ = tx.send(Event::Kill { name, pid });
    });
}

/// Copy a process's output to the log, a line at a time.
async fn pump(stream: impl AsyncRead + Unpin, name: String, log: Arc<LogSink>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                buf.truncate(MAX_LINE);
                log.line(&name, OUTPUT, &String::from_utf8_lossy(&buf));
            }
        }
    }
}
