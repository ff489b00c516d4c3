//! The reconciler's one handle on the kernel: an async runtime and the project's kernel
//! adapter, opened here and nowhere else, so that how the kernel is reached can change in
//! one place.

use super::ReconcileError;
use crate::apply::{self, ApplyError, Outcome};
use crate::kernel::machine::{Links, Machine, Namespaces, Ports};
use crate::kernel::Kernel;
use crate::kernel::LinkKind;
use crate::model::Resource;
use crate::observe::live::{read_ahead, Depth, ReadAhead};
use crate::plan::Change;
use crate::project_name::ProjectName;
use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

type Ahead = (
    Depth,
    tokio::task::JoinHandle<Result<ReadAhead, crate::kernel::KernelError>>,
);

/// The descriptor table's size from the start: a run holds about four descriptors per
/// namespace, so a project of about 1,000 replicas never grows it.
const DESCRIPTORS: usize = 4096;

pub(super) struct Session {
    rt: Unjoined,
    kernel: Arc<Kernel>,
    /// The first round of the next observation, being read to a depth ([`Session::read_ahead`]).
    ahead: Mutex<Option<Ahead>>,
    /// Where the tables' generations are kept between runs (see
    /// [`crate::kernel::generations`]): the project's run directory, which goes with `down`.
    generations: std::path::PathBuf,
    /// This run's own nfnetlink sockets, held by the daemon from [`Session::hand_over_sockets`]
    /// until the session is dropped: last, after the kernel's copies.
    handed: Mutex<Option<crate::daemon::Holding>>,
}

impl Session {
    pub(super) fn open(project: &ProjectName) -> Result<Session, ReconcileError> {
        Session::opened(project, None)
    }

    /// [`Session::open`] for a run that holds the project's `lock` and writes: it may borrow
    /// the daemon's sockets in the namespaces (no other process uses them meanwhile).
    pub(super) fn open_locked(
        project: &ProjectName,
        lock: &crate::state::Lock,
    ) -> Result<Session, ReconcileError> {
        Session::opened(project, Some(lock))
    }

    fn opened(
        project: &ProjectName,
        lock: Option<&crate::state::Lock>,
    ) -> Result<Session, ReconcileError> {
        // Before the runtime's threads exist (see `kernel::descriptors`).
        crate::kernel::descriptors::reserve(DESCRIPTORS);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .max_blocking_threads(blocking_threads())
            .enable_all()
            .build()
            .map_err(ReconcileError::Runtime)?;
        let mut kernel = Kernel::open(project.as_str(), rt.handle().clone())?;
        // The daemon keeps the surveys of the namespaces it serves: taken from it, not read.
        if crate::daemon::status(project) != crate::daemon::Status::Stopped {
            kernel
                .machine
                .take_surveys_from(Arc::new(crate::daemon::KeptSurveys {
                    project: project.clone(),
                    lend: lock.is_some(),
                }));
        }
        let kernel = Arc::new(kernel);
        let generations = crate::daemon::run_dir(project).join("nftables-generations");
        kernel.load_generations(&generations);
        Ok(Session {
            rt: Unjoined(ManuallyDrop::new(rt)),
            kernel,
            ahead: Mutex::new(None),
            generations,
            handed: Mutex::new(None),
        })
    }

    /// Keep what this run read or left of the tables for the next run. Only a cache: when it
    /// cannot be written (no run directory yet), the next run reads every table in full.
    pub(super) fn save_generations(&self) {
        let _ = self.kernel.save_generations(&self.generations);
    }

    /// At the end of a run that changed the kernel: hand this run's own nfnetlink sockets to
    /// the project's daemon, which closes them once the session is dropped, so that the run
    /// does not wait for the kernel to free its transactions (see [`crate::daemon::hand_over`]).
    /// Without a daemon that takes them, the session closes them itself, as before. How many
    /// were handed over.
    pub(super) fn hand_over_sockets(&self, project: &ProjectName) -> usize {
        let fds = self.kernel.own_nft_sockets();
        match crate::daemon::hand_over(project, &fds) {
            Ok(holding) => {
                *self.handed.lock().unwrap_or_else(|p| p.into_inner()) = Some(holding);
                fds.len()
            }
            Err(_) => 0,
        }
    }

