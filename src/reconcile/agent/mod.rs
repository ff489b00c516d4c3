//! A cluster's control plane on top of the one reconciler: [`run`] is one host's agent (its
//! node on a lease, list then watch, placement, this host's share built with
//! [`up_with`](super::up_with), its status reported), and `cluster.rs` is `up`,
//! `down` and the wait for the agents' reports. What is computed from a snapshot of the
//! store is in `share.rs` (pure); how a project travels to the agents is `spec.rs`; the
//! host's WireGuard end for encrypted overlays (keys, tunnel address, one device) is
//! `tunnel.rs`.

mod cluster;
mod global;
mod plan;
mod probe;
mod prober;
mod project;
mod share;
mod spec;
mod tunnel;

pub use cluster::{
    cluster_status, down_cluster, node_list, up_cluster, ClusterProgress, ClusterStatus, NodeInfo,
    NodeState,
};
pub use plan::{plan_cluster, ClusterPlan, NodePlan, ReplicaChange, ReplicaPlan};

use super::Events;
use crate::kernel::wireguard::Tunnel;
use crate::state::cluster::{
    encode, node_key, ClusterKv, ClusterSnapshot, NodeRecord, Watched, ROOT,
};
use crate::state::{StateError, Store};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a burst of events may last before the agent reconciles (it waits for this much
/// quiet, at most [`DEBOUNCE_MAX`]).
const DEBOUNCE: Duration = Duration::from_millis(20);
const DEBOUNCE_MAX: Duration = Duration::from_millis(200);
/// How often a waiting agent checks whether it should stop or re-register.
const TICK: Duration = Duration::from_millis(100);
/// A store that cannot be read is tried again after this.
const RETRY: Duration = Duration::from_secs(1);

/// Why a cluster command failed.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("no node of the cluster is live: no `netcompose agent` holds a lease in the store")]
    NoLiveNodes,
    #[error("{} node{} did not converge within {} s: {}", .nodes.len(), if .nodes.len() == 1 { "" } else { "s" }, .timeout.as_secs(), show(.nodes))]
    NotConverged {
        timeout: Duration,
        nodes: Vec<(String, String)>,
    },
    #[error("{} node{} failed: {}", .nodes.len(), if .nodes.len() == 1 { "" } else { "s" }, show(.nodes))]
    Failed { nodes: Vec<(String, String)> },
    #[error("cannot keep the project's files for the agents at {path}: {source}")]
    Spec {
        path: String,
        source: std::io::Error,
    },
}

fn show(nodes: &[(String, String)]) -> String {
    nodes
        .iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub record: NodeRecord,
    /// The lease's TTL, in seconds.
    pub ttl: i64,
    /// Root-only: the persisted lease id and each project's materialised files.
    pub dir: PathBuf,
}

/// What the agent tells its operator (the reconciler's own events go to an [`Events`]).
pub trait AgentLog: Sync {
    fn info(&self, line: &str);
}

/// Run the agent until `stop` is set: with `local`, the store of what this host applied, and
/// `tunnel` this host's WireGuard device, or why it has none (then its encrypted networks
/// fail here, saying so).
#[allow(clippy::too_many_arguments)]
pub fn run(
    kv: &dyn ClusterKv,
    local: &dyn Store,
    cfg: &AgentConfig,
    tunnel: Result<Box<dyn Tunnel>, String>,
    events: &dyn Events,
    log: &dyn AgentLog,
    stop: &AtomicBool,
) -> Result<(), StateError> {
    create_private(&cfg.dir).map_err(|source| StateError::Write {
        path: cfg.dir.display().to_string(),
        source,
    })?;
    let mut mesh = match tunnel {
        Ok(t) => Ok(tunnel::Mesh::start(kv, &cfg.node, &cfg.dir, t, log)?),
        Err(why) => {
            log.info(&format!(
                "no WireGuard on this host ({why}): encrypted networks are not built here"
            ));
            Err(why)
        }
    };
    let cfg = &AgentConfig {
        record: NodeRecord {
            wireguard: mesh.as_ref().ok().map(tunnel::Mesh::record),
            ..cfg.record.clone()
        },
        ..cfg.clone()
    };
    let lease = AtomicI64::new(attach(kv, cfg, log)?);
    let lost = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| keep_alive(kv, cfg, &lease, &lost, stop, log));
        s.spawn(|| prober::run(kv, cfg, &lease, stop, log));
        let mut agent = project::Agent::new(kv, local, cfg, events, log);
        agent.set_tunnel(mesh.as_ref().map(tunnel::Mesh::end).map_err(Clone::clone));
        let result = watch_loop(
            kv,
            cfg,
            &mut agent,
            mesh.as_mut().ok(),
            &lease,
            &lost,
            stop,
            log,
        );
        stop.store(true, Ordering::SeqCst);
        result
    })
}

fn create_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn lease_file(cfg: &AgentConfig) -> PathBuf {
    cfg.dir.join("lease")
}

/// The lease of the previous run if it is still alive (a restart within the TTL removes
/// nothing anywhere), else a new one; persisted either way.
fn attach(kv: &dyn ClusterKv, cfg: &AgentConfig, log: &dyn AgentLog) -> Result<i64, StateError> {
    let old = std::fs::read_to_string(lease_file(cfg))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    if let Some(id) = old {
        if kv.keep_alive(id)?.is_some() {
            log.info(&format!("re-attached lease {id:x}"));
            return Ok(id);
        }
    }
    grant(kv, cfg, log)
}

