//! The project daemon: one background process per project that hosts the embedded resolver
//! (127.0.0.11:53 in every replica namespace), the replicas' `x-run` processes and the
//! published ports relayed on [::1] ([`relay`]), and keeps what its namespaces hold between
//! runs ([`informer`]), so that an `up` does not read every namespace again.
//!
//! Files, all under `/run/netcompose/<project>/` (a tmpfs: nothing of it survives a reboot,
//! and neither do the namespaces it serves). The directories are 0700 and the files 0600,
//! whatever the umask: the socket drives the daemon and `x-run` output can hold secrets.
//!
//! | file           | what                                                            |
//! |----------------|-----------------------------------------------------------------|
//! | `daemon.json`  | the [`DaemonConfig`], written atomically by `up`                |
//! | `daemon.pid`   | the daemon's pid, written once it serves                        |
//! | `daemon.lock`  | flock'd by the daemon for its whole life ([`contain`])          |
//! | `control.sock` | the control socket: one JSON request, one JSON reply            |
//! | `daemon.log`   | the daemon's own stdout and stderr                              |
//! | `run.log`      | the `x-run` processes' output ([`logs`]), read by `netcompose logs` |
//!
//! Life cycle: `up` writes the configuration, then asks a running daemon (one holds the lock)
//! to `reload` (it swaps its records atomically, opens and closes sockets, starts, stops and
//! restarts processes, and replies when done), or starts one (`netcompose daemon --project
//! P`, detached with setsid, in the project's cgroup, holding the lock `up` took) and waits
//! until it answers. A daemon that holds the lock but does not answer is killed with every
//! process of the project first. `down` asks a live daemon to `stop` before the namespaces go
//! (processes get their stop signal, then SIGKILL after their grace period), then kills
//! whatever is left in the project's cgroups and returns once they are empty. SIGHUP makes
//! the daemon reload, SIGTERM stop. A daemon that died is seen by [`status`] and started again by the next `up`,
//! after the processes it left behind are killed.

pub mod contain;
pub mod health;
pub mod informer;
mod init;
mod lending;
pub mod logs;
mod metrics_http;
mod order;
mod privileges;
pub mod processes;
mod readiness;
pub mod ready;
mod relay;
pub mod resolver;
pub mod runner;
mod serve;
pub mod stats;

pub use crate::model::daemon::DaemonConfig;
pub use serve::run;

use crate::kernel::survey::{Answer, Kept, SurveySource};
use crate::project_name::ProjectName;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Root of the daemons' runtime directories.
pub const RUN_ROOT: &str = "/run/netcompose";
/// How long `up` waits for a daemon to start or to finish a reload.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon of project {project} did not answer: {reason}")]
    NoAnswer { project: String, reason: String },
    #[error("the daemon of project {project} refused the request: {reason}")]
    Refused { project: String, reason: String },
    #[error("the daemon of project {project} exited at start: {log}")]
    StartFailed { project: String, log: String },
    #[error("cannot contain the processes of project {project}: {source}")]
    Processes {
        project: String,
        #[source]
        source: crate::kernel::cgroup::CgroupError,
    },
    #[error("another daemon of project {project} is running (it holds {path})")]
    AlreadyRunning { project: String, path: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `/run/netcompose/<project>`.
pub fn run_dir(project: &ProjectName) -> PathBuf {
    Path::new(RUN_ROOT).join(project.as_str())
}
pub fn config_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("daemon.json")
}
/// The [::1] relays the project's daemon was last told to serve (none without a readable
/// configuration): their sockets are the project's own, not the host's.
pub fn relays(project: &ProjectName) -> Vec<crate::model::daemon::LoopbackRelay> {
    std::fs::read(config_path(project))
        .ok()
        .and_then(|b| serde_json::from_slice::<DaemonConfig>(&b).ok())
        .map(|c| c.relays)
        .unwrap_or_default()
}
pub fn pid_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("daemon.pid")
}
pub fn socket_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("control.sock")
}
pub fn daemon_log_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("daemon.log")
}
pub fn run_log_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("run.log")
}

