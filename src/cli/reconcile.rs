//! The CLI's side of the reconciler: the root check, the store of this machine, the events of
//! a run printed on the terminal, and its errors turned into miette reports.

use super::progress::{self, Live};
use super::Global;
use crate::load::LoadOptions;
use crate::model::cluster::ClusterView;
use crate::plan::Summary;
use crate::project_name::ProjectName;
use crate::reconcile::{
    self, Applied, Baseline, DaemonEvent, Events, Planning, Purpose, ReconcileError,
};
use crate::state::{url, EtcdStore, FileStore, Store, StoreUrl};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

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

/// The store `--store` (or NETCOMPOSE_STORE) names, opened once per run by [`open_store`].
static STORE: OnceLock<Box<dyn Store>> = OnceLock::new();
/// The same store when it is etcd (a cluster), and whether it is reached over TLS.
static CLUSTER: OnceLock<(EtcdStore, bool)> = OnceLock::new();

/// Parse the store URL and open the store (nothing is contacted yet): a bad URL, a TLS file
/// that cannot be read or a user without a password stops the command here.
pub fn open_store(url: Option<&str>) -> miette::Result<()> {
    let store: Box<dyn Store> = match url::parse(url).map_err(|e| miette::Report::new(*e))? {
        StoreUrl::File { root } => Box::new(FileStore::new(root)),
        StoreUrl::Etcd(etcd) => {
            let password = std::env::var(url::PASSWORD_ENV).ok();
            let opened = EtcdStore::open(&etcd, password).map_err(|e| {
                miette::miette!(
                    help = "check --store (or NETCOMPOSE_STORE) and NETCOMPOSE_STORE_PASSWORD",
                    "{e}"
                )
            })?;
            let (store, _) = CLUSTER.get_or_init(|| (opened, etcd.tls.is_some()));
            Box::new(store)
        }
    };
    let _ = STORE.set(store);
    Ok(())
}

/// The store of this run: the one [`open_store`] opened, else this machine's files.
pub fn store() -> &'static dyn Store {
    STORE.get_or_init(|| Box::new(FileStore::system())).as_ref()
}

/// The cluster's store (etcd) and whether it is reached over TLS; None with the file store.
pub fn cluster() -> Option<&'static (EtcdStore, bool)> {
    CLUSTER.get()
}

/// The plan of the file(s) against `against`, else the live machine as root, else the state.
pub fn planning(global: &Global, against: Option<&Path>) -> miette::Result<Planning> {
    planning_with(&global.load_options(), against)
}

/// [`planning`] with load options of the command's own (`up --scale`).
pub fn planning_with(opts: &LoadOptions, against: Option<&Path>) -> miette::Result<Planning> {
    planning_on(opts, against, None, Purpose::Document)
}

/// [`planning_with`] of this host's share of a cluster project (`--cluster-view`), for
/// `purpose` (a plan only printed as text leaves out what the daemon will serve).
pub fn planning_on(
    opts: &LoadOptions,
    against: Option<&Path>,
    cluster: Option<&ClusterView>,
    purpose: Purpose,
) -> miette::Result<Planning> {
    let baseline = match against {
        Some(path) => Baseline::File(path.to_path_buf()),
        None if is_root() => Baseline::Live,
        None => Baseline::State,
    };
    reconcile::plan_for(
        &store(),
        opts,
        &baseline,
        cluster,
        purpose,
        &Terminal::new(),
    )
    .map_err(report)
}

/// Prints a run's events: results on stdout, the rest on stderr. On a terminal, a live status
/// line while the kernel is changed (progress.rs) and a line for each resource that was slow;
/// where no live line can be drawn (`TERM=dumb`, `NO_COLOR`), a line per resource; piped,
/// neither (the summary line says it all).
pub struct Terminal {
    verbose: bool,
    live: Option<Live>,
}

impl Terminal {
    pub fn new() -> Terminal {
        let terminal = std::io::stderr().is_terminal();
        Terminal {
            verbose: terminal,
            live: progress::wanted(terminal).then(Live::new),
        }
    }