    /// Start reading what the next observation to `depth` ([`Session::observe`] or
    /// [`Session::observe_outline`]) reads first (the host's links, every namespace
    /// surveyed), which needs neither the state nor the model: the kernel's work runs on the
    /// runtime's threads while the caller builds its model or stops the daemon.
    pub(super) fn read_ahead(&self, depth: Depth) {
        if depth == Depth::Full {
            self.kernel
                .machine
                .ask_ahead(&crate::observe::live::netns_prefix(&self.kernel.project));
        }
        let k = self.kernel.clone();
        let task = self.rt.spawn(async move { read_ahead(&k, depth).await });
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some((depth, task));
    }

    /// The project's live objects, rebuilt from their marks (`state` and `desired` fill in
    /// what the kernel cannot tell), from what [`Session::read_ahead`] read if it was called.
    pub(super) fn observe(
        &self,
        state: &[Resource],
        desired: &[Resource],
    ) -> Result<Vec<Resource>, ReconcileError> {
        self.observe_to(state, desired, Depth::Full)
    }

    /// What `down` deletes: the project's live objects, each namespace read only as far as
    /// deleting it needs ([`Depth::Outline`]).
    pub(super) fn observe_outline(
        &self,
        state: &[Resource],
    ) -> Result<Vec<Resource>, ReconcileError> {
        self.observe_to(state, &[], Depth::Outline)
    }

    fn observe_to(
        &self,
        state: &[Resource],
        desired: &[Resource],
        depth: Depth,
    ) -> Result<Vec<Resource>, ReconcileError> {
        let ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        let k = &*self.kernel;
        Ok(self.rt.block_on(async {
            let read = match ahead.filter(|(d, _)| *d == depth) {
                Some((_, task)) => match task.await {
                    Ok(read) => read?,
                    // The reading task panicked: read again here.
                    Err(_) => read_ahead(k, depth).await?,
                },
                None => read_ahead(k, depth).await?,
            };
            crate::observe::live::observe_read(k, read, state, desired).await
        })?)
    }

    /// The first object of `recorded` (the state's resources) that is missing on the machine:
    /// a namespace no longer pinned, or a bridge, VXLAN port or veth host end no longer on
    /// the host (None: all there). Two reads (the namespaces' directory, one link dump),
    /// whatever the project's size; what is inside the namespaces is not read.
    pub(super) fn recorded_gone(
        &self,
        recorded: &[Resource],
    ) -> Result<Option<String>, ReconcileError> {
        use crate::model::Spec;
        self.rt.block_on(async {
            let pinned: HashSet<String> = self.kernel.list_netns().await?.into_iter().collect();
            for r in recorded {
                if let Spec::Namespace(n) = &r.spec {
                    if !pinned.contains(&n.name) {
                        return Ok(Some(format!("namespace {} is gone", n.name)));
                    }
                }
            }
            let links: HashSet<String> = self
                .kernel
                .host()
                .links()
                .await?
                .into_iter()
                .map(|l| l.name)
                .collect();
            let link = recorded.iter().find_map(|r| {
                let name = match &r.spec {
                    Spec::Bridge(b) => Some(&b.name),
                    Spec::Vxlan(v) => Some(&v.name),
                    Spec::Link(l) => l.host_ifname.as_ref(),
                    Spec::Macvlan(_)
                    | Spec::External(_)
                    | Spec::Remote(_)
                    | Spec::Namespace(_)
                    | Spec::Route(_)
                    | Spec::Files(_)
                    | Spec::Vip(_)
                    | Spec::Dns(_)
                    | Spec::Firewall(_) => None,
                };
                name.filter(|n| !links.contains(*n))
            });
            Ok(link.map(|name| format!("link {name} is gone")))
        })
    }

    /// The names in `names` that no link of the host carries (external networks that were
    /// never made).
    pub(super) fn missing_links(&self, names: &[String]) -> Result<Vec<String>, ReconcileError> {
        let host = self.kernel.host();
        let mut missing = Vec::new();
        for name in names {
            if self.rt.block_on(host.link_by_name(name))?.is_none() {
                missing.push(name.clone());
            }
        }
        Ok(missing)
    }