/// Whether the project's daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Running { pid: u32 },
    Stopped,
}

/// The daemon's state from its pid file and /proc, without talking to it (any user can call
/// this; `plan` reports a project that is up without a running daemon as drift).
pub fn status(project: &ProjectName) -> Status {
    let Ok(text) = std::fs::read_to_string(pid_path(project)) else {
        return Status::Stopped;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if is_our_daemon(pid, project) => Status::Running { pid },
        _ => Status::Stopped,
    }
}

/// Whether `pid` is `netcompose daemon --project <project>` (not a recycled pid).
fn is_our_daemon(pid: u32, project: &ProjectName) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is not running.
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            return false;
        }
    }
    args.iter().any(|a| *a == b"daemon")
        && args
            .windows(2)
            .any(|w| w[0] == b"--project" && w[1] == project.as_bytes())
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Status,
    /// Serve the configuration `up` wrote, and start what `stop` held.
    Reload,
    /// Close the sockets in these namespaces and stop the processes running in them (`up`
    /// deletes them next); serve the rest as before.
    Release {
        namespaces: Vec<String>,
    },
    Stop,
    /// `netcompose stop|start|restart`: the x-run processes of `services` (all when empty).
    Processes {
        action: processes::Action,
        #[serde(default)]
        services: Vec<String>,
    },
    /// `netcompose stats`: a [`stats::Sample`] of every figure, now.
    Stats,
    /// The same figures in Prometheus text format.
    Metrics,
    /// Hold this many descriptors, sent after the reply, until the connection closes (see
    /// [`hand_over`]).
    Hold {
        sockets: usize,
    },
    /// The full surveys the daemon keeps of these namespaces ([`informer`]); `sockets`: with
    /// a copy of each one's nfnetlink socket (see [`KeptSurveys::lend`]).
    Surveys {
        namespaces: Vec<String>,
        #[serde(default)]
        sockets: bool,
    },
}

/// The reply to every request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub pid: u32,
    pub generation: u64,
    /// Namespaces the resolver serves.
    pub serving: usize,
    #[serde(default)]
    pub processes: Vec<runner::ProcStatus>,
    #[serde(default)]
    pub reload: Option<resolver::server::ReloadReport>,
    #[serde(default)]
    pub errors: Vec<String>,
    /// The answer to [`Request::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<stats::Sample>,
    /// The answer to [`Request::Metrics`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The answer to [`Request::Surveys`], in the order asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surveys: Option<Vec<Option<Kept>>>,
    /// Which of the namespaces asked for (their indices) have their socket sent after this
    /// reply, in that order ([`Request::Surveys`] with `sockets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lent: Vec<usize>,
}