    /// A line on stderr, with the status line out of its way.
    fn say(&self, line: &str) {
        match &self.live {
            Some(live) => live.say(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Events for Terminal {
    fn warning(&self, message: &str) {
        self.say(&format!("warning: {message}"));
    }

    fn waiting_for_lock(&self, project: &ProjectName) {
        self.say(&format!(
            "Waiting for another netcompose working on project {project}..."
        ));
    }

    fn drift(&self, change: &crate::plan::Change) {
        self.say(&format!(
            "drift: {} {}",
            change.address,
            change.reason.as_deref().unwrap_or_default()
        ));
    }

    fn applying(&self, s: &Summary) {
        self.say(&format!(
            "Applying: {} to add, {} to change, {} to destroy.",
            s.add, s.change, s.destroy
        ));
    }

    fn operations(&self, total: usize) {
        if let Some(live) = &self.live {
            live.begin(total);
        }
    }

    fn started(&self, _symbol: &str, address: &str) {
        if let Some(live) = &self.live {
            live.started(address);
        }
    }

    fn progress(&self, symbol: &str, address: &str, took: Duration) {
        let line = format!("  {symbol} {address} ({} ms)", took.as_millis());
        if let Some(live) = self.live.as_ref().filter(|l| l.active()) {
            live.done(address);
            if took >= progress::SLOW {
                live.say(|| eprintln!("{line}"));
            }
        } else if self.verbose {
            self.say(&line);
        }
    }

    fn applied(&self, applied: &Applied) {
        if let Some(live) = &self.live {
            live.finish();
        }
        match applied {
            Applied::NoChanges => println!("No changes."),
            Applied::Up(o) => println!(
                "Applied in {} ms: {} created, {} changed, {} destroyed.",
                o.elapsed.as_millis(),
                o.created,
                o.updated,
                o.deleted
            ),
            Applied::Down { project, outcome } => println!(
                "Removed project {project} in {} ms: {} objects destroyed.",
                outcome.elapsed.as_millis(),
                outcome.deleted
            ),
        }
    }

    fn daemon(&self, event: &DaemonEvent) {
        match event {
            DaemonEvent::Stopped {
                pid,
                nothing_to_serve: true,
            } => self.say(&format!("Daemon: stopped (pid {pid}): nothing to serve.")),
            DaemonEvent::Stopped {
                pid,
                nothing_to_serve: false,
            } => self.say(&format!("Daemon: stopped (pid {pid}).")),
            DaemonEvent::Serving {
                action,
                pid,
                namespaces,
                processes,
                errors,
            } => {
                self.say(&format!(
                    "Daemon: {action} (pid {pid}): DNS in {namespaces} namespaces, {processes} processes."
                ));
                for e in errors {
                    self.say(&format!("warning: daemon: {e}"));
                }
            }
            DaemonEvent::NotUpdated { project } => self.say(&format!(
                "warning: the plan of {project} carries no daemon configuration (plan format 1.0); the daemon (DNS, x-run) was not updated"
            )),
        }
    }
}

/// The report a failed run ends with; diagnostics and per-operation errors are printed first.
pub fn report(e: ReconcileError) -> miette::Report {
    match e {
        ReconcileError::Load(e) => e.into(),
        ReconcileError::Name(e) => e.into(),
        ReconcileError::Invalid { diags, sources } => {
            for w in &diags.warnings {
                eprintln!("warning: {w}");
            }
            super::failure(&diags, &sources)
        }
        ReconcileError::OthersUnreadable(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            miette::miette!(
                help = "repair or remove that state file; if the project is gone, `netcompose -p NAME down` clears it",
                "{}",
                ReconcileError::OthersUnreadable(errors)
            )
        }
        e @ ReconcileError::NotAPlanOrState { .. } => miette::miette!(
            help = "--against takes a Compose file, a plan saved with --out, or a state file",
            "{e}"
        ),
        e @ ReconcileError::ExternalMissing(_) => miette::miette!(
            help = "create the network (a bridge of that name) first; nothing was built",
            "{e}"
        ),
        ReconcileError::NoSuchLink { address, known } => {
            let hint = match known.is_empty() {
                true => {
                    "is the project up? `netcompose ps` lists its replicas and networks".to_string()
                }
                false => format!("its links: {}", known.join(", ")),
            };
            miette::miette!(help = hint, "the project has no link {address}")
        }
        e @ ReconcileError::StalePlan => {
            miette::miette!(help = "make a new plan with `netcompose plan --out`", "{e}")
        }
        ReconcileError::Apply(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            miette::miette!(
                help = "run the command again: it picks up where this one stopped",
                "{}",
                ReconcileError::Apply(errors)
            )
        }
        e @ ReconcileError::Daemon(_) => miette::miette!(
            help = "see /run/netcompose/<project>/daemon.log; run `netcompose up` again",
            "{e}"
        ),
        ReconcileError::Cluster(e) => cluster_report(e),
        e @ (ReconcileError::State(_)
        | ReconcileError::Host(_)
        | ReconcileError::Read { .. }
        | ReconcileError::NotAPlan { .. }
        | ReconcileError::InconsistentPlan { .. }
        | ReconcileError::Runtime(_)
        | ReconcileError::Kernel(_)
        | ReconcileError::Graph(_)
        | ReconcileError::DaemonStop(_)) => miette::miette!("{e}"),
    }
}

fn cluster_report(e: reconcile::agent::ClusterError) -> miette::Report {
    use reconcile::agent::ClusterError as E;
    let help = match &e {
        E::NoLiveNodes => {
            "start `netcompose --store URL agent --node NAME` on each host (see the README's multi-host section); `netcompose nodes` lists the live ones"
        }
        E::NotConverged { .. } => {
            "the agents keep working; `netcompose ps` shows each node's converged revision, the agent's stderr why it is behind"
        }
        E::Failed { .. } => "fix the cause on that node and run `up` again",
        E::Spec { .. } => "the files must be readable by `up`",
    };
    miette::miette!(help = help, "{e}")
}

/// Each node's progress in a cluster `up` or `down`, a line on stderr as it changes.
pub struct NodeLines;

impl reconcile::agent::ClusterProgress for NodeLines {
    fn node(&self, node: &str, state: &reconcile::agent::NodeState) {
        use reconcile::agent::NodeState as S;
        let what = match state {
            S::Waiting { reported: None } => "waiting".to_string(),
            S::Waiting { reported: Some(r) } => format!("waiting (at revision {r})"),
            S::Converged { revision } => format!("converged (revision {revision})"),
            S::Failed { errors } => format!("failed: {}", errors.join("; ")),
            S::Lost => "lost its lease".to_string(),
            S::Removed => "removed".to_string(),
        };
        eprintln!("  node {node}: {what}");
    }
}
