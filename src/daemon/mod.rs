//! The project daemon: one background process per project that hosts the embedded resolver
//! (127.0.0.11:53 in every replica namespace) and the replicas' `x-run` processes.
//!
//! Files, all under `/run/netcompose/<project>/` (a tmpfs: nothing of it survives a reboot,
//! and neither do the namespaces it serves):
//!
//! | file           | what                                                            |
//! |----------------|-----------------------------------------------------------------|
//! | `daemon.json`  | the [`DaemonConfig`], written atomically by `up`                |
//! | `daemon.pid`   | the daemon's pid, written once it serves                        |
//! | `control.sock` | the control socket: one JSON request, one JSON reply            |
//! | `daemon.log`   | the daemon's own stdout and stderr                              |
//! | `run.log`      | the `x-run` processes' output ([`logs`]), read by `netcompose logs` |
//!
//! Life cycle: `up` writes the configuration, then asks a running daemon to `reload` (it
//! swaps its records atomically, opens and closes sockets, starts, stops and restarts
//! processes, and replies when done), or starts one (`netcompose daemon --project P`,
//! detached with setsid) and waits until it answers. `down` asks it to `stop` before the
//! namespaces go (processes get SIGTERM, then SIGKILL after a grace period), and kills it if
//! it does not answer. SIGHUP makes the daemon reload, SIGTERM stop. A daemon that died is
//! seen by [`status`] and started again by the next `up`.

pub mod config;
pub mod logs;
pub mod resolver;
pub mod runner;

pub use config::DaemonConfig;

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
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
    #[error("the daemon of project {project} exited at start: {log}")]
    StartFailed { project: String, log: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `/run/netcompose/<project>`.
pub fn run_dir(project: &str) -> PathBuf {
    Path::new(RUN_ROOT).join(project)
}
pub fn config_path(project: &str) -> PathBuf {
    run_dir(project).join("daemon.json")
}
pub fn pid_path(project: &str) -> PathBuf {
    run_dir(project).join("daemon.pid")
}
pub fn socket_path(project: &str) -> PathBuf {
    run_dir(project).join("control.sock")
}
pub fn daemon_log_path(project: &str) -> PathBuf {
    run_dir(project).join("daemon.log")
}
pub fn run_log_path(project: &str) -> PathBuf {
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
pub fn status(project: &str) -> Status {
    let Ok(text) = std::fs::read_to_string(pid_path(project)) else {
        return Status::Stopped;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if is_our_daemon(pid, project) => Status::Running { pid },
        _ => Status::Stopped,
    }
}

/// Whether `pid` is `netcompose daemon --project <project>` (not a recycled pid).
fn is_our_daemon(pid: u32, project: &str) -> bool {
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
    Reload,
    Stop,
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
}

/// One request, one reply.
pub fn request(project: &str, req: &Request, timeout: Duration) -> Result<Reply, DaemonError> {
    let no_answer = |reason: String| DaemonError::NoAnswer {
        project: project.to_string(),
        reason,
    };
    let path = socket_path(project);
    let mut s = UnixStream::connect(&path).map_err(|e| no_answer(e.to_string()))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut line = serde_json::to_string(req).map_err(|e| no_answer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| no_answer(e.to_string()))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| no_answer(e.to_string()))?;
    serde_json::from_str(&reply).map_err(|e| no_answer(format!("{e} in {reply:?}")))
}

/// What [`ensure`] did.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub pid: u32,
    /// `started`, `restarted` (it had died or hung), or `updated`.
    pub action: &'static str,
    pub reply: Reply,
}

/// Write `cfg` and make the daemon serve it: reload a running daemon, or start one.
pub fn ensure(cfg: &DaemonConfig) -> Result<Ensured, DaemonError> {
    let project = &cfg.project;
    let dir = run_dir(project);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(io_err(&dir))?;
    write_atomic(
        &config_path(project),
        &serde_json::to_vec_pretty(cfg).unwrap_or_default(),
    )?;
    let mut action = "started";
    if let Status::Running { pid } = status(project) {
        match request(project, &Request::Reload, START_TIMEOUT) {
            Ok(reply) => {
                return Ok(Ensured {
                    pid,
                    action: "updated",
                    reply,
                })
            }
            Err(_) => {
                kill_and_wait(pid, Duration::from_secs(2));
                action = "restarted";
            }
        }
    } else if std::fs::metadata(pid_path(project)).is_ok() {
        action = "restarted";
    }
    let (pid, reply) = start(project)?;
    Ok(Ensured { pid, action, reply })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DaemonError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Start the daemon detached and wait until it answers.
fn start(project: &str) -> Result<(u32, Reply), DaemonError> {
    let _ = std::fs::remove_file(pid_path(project));
    let _ = std::fs::remove_file(socket_path(project));
    let log_path = daemon_log_path(project);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "--project", project])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err(&log_path))?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let mut child = cmd
        .spawn()
        .map_err(io_err(Path::new("netcompose daemon")))?;
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