/// One request, one reply (sockets the daemon lends with it are taken and closed: see
/// `lending::request` for a caller that keeps them).
pub fn request(
    project: &ProjectName,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, DaemonError> {
    lending::request(project, req, timeout).map(|(reply, _)| reply)
}

/// Descriptors held by the daemon for this process ([`hand_over`]) until it is dropped.
pub struct Holding {
    _connection: std::os::unix::net::UnixStream,
}

/// Hand copies of `fds` to the project's daemon, which holds them until the [`Holding`] is
/// dropped: an `up` hands over its nfnetlink sockets at its end, so that none of its own
/// closes is the last of a socket, which waits for a grace period of RCU (`lending` says why).
/// The caller drops its copies before the [`Holding`].
pub fn hand_over(project: &ProjectName, fds: &[OwnedFd]) -> Result<Holding, DaemonError> {
    lending::hand_over(project, fds, HAND_OVER_TIMEOUT).map(|c| Holding { _connection: c })
}

/// A daemon that does not take the sockets at once only costs the wait that handing them over
/// saves.
const HAND_OVER_TIMEOUT: Duration = Duration::from_millis(500);

/// Make a running daemon let go of `namespaces` before they are deleted ([`Request::Release`]);
/// nothing to do when no daemon runs. A daemon that does not answer, or cannot, is an error,
/// which the caller may survive: the deletion then waits for the kernel, or deletes the links
/// itself.
pub fn release(project: &ProjectName, namespaces: Vec<String>) -> Result<(), DaemonError> {
    if namespaces.is_empty() || status(project) == Status::Stopped {
        return Ok(());
    }
    let reply = request(project, &Request::Release { namespaces }, START_TIMEOUT)?;
    if reply.ok {
        Ok(())
    } else {
        Err(DaemonError::Refused {
            project: project.to_string(),
            reason: reply.errors.join("; "),
        })
    }
}

/// The project daemon as a [`SurveySource`] for a run of the project: the surveys its
/// informer keeps, or none when no daemon runs or it does not answer (the run then surveys
/// every namespace itself, as without a daemon).
pub struct KeptSurveys {
    pub project: ProjectName,
    /// Borrow the daemon's nfnetlink socket of each namespace too: only for a run that holds
    /// the project's lock (an `up`), so that no two processes talk on one socket at once.
    pub lend: bool,
}

/// How long a run waits for the daemon's surveys before it reads the namespaces itself.
const SURVEYS_TIMEOUT: Duration = Duration::from_secs(2);

impl SurveySource for KeptSurveys {
    fn ask(&self, names: &[String]) -> Answer {
        if status(&self.project) == Status::Stopped {
            return Box::new(Vec::new);
        }
        let req = Request::Surveys {
            namespaces: names.to_vec(),
            sockets: self.lend,
        };
        let Ok(asked) = lending::ask(&self.project, &req, SURVEYS_TIMEOUT) else {
            return Box::new(Vec::new);
        };
        let asked_for = names.len();
        Box::new(move || match asked.answer() {
            Ok((reply, sockets)) => kept_with_sockets(reply, sockets, asked_for),
            Err(_) => Vec::new(),
        })
    }
}

/// The daemon's answer to [`Request::Surveys`] for `asked_for` namespaces, each survey with
/// the socket lent for it, if any (none at all for an answer that does not fit the request).
fn kept_with_sockets(
    reply: Reply,
    sockets: Vec<OwnedFd>,
    asked_for: usize,
) -> Vec<Option<(Kept, Option<OwnedFd>)>> {
    let kept = match reply.surveys {
        Some(kept) if reply.ok && kept.len() == asked_for => kept,
        _ => return Vec::new(),
    };
    let mut lent: Vec<Option<OwnedFd>> = std::iter::repeat_with(|| None).take(asked_for).collect();
    for (i, socket) in reply.lent.into_iter().zip(sockets) {
        if let Some(slot) = lent.get_mut(i) {
            *slot = Some(socket);
        }
    }
    kept.into_iter()
        .zip(lent)
        .map(|(k, socket)| k.map(|k| (k, socket)))
        .collect()
}

/// What [`ensure`] did.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub pid: u32,
    /// `started`, `restarted` (it had died or hung), `updated`, or `unchanged` ([`current`]).
    pub action: &'static str,
    pub reply: Reply,
}

/// A live daemon that already serves exactly `cfg`, with nothing to redo: its configuration
/// file holds the same bytes, it answers without errors and serves every namespace of `cfg`,
/// and the project has no x-run processes (for those a reload also starts what `stop` held
/// and retries what waited, so it is never skipped). An `up` that changed nothing then leaves
/// the daemon alone; None means [`ensure`] must run.
pub fn current(cfg: &DaemonConfig) -> Option<Ensured> {
    if !cfg.processes.is_empty() {
        return None;
    }
    let written = std::fs::read(config_path(&cfg.project)).ok()?;
    if written != config_bytes(cfg) {
        return None;
    }
    let reply = request(&cfg.project, &Request::Status, START_TIMEOUT).ok()?;
    (reply.ok && reply.errors.is_empty() && reply.serving == cfg.namespaces.len()).then_some(
        Ensured {
            pid: reply.pid,
            action: "unchanged",
            reply,
        },
    )
}

