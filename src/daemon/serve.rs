//! The daemon process itself (`netcompose daemon --project P`): it takes the project's lock,
//! joins the project's cgroup, then serves the resolver and the `x-run` processes and answers
//! the control socket until told to stop.

use super::informer::Informer;
use super::readiness::Notifier;
use super::{
    config_path, contain, logs, pid_path, relay, resolver, run_log_path, runner, socket_path,
    stats, write_atomic, DaemonConfig, DaemonError, Reply, Request,
};
use crate::project_name::ProjectName;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

/// The descriptor table's size from the start (`kernel::descriptors`): a project of about
/// 1,000 replicas.
const DESCRIPTORS: usize = 8192;

/// Worker threads of the daemon's runtime (TCP queries, forwards, x-run, control); UDP queries
/// have threads of their own (`resolver::udp`).
pub const WORKER_THREADS: usize = 2;

fn now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs(), t.subsec_millis())
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[{}] {}", now(), format_args!($($arg)*)) };
}

/// The daemon itself (`netcompose daemon --project P`): serve until told to stop. Exits at
/// once if another daemon of the project holds the lock.
pub fn run(project: &ProjectName) -> Result<(), String> {
    let Some(_lock) =
        contain::DaemonLock::inherit_or_acquire(project).map_err(|e| e.to_string())?
    else {
        return Err(DaemonError::AlreadyRunning {
            project: project.to_string(),
            path: contain::lock_path(project).display().to_string(),
        }
        .to_string());
    };
    // Taken before any child exists, which must not inherit it.
    let ready = Notifier::inherit();
    // Before any thread or child exists, so that everything the daemon starts is inside.
    let (x_run, uncontained) = match enter_cgroups(project) {
        Ok(x_run) => (Some(x_run), None),
        Err(
            e @ DaemonError::Processes {
                source: crate::kernel::cgroup::CgroupError::NotMounted,
                ..
            },
        ) => {
            let msg = format!(
                "{e}: x-run processes are contained by the daemon's session only \
                 (one that calls setsid can outlive `down`)"
            );
            say!("{msg}");
            (None, Some(msg))
        }
        Err(e) => return Err(e.to_string()),
    };
    // A namespace costs a socket per UDP worker thread, two more, and the informer's three.
    crate::kernel::descriptors::reserve(DESCRIPTORS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The main loop runs on this (main) thread: x-run children are forked here.
    rt.block_on(main_loop(project, x_run, uncontained, ready))
}

/// Join the daemon's cgroup and make the parent of the x-run leaves; returns that parent.
fn enter_cgroups(project: &ProjectName) -> Result<crate::kernel::cgroup::Cgroup, DaemonError> {
    let failed = |source| DaemonError::Processes {
        project: project.to_string(),
        source,
    };
    let cg = contain::Cgroups::find(project).map_err(failed)?;
    let daemon = cg.daemon().map_err(failed)?;
    daemon.create().map_err(failed)?;
    daemon.join().map_err(failed)?;
    let x_run = cg.x_run().map_err(failed)?;
    x_run.create().map_err(failed)?;
    Ok(x_run)
}

struct Daemon {
    project: ProjectName,
    resolver: resolver::server::Resolver,
    runner: runner::Runner,
    relays: relay::Relays,
    generation: u64,
    last_errors: Vec<String>,
    /// Why x-run processes are not in cgroups, if they are not.
    uncontained: Option<String>,
    stats: Arc<stats::Collector>,
    /// The `x-metrics` listener being served, and its task.
    metrics: Option<(std::net::SocketAddr, tokio::task::AbortHandle)>,
    /// The surveys kept of the namespaces served, for the next `up`.
    informer: Arc<std::sync::Mutex<Informer>>,
    /// A reload changed what the informer follows ([`Daemon::catch_up`]).
    catch_up_due: bool,
}

/// The nice value of the informer's catch-up thread.
const CATCH_UP_NICE: nix::libc::c_int = 10;

impl Daemon {
    /// Read the configuration again and serve it; `release`: also start what `netcompose stop`
    /// held (the reload of an `up`, not of a SIGHUP).
    async fn reload(&mut self, release: bool) -> Reply {
        match self.read_config() {
            Ok(cfg) => self.serve(cfg, release).await,
            Err(e) => self.failed(e),
        }
    }

    /// Let go of `namespaces`, which `up` deletes next: the resolver's sockets and the x-run
    /// processes in a namespace keep it alive once its pin is gone, and with it the host end
    /// of its veth, which `up` waits for. The rest of the configuration is served as before.
    async fn release(&mut self, namespaces: &[String]) -> Reply {
        let mut cfg = match self.read_config() {
            Ok(cfg) => cfg,
            Err(e) => return self.failed(e),
        };
        let doomed = |ns: &String| namespaces.contains(ns);
        cfg.namespaces.retain(|ns, _| !doomed(ns));
        cfg.processes
            .retain(|p| !p.netns.as_ref().is_some_and(doomed));
        self.serve(cfg, false).await
    }

    /// The configuration `up` wrote, or why it cannot be read.
    fn read_config(&self) -> Result<DaemonConfig, String> {
        let path = config_path(&self.project);
        std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// A failed reply, logged.
    fn failed(&self, msg: String) -> Reply {
        say!("{msg}");
        let mut r = self.reply();
        r.ok = false;
        r.errors = vec![msg];
        r
    }

    /// Serve `cfg`; `release`: also start what `netcompose stop` held.
    async fn serve(&mut self, cfg: DaemonConfig, release: bool) -> Reply {
        self.generation += 1;
        let report = self.resolver.apply(&cfg, self.generation).await;
        let mut errors = report.errors.clone();
        errors.extend(self.runner.apply(&cfg));
        if release {
            errors.extend(self.runner.release_all());
        }
        errors.extend(self.relays.apply(&cfg).await);
        self.follow(cfg.namespaces.keys().cloned().collect()).await;
        self.stats.set_inputs(stats::Inputs {
            project: self.project.to_string(),
            namespaces: cfg
                .namespaces
                .iter()
                .map(|(ns, v)| (ns.clone(), (v.service.clone(), v.replica)))
                .collect(),
            sources: self.resolver.stats_sources(),
            vips: cfg.vips.clone(),
        });
        errors.extend(self.serve_metrics(cfg.metrics_listen));
        if !cfg.processes.is_empty() {
            errors.extend(self.uncontained.clone());
        }
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

    /// Make the informer follow `namespaces`: it lets go of the others before this returns
    /// (a release's namespaces are deleted next); [`Daemon::catch_up`] surveys the new ones.
    async fn follow(&mut self, namespaces: std::collections::BTreeSet<String>) {
        let informer = self.informer.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&informer).want(namespaces)).await;
        self.catch_up_due = true;
    }

    /// After a reload has been answered: survey what the informer does not keep yet, on a
    /// thread of its own at a lower priority, so that it takes no CPU from the run that
    /// waited for the reload and may already be building its next model.
    fn catch_up(&mut self) {
        if !std::mem::take(&mut self.catch_up_due) {
            return;
        }
        let informer = self.informer.clone();
        let spawned = std::thread::Builder::new()
            .name("informer".into())
            .spawn(move || {
                // Per thread on Linux, and inherited by the survey's threads.
                // SAFETY: setpriority only reads its arguments; 0 is the calling thread.
                unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, CATCH_UP_NICE) };
                let started = std::time::Instant::now();
                let mut informer = lock(&informer);
                let before = informer.reads();
                informer.catch_up();
                say!(
                    "informer: {} namespaces read in {:.1} ms",
                    informer.reads() - before,
                    started.elapsed().as_secs_f64() * 1e3
                );
            });
        if let Err(e) = spawned {
            say!("informer: no thread to catch up ({e}): the next run reads its namespaces");
        }
    }

    /// The surveys kept of `namespaces` ([`Request::Surveys`]), and with `sockets` a copy
    /// of the nfnetlink socket of each that has one, sent after the reply.
    async fn surveys(&self, namespaces: Vec<String>, sockets: bool) -> (Reply, Vec<OwnedFd>) {
        let informer = self.informer.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let mut informer = lock(&informer);
            let kept = informer.surveys(&namespaces);
            let lent = match sockets {
                true => informer.lend(&namespaces),
                false => Vec::new(),
            };
            (kept, lent)
        })
        .await;
        match asked {
            Ok((kept, lent)) => {
                let (indices, fds): (Vec<usize>, Vec<OwnedFd>) = lent
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, fd)| Some((i, fd?)))
                    .unzip();
                let reply = Reply {
                    surveys: Some(kept),
                    lent: indices,
                    ..self.reply()
                };
                (reply, fds)
            }
            Err(e) => (self.failed(format!("surveys: {e}")), Vec::new()),
        }
    }

    /// Serve the metrics on `listen` (and nowhere else), as `x-metrics` asks.
    fn serve_metrics(&mut self, listen: Option<std::net::SocketAddr>) -> Option<String> {
        if self.metrics.as_ref().map(|(a, _)| *a) == listen {
            return None;
        }
        if let Some((_, task)) = self.metrics.take() {
            task.abort();
        }
        let addr = listen?;
        match std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(l) => {
                let task = tokio::spawn(super::metrics_http::serve(
                    l,
                    self.project.to_string(),
                    self.stats.clone(),
                ));
                say!("metrics on http://{addr}/metrics");
                self.metrics = Some((addr, task.abort_handle()));
                None
            }
            Err(e) => Some(format!("x-metrics: cannot listen on {addr}: {e}")),
        }
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
            stats: None,
            metrics: None,
            surveys: None,
            lent: Vec::new(),
        }
    }

    /// `netcompose stop|start|restart`: replies once the processes named are stopped (or
    /// started again), so that the command returns when it is done.
    async fn processes(
        &mut self,
        action: super::processes::Action,
        services: &[String],
        events: &mut tokio::sync::mpsc::UnboundedReceiver<runner::Event>,
    ) -> Reply {
        let names = self.runner.select(services);
        let errors = self.runner.control(action, &names);
        let deadline =
            tokio::time::Instant::now() + self.runner.max_grace() + Duration::from_secs(2);
        while self.runner.stopping(&names) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.runner.on_event(ev),
                _ => break,
            }
        }
        say!("{action:?} {}", names.join(" "));
        Reply {
            ok: errors.is_empty(),
            errors,
            ..self.reply()
        }
    }

    /// Stop every process: its stop signal, and SIGKILL what is left after its grace period.
    async fn shutdown(&mut self, events: &mut tokio::sync::mpsc::UnboundedReceiver<runner::Event>) {
        self.runner.begin_shutdown();
        let deadline = tokio::time::Instant::now() + self.runner.max_grace();
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

async fn main_loop(
    project: &ProjectName,
    x_run: Option<crate::kernel::cgroup::Cgroup>,
    uncontained: Option<String>,
    ready: Option<Notifier>,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let log = Arc::new(logs::LogSink::new(run_log_path(project)));
    let mut d = Daemon {
        project: project.clone(),
        resolver: resolver::server::Resolver::new(),
        runner: runner::Runner::new(log, tx, x_run),
        relays: relay::Relays::default(),
        generation: 0,
        last_errors: Vec::new(),
        uncontained,
        stats: Arc::new(stats::Collector::new(tokio::runtime::Handle::current())),
        metrics: None,
        informer: Arc::new(std::sync::Mutex::new(Informer::new(
            crate::kernel::NetnsDir::system(),
            crate::kernel::ETC_NETNS.into(),
        ))),
        catch_up_due: false,
    };
    say!(
        "netcompose daemon for project {project}, pid {}",
        std::process::id()
    );
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    d.reload(false).await;
    d.catch_up();

    let sock = socket_path(project);
    let _ = std::fs::remove_file(&sock);
    let listener =
        tokio::net::UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", sock.display()))?;
    write_atomic(
        &pid_path(project),
        format!("{}\n", std::process::id()).as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    if let Some(ready) = ready {
        ready.ready();
    }

    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                if control(&mut d, stream, &mut events).await {
                    break;
                }
                d.catch_up();
            }
            _ = hup.recv() => { d.reload(false).await; d.catch_up(); }
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

/// The informer, even if a thread panicked holding it: at worst a survey was dropped, and is
/// read again.
fn lock(informer: &std::sync::Mutex<Informer>) -> std::sync::MutexGuard<'_, Informer> {
    informer.lock().unwrap_or_else(|p| p.into_inner())
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
    let mut lent = Vec::new();
    let mut held = 0;
    let (reply, exit) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => (d.reply(), false),
        Ok(Request::Reload) => (d.reload(true).await, false),
        Ok(Request::Release { namespaces }) => (d.release(&namespaces).await, false),
        Ok(Request::Processes { action, services }) => {
            (d.processes(action, &services, events).await, false)
        }
        Ok(Request::Stats) => (
            Reply {
                stats: Some(d.stats.sample().await),
                ..d.reply()
            },
            false,
        ),
        Ok(Request::Metrics) => (
            Reply {
                metrics: Some(stats::prometheus::render(
                    d.project.as_str(),
                    &d.stats.sample().await,
                )),
                ..d.reply()
            },
            false,
        ),
        Ok(Request::Surveys {
            namespaces,
            sockets,
        }) => {
            let (reply, fds) = d.surveys(namespaces, sockets).await;
            lent = fds;
            (reply, false)
        }
        Ok(Request::Hold { sockets }) => {
            held = sockets;
            (d.reply(), false)
        }
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
    if !lent.is_empty() {
        let sent = super::lending::send(&mut reader, w.as_ref(), lent);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), sent).await {
            say!("lending sockets: {e}");
        }
    }
    if held > 0 {
        let taken = super::lending::hold(reader, w, held);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), taken).await {
            say!("holding sockets: {e}");
        }
    }
    exit
}