fn kill_and_wait(pid: u32, wait: Duration) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + wait;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop the daemon and its processes, then remove its directory. Returns the pid it had.
pub fn stop(project: &str) -> Result<Option<u32>, DaemonError> {
    let was = match status(project) {
        Status::Running { pid } => {
            let grace = runner::GRACE + Duration::from_secs(5);
            if request(project, &Request::Stop, grace).is_err() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + grace;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(pid) {
                kill_and_wait(pid, Duration::from_secs(2));
            }
            Some(pid)
        }
        Status::Stopped => None,
    };
    let dir = run_dir(project);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(was),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(was),
        Err(e) => Err(io_err(&dir)(e)),
    }
}

/// Raise the soft limit of open files to the hard one: a namespace costs three sockets.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs(), t.subsec_millis())
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[{}] {}", now(), format_args!($($arg)*)) };
}

/// The daemon itself (`netcompose daemon --project P`): serve until told to stop.
pub fn run(project: &str) -> Result<(), String> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The main loop runs on this (main) thread: x-run children are forked here.
    rt.block_on(main_loop(project))
}

struct Daemon {
    project: String,
    resolver: resolver::server::Resolver,
    runner: runner::Runner,
    generation: u64,
    last_errors: Vec<String>,
}

impl Daemon {
    async fn reload(&mut self) -> Reply {
        let path = config_path(&self.project);
        let cfg: DaemonConfig = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot read {}: {e}", path.display());
                say!("{msg}");
                let mut r = self.reply();
                r.ok = false;
                r.errors = vec![msg];
                return r;
            }
        };
        self.generation += 1;
        let report = self.resolver.apply(&cfg, self.generation).await;
        let mut errors = report.errors.clone();
        errors.extend(self.runner.apply(&cfg));
        say!(
            "generation {}: serving {} namespaces (+{} -{}), {} processes{}",
            self.generation,
            report.serving,
            report.opened.len(),
            report.closed.len(),
            cfg.processes.len(),
            if errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {}", errors.join("; "))
            }
        );
        self.last_errors = errors.clone();
        let mut r = self.reply();
        r.reload = Some(report);
        r.errors = errors;
        r
    }

    fn reply(&self) -> Reply {
        Reply {
            ok: true,
            pid: std::process::id(),
            generation: self.generation,
            serving: self.resolver.serving().len(),
            processes: self.runner.status(),
            reload: None,
            errors: self.last_errors.clone(),
        }
    }

    /// Stop every process: SIGTERM, and SIGKILL what is left after the grace period.
    async fn shutdown(&mut self, events: &mut tokio::sync::mpsc::UnboundedReceiver<runner::Event>) {
        self.runner.begin_shutdown();
        let deadline = tokio::time::Instant::now() + runner::GRACE;
        while self.runner.busy() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.runner.on_event(ev),
                _ => break,
            }
        }
        self.runner.kill_all();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.runner.busy() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.runner.on_event(ev),
                _ => break,
            }
        }
    }
}

async fn main_loop(project: &str) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let log = Arc::new(logs::LogSink::new(run_log_path(project)));
    let mut d = Daemon {
        project: project.to_string(),
        resolver: resolver::server::Resolver::new(),
        runner: runner::Runner::new(log, tx),
        generation: 0,
        last_errors: Vec::new(),
    };
    say!(
        "netcompose daemon for project {project}, pid {}",
        std::process::id()
    );
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    d.reload().await;

    let sock = socket_path(project);
    let _ = std::fs::remove_file(&sock);
    let listener =
        tokio::net::UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    write_atomic(
        &pid_path(project),
        format!("{}\n", std::process::id()).as_bytes(),
    )
    .map_err(|e| e.to_string())?;

    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                if control(&mut d, stream, &mut events).await {
                    break;
                }
            }
            _ = hup.recv() => { d.reload().await; }
            _ = term.recv() => { say!("SIGTERM: stopping"); d.shutdown(&mut events).await; break; }
            _ = int.recv() => { say!("SIGINT: stopping"); d.shutdown(&mut events).await; break; }
            Some(ev) = events.recv() => d.runner.on_event(ev),
        }
    }
    // Leave the directory to `down`; only say we are gone.
    let _ = std::fs::remove_file(pid_path(project));
    let _ = std::fs::remove_file(&sock);
    say!("stopped");
    Ok(())
}

/// Serve one control connection; true when the daemon must exit.
async fn control(
    d: &mut Daemon,
    stream: tokio::net::UnixStream,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<runner::Event>,
) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r);
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return false;
    }
    let (reply, exit) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => (d.reply(), false),
        Ok(Request::Reload) => (d.reload().await, false),
        Ok(Request::Stop) => {
            say!("stop requested");
            d.shutdown(events).await;
            (d.reply(), true)
        }
        Err(e) => (
            Reply {
                ok: false,
                errors: vec![format!("bad request: {e}")],
                ..d.reply()
            },
            false,
        ),
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_default();
    out.push('\n');
    let _ = tokio::time::timeout(Duration::from_secs(5), w.write_all(out.as_bytes())).await;
    exit
}