/// Compact: every `up` that changes the project writes it and the daemon reads it back (94 KB
/// pretty for bench/lb.sh's 200 replicas, a thousand lines of their zone's names).
fn config_bytes(cfg: &DaemonConfig) -> Vec<u8> {
    serde_json::to_vec(cfg).unwrap_or_default()
}

/// Write `cfg` and make the daemon serve it: reload a running daemon, or start one.
pub fn ensure(cfg: &DaemonConfig) -> Result<Ensured, DaemonError> {
    let project = &cfg.project;
    prepare_run_dir(project)?;
    write_atomic(&config_path(project), &config_bytes(cfg))?;
    let mut action = if std::fs::metadata(pid_path(project)).is_ok() {
        "restarted"
    } else {
        "started"
    };
    let lock = match contain::DaemonLock::try_acquire(project)? {
        Some(lock) => lock,
        None => {
            if let Ok(reply) = request(project, &Request::Reload, START_TIMEOUT) {
                return Ok(Ensured {
                    pid: reply.pid,
                    action: "updated",
                    reply,
                });
            }
            // Hung, or started by an `up` that died before it answered: it goes with every
            // process of the project, which the new daemon starts afresh.
            contain::kill_project(project, pid_in_file(project))?;
            action = "restarted";
            contain::DaemonLock::try_acquire(project)?.ok_or_else(|| {
                DaemonError::AlreadyRunning {
                    project: project.to_string(),
                    path: contain::lock_path(project).display().to_string(),
                }
            })?
        }
    };
    // No daemon: what a dead one left behind (orphans of its x-run processes) goes first, so
    // that nothing runs twice.
    contain::kill_project(project, pid_in_file(project))?;
    let (pid, reply) = start(project, lock)?;
    Ok(Ensured { pid, action, reply })
}

/// Make /run/netcompose and the project's directory, root's only whatever the umask (and
/// whatever an older version left).
fn prepare_run_dir(project: &ProjectName) -> Result<(), DaemonError> {
    let dir = run_dir(project);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(&dir))?;
    for d in [Path::new(RUN_ROOT), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(io_err(d))?;
    }
    Ok(())
}