fn grant(kv: &dyn ClusterKv, cfg: &AgentConfig, log: &dyn AgentLog) -> Result<i64, StateError> {
    let id = kv.grant(cfg.ttl)?;
    let path = lease_file(cfg);
    write_private(&path, id.to_string().as_bytes()).map_err(|source| StateError::Write {
        path: path.display().to_string(),
        source,
    })?;
    log.info(&format!("granted lease {id:x} (TTL {} s)", cfg.ttl));
    Ok(id)
}

pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    std::fs::rename(tmp, path)
}

/// Renew the lease every third of its TTL; when it is gone (the store lost it while this
/// host was cut off), take a new one and say so through `lost`, so that the loop puts its
/// keys again.
fn keep_alive(
    kv: &dyn ClusterKv,
    cfg: &AgentConfig,
    lease: &AtomicI64,
    lost: &AtomicBool,
    stop: &AtomicBool,
    log: &dyn AgentLog,
) {
    let every = Duration::from_millis((cfg.ttl.max(1) * 1000 / 3) as u64);
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK.min(next.saturating_duration_since(Instant::now())));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + every;
        match kv.keep_alive(lease.load(Ordering::SeqCst)) {
            Ok(Some(_)) => {}
            Ok(None) => {
                log.info("lease lost; registering again");
                match grant(kv, cfg, log) {
                    Ok(id) => {
                        lease.store(id, Ordering::SeqCst);
                        lost.store(true, Ordering::SeqCst);
                    }
                    Err(e) => log.info(&format!("cannot grant a lease: {e}")),
                }
            }
            Err(e) => log.info(&format!("keep-alive failed: {e}")),
        }
    }
}

/// Put this node's key unless it holds exactly this record on this lease: whether it wrote.
fn register(
    kv: &dyn ClusterKv,
    cfg: &AgentConfig,
    snapshot: &ClusterSnapshot,
    lease: i64,
) -> Result<bool, StateError> {
    let key = node_key(&cfg.node);
    let value = encode(&key, &cfg.record)?;
    let current = snapshot.nodes.get(&cfg.node);
    if current.is_some_and(|n| n.lease == lease && n.record.raw == value) {
        return Ok(false);
    }
    kv.commit_on(
        Some(lease),
        &[],
        &[crate::state::kv::Op::Put { key, value }],
    )?;
    Ok(true)
}

/// List, reconcile (the tunnel's peers, then each project), then wait for the next change
/// (from the listed revision + 1; a compacted or broken watch lists again; a tunnel that
/// refused its peers is tried again after [`RETRY`]).
#[allow(clippy::too_many_arguments)]
fn watch_loop(
    kv: &dyn ClusterKv,
    cfg: &AgentConfig,
    agent: &mut project::Agent<'_>,
    mut mesh: Option<&mut tunnel::Mesh>,
    lease: &AtomicI64,
    lost: &AtomicBool,
    stop: &AtomicBool,
    log: &dyn AgentLog,
) -> Result<(), StateError> {
    let mut watch: Option<Receiver<Watched>> = None;
    while !stop.load(Ordering::SeqCst) {
        if lost.swap(false, Ordering::SeqCst) {
            agent.forget();
        }
        let snapshot = match ClusterSnapshot::read(kv) {
            Ok(s) => s,
            Err(e) => {
                log.info(&format!("cannot read the store: {e}"));
                watch = None;
                std::thread::sleep(RETRY);
                continue;
            }
        };
        for e in &snapshot.unreadable {
            log.info(&format!("ignored: {e}"));
        }
        let id = lease.load(Ordering::SeqCst);
        match register(kv, cfg, &snapshot, id) {
            // A snapshot without this node live would place its replicas elsewhere (or
            // leave them pending) and take them down here: list again with it registered,
            // so that replicas it still runs (a host back from a cut) are placed on it again.
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => log.info(&format!("cannot register node {}: {e}", cfg.node)),
        }
        let tunnel_ok = mesh
            .as_mut()
            .is_none_or(|m| m.converge(&snapshot, &cfg.node, cfg.record.underlay_mtu, log));
        agent.converge(&snapshot, id);
        if !tunnel_ok {
            std::thread::sleep(RETRY);
            continue;
        }
        if watch.is_none() {
            match kv.watch(ROOT, snapshot.revision + 1) {
                Ok(rx) => watch = Some(rx),
                Err(e) => log.info(&format!("cannot watch the store: {e}")),
            }
        }
        let Some(rx) = &watch else {
            std::thread::sleep(RETRY);
            continue;
        };
        if !wait(rx, stop, lost, log) {
            watch = None;
        }
    }
    Ok(())
}

/// Wait for a burst of changes to end (or for a stop or a lost lease): false when the watch
/// must be opened again.
fn wait(rx: &Receiver<Watched>, stop: &AtomicBool, lost: &AtomicBool, log: &dyn AgentLog) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) || lost.load(Ordering::SeqCst) {
            return true;
        }
        match rx.recv_timeout(TICK) {
            Ok(Watched::Changed { .. }) => break,
            Ok(Watched::Compacted) => {
                log.info("the store compacted past the watch; listing again");
                return false;
            }
            Ok(Watched::Ended(why)) => {
                log.info(&format!("the watch ended ({why}); listing again"));
                return false;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    let until = Instant::now() + DEBOUNCE_MAX;
    loop {
        match rx.recv_timeout(DEBOUNCE.min(until.saturating_duration_since(Instant::now()))) {
            Ok(Watched::Changed { .. }) if Instant::now() < until => {}
            Ok(Watched::Changed { .. }) | Err(RecvTimeoutError::Timeout) => return true,
            Ok(Watched::Compacted | Watched::Ended(_)) | Err(RecvTimeoutError::Disconnected) => {
                return false
            }
        }
    }
}

#[cfg(test)]
mod tests;