    /// The UDP ports in `ports` that another socket holds on this host, so that a VXLAN
    /// device could not come up on them. A port an up VXLAN device already has is not taken:
    /// the kernel shares its socket between devices.
    pub(super) fn udp_ports_taken(&self, ports: &[u16]) -> Result<Vec<u16>, ReconcileError> {
        // No VXLAN port to check: no dump of the host's links (hundreds of veth host ends).
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        self.rt.block_on(async {
            let links = self.kernel.host().links().await?;
            let mut taken = Vec::new();
            for &port in ports {
                let shared = links.iter().any(|l| {
                    l.kind == LinkKind::Vxlan
                        && l.up
                        && l.vxlan.as_ref().and_then(|v| v.port) == Some(port)
                });
                if !shared && !self.kernel.udp_port_free(port).await? {
                    taken.push(port);
                }
            }
            Ok(taken)
        })
    }

    /// Set one end of a link administratively up or down (a drill).
    pub(super) fn set_link(&self, end: &super::DrillEnd, up: bool) -> Result<(), ReconcileError> {
        self.rt.block_on(async {
            let (net, name) = match end {
                super::DrillEnd::HostVeth(name) => (self.kernel.host().clone(), name),
                super::DrillEnd::Macvlan { namespace, ifname } => {
                    (self.kernel.netns(namespace).await?, ifname)
                }
            };
            let index = net
                .link_by_name(name)
                .await?
                .ok_or_else(|| ReconcileError::NoSuchLink {
                    address: name.clone(),
                    known: Vec::new(),
                })?
                .index;
            match up {
                true => net.set_up(index).await?,
                false => net.set_down(index).await?,
            }
            Ok(())
        })
    }

    pub(super) fn apply(
        &self,
        observed: &[Resource],
        desired: &[Resource],
        changes: &[Change],
        progress: apply::Progress<'_>,
    ) -> Result<Outcome, Vec<ApplyError>> {
        self.apply_when_ready(observed, desired, changes, progress, async { true })
    }

    /// [`Session::apply`], whose first operation waits for `ready` ([`apply::apply_when_ready`]).
    pub(super) fn apply_when_ready(
        &self,
        observed: &[Resource],
        desired: &[Resource],
        changes: &[Change],
        progress: apply::Progress<'_>,
        ready: impl std::future::Future<Output = bool>,
    ) -> Result<Outcome, Vec<ApplyError>> {
        self.rt.block_on(apply::apply_when_ready(
            &self.kernel,
            observed,
            desired,
            changes,
            progress,
            ready,
        ))
    }
}

/// Threads of the runtime's blocking pool. What runs there is mostly the kernel's work (a
/// namespace made, an nfnetlink batch committed), so a few per CPU keep it busy; tokio's
/// default (512) let 32 operations at once start 32 threads, each paying for its
/// creation and for the first touch of its own allocator pages and receive buffers (in a
/// scale's 200 table updates, more time went to zeroing fresh pages than to encoding).
fn blocking_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// The session's runtime, which its drop stops without waiting for its threads to end. By
/// then its writes are over (an apply waits for every operation it started, failed or not);
/// at most a read ahead that no observation took is still reading. A runtime dropped the
/// usual way wakes each of its idle threads and waits for it to exit: 1-3 ms at the end of an
/// `up` of 200 replicas, before the process could exit and take the threads with it.
struct Unjoined(ManuallyDrop<tokio::runtime::Runtime>);

impl Deref for Unjoined {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        &self.0
    }
}

impl Drop for Unjoined {
    fn drop(&mut self) {
        // SAFETY: the runtime is taken once, here, and the field is not used after it.
        let rt = unsafe { ManuallyDrop::take(&mut self.0) };
        rt.shutdown_background();
    }
}

/// Whether a namespace of this name is pinned on the machine (`ls` counts the live ones
/// without opening a session per project).
pub(super) fn namespace_exists(name: &str) -> bool {
    std::path::Path::new(crate::kernel::netns::DEFAULT_DIR)
        .join(name)
        .exists()
}