/// Open (create or append to) a file of the run directory, mode 0600 even if it existed.
fn open_private(path: &Path, append: bool) -> Result<std::fs::File, DaemonError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    Ok(f)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DaemonError> {
    let tmp = path.with_extension("tmp");
    let mut f = open_private(&tmp, false)?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The pid the pid file holds, whether or not that process still runs.
fn pid_in_file(project: &ProjectName) -> Option<u32> {
    std::fs::read_to_string(pid_path(project))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Start the daemon detached, holding `lock`, in the project's cgroup, and wait until it
/// answers.
fn start(project: &ProjectName, lock: contain::DaemonLock) -> Result<(u32, Reply), DaemonError> {
    let _ = std::fs::remove_file(pid_path(project));
    let _ = std::fs::remove_file(socket_path(project));
    let log_path = daemon_log_path(project);
    let log = open_private(&log_path, true)?;
    let cgroup_procs = match contain::Cgroups::find(project) {
        Ok(cg) => {
            let leaf = cg.daemon().and_then(|d| d.create().map(|()| d));
            let procs = leaf.and_then(|d| d.procs_for_child());
            Some(procs.map_err(|source| DaemonError::Processes {
                project: project.to_string(),
                source,
            })?)
        }
        // The daemon says so in its replies; it runs contained by its session.
        Err(crate::kernel::cgroup::CgroupError::NotMounted) => None,
        Err(source) => {
            return Err(DaemonError::Processes {
                project: project.to_string(),
                source,
            })
        }
    };
    let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
    let mut ready = readiness::Waiter::new().map_err(io_err(Path::new("pipe")))?;
    let ready_fd = ready.child_end();
    let mut cmd = Command::new(exe);
    let lock_fd = lock.raw_fd();
    cmd.args(["daemon", "--project", project])
        .env(contain::LOCK_FD_ENV, lock_fd.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err(&log_path))?)
        .stderr(log);
    if let Some(fd) = ready_fd {
        cmd.env(readiness::READY_FD_ENV, fd.to_string());
    }
    // SAFETY: setsid, fcntl and write are async-signal-safe single system calls.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup_procs {
                crate::kernel::cgroup::enter(procs)?;
            }
            nix::unistd::setsid()?;
            if let Some(fd) = ready_fd {
                contain::pass_to_child(fd)?;
            }
            contain::pass_to_child(lock_fd)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(io_err(Path::new("netcompose daemon")))?;
    // The child holds the same open file, hence the lock, from now on.
    drop(lock);
    ready.spawned();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            return Err(DaemonError::StartFailed {
                project: project.to_string(),
                log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        if std::fs::metadata(pid_path(project)).is_ok() {
            if let Ok(reply) = request(project, &Request::Status, Duration::from_secs(10)) {
                return Ok((child.id(), reply));
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(DaemonError::NoAnswer {
                project: project.to_string(),
                reason: format!("not ready after {} s", START_TIMEOUT.as_secs()),
            });
        }
        ready.wait(Duration::from_millis(20));
    }
}

/// Stop the daemon and every process of the project, then remove its directory; returns once
/// no process of the project is left. Returns the pid the daemon had.
pub fn stop(project: &ProjectName) -> Result<Option<u32>, DaemonError> {
    Stopping::asked(project)?.finish()
}

/// [`stop`] for `down`, which needs the project's processes stopped before the namespaces go
/// but not the daemon's own exit: the daemon is asked to stop now (its processes get their
/// stop signal and grace period before it answers); the kill of what is left, the wait for it
/// and the removal of the run directory go on on a thread of their own, joined by
/// [`StopWait::wait`]. The exit of a daemon that serves 200 namespaces (a few sockets in each
/// to close) took 20-30 ms of such a `down`.
pub fn stop_then_wait(project: &ProjectName) -> Result<StopWait, DaemonError> {
    let stopping = Stopping::asked(project)?;
    Ok(StopWait(Some(std::thread::spawn(move || {
        stopping.finish()
    }))))
}

/// The rest of [`stop_then_wait`], running; dropped, it is waited for all the same (a `down`
/// that fails half-way leaves no process behind either).
pub struct StopWait(Option<std::thread::JoinHandle<Result<Option<u32>, DaemonError>>>);

impl StopWait {
    /// Once no process of the project is left and its directory is gone: the pid the daemon
    /// had.
    pub fn wait(mut self) -> Result<Option<u32>, DaemonError> {
        match self.0.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(None),
        }
    }
}

impl Drop for StopWait {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// A daemon asked to stop, whose remains are not yet killed.
struct Stopping {
    project: ProjectName,
    was: Option<u32>,
    dir: PathBuf,
    lock: Option<contain::DaemonLock>,
}

impl Stopping {
    fn asked(project: &ProjectName) -> Result<Stopping, DaemonError> {
        let was = match status(project) {
            Status::Running { pid } => Some(pid),
            Status::Stopped => None,
        };
        let dir = run_dir(project);
        let lock = match dir.is_dir() {
            true => contain::DaemonLock::try_acquire(project)?,
            false => None,
        };
        // Only a live daemon (it holds the lock) is asked: a dead one's socket cannot answer.
        // It gives its processes their stop signal and grace period; the kill that follows is
        // for what is left.
        if lock.is_none() && dir.is_dir() {
            let _ = request(project, &Request::Stop, processes::stop_timeout(project));
        }
        Ok(Stopping {
            project: project.clone(),
            was,
            dir,
            lock,
        })
    }

    fn finish(self) -> Result<Option<u32>, DaemonError> {
        let Stopping {
            project,
            was,
            dir,
            lock,
        } = self;
        contain::kill_project(&project, was.or_else(|| pid_in_file(&project)))?;
        drop(lock);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(was),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(was),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}
