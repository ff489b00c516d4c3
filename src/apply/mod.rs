//! The `apply` stage: walk the changes in dependency order, deletes first (the reverse of the
//! old graph, a wave of independent resources at a time), then creates and updates along the
//! new graph, each as soon as its dependencies are done ([`flow`]). Each operation is
//! idempotent enough that an interrupted run, run again, converges: the next `observe` sees
//! what the last one left, by its ownership marks.

#[cfg(test)]
mod expand_tests;
mod flow;
mod ops;
mod overlay;
mod qos;

use crate::graph;
use crate::kernel::machine::Links;
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::tables::replica::{vip_maps_changed, Expander};
use crate::model::{Resource, ResourceId, Spec};
use crate::plan::{Action, Change};
// aHash rather than std's SipHash: the sets of a run's changes are asked about every resource
// of both lists, several times over; hashing the ids with SipHash took about 5% of the main
// thread of a scale of 200 replicas. The ids come from the project's own file.
use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use futures::stream::{self, StreamExt};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How many operations of a wave run at once.
const PARALLEL: usize = 32;

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("{address}: {source}")]
    Kernel {
        address: String,
        source: KernelError,
    },
    #[error("{address}: {object} exists and is not this project's; netcompose never touches it")]
    NotOurs { address: String, object: String },
    #[error("{address}: {object} does not exist")]
    Missing { address: String, object: String },
    #[error("{address}: {message}")]
    Internal { address: String, message: String },
    /// A VXLAN device cannot come up: another socket holds its UDP port on this host.
    #[error("{address}: UDP port {port} (VXLAN) is already in use on this host")]
    VxlanPortInUse { address: String, port: u16 },
    #[error(transparent)]
    Graph(#[from] graph::CycleError),
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub elapsed: Duration,
}

/// What a run reports as it goes, so that a front end can show how far it is and what is
/// in flight. Symbols are `+` (create), `~` (update) and `-` (delete).
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// The operations this run does, before the first; each then starts and ends once.
    Planned(usize),
    Started {
        symbol: &'a str,
        address: &'a str,
    },
    Done {
        symbol: &'a str,
        address: &'a str,
        took: Duration,
    },
}

/// Where the [`Step`]s of a run go.
pub type Progress<'a> = &'a (dyn Fn(Step<'_>) + Sync);

/// Apply `changes` (computed from `observed` to `desired`).
pub async fn apply<M: Machine>(
    k: &Kernel<M>,
    observed: &[Resource],
    desired: &[Resource],
    changes: &[Change],
    progress: Progress<'_>,
) -> Result<Outcome, Vec<ApplyError>> {
    apply_when_ready(k, observed, desired, changes, progress, async { true }).await
}

/// [`apply`], whose first operation waits for `ready`: what the caller must finish before
/// the kernel changes (the state saved with the run's allocations) runs meanwhile with the
/// working out of what to do. When `ready` gives false, nothing is done.
pub async fn apply_when_ready<M: Machine>(
    k: &Kernel<M>,
    observed: &[Resource],
    desired: &[Resource],
    changes: &[Change],
    progress: Progress<'_>,
    ready: impl std::future::Future<Output = bool>,
) -> Result<Outcome, Vec<ApplyError>> {
    let start = Instant::now();
    // The sweep reads, and removes leftovers, on the blocking pool: polled once here, its
    // listings of the pins and of /etc/netns run while this thread works out what to do (2-3
    // ms for a scale of 200 replicas), where they used to be waited for after that work.
    let mut sweeping = std::pin::pin!(sweep(k));
    let swept = futures::poll!(sweeping.as_mut()).is_ready();
    let mut out = Outcome::default();
    let (deletes, creates, updates) = (
        with_action(changes, Action::Delete),
        with_action(changes, Action::Create),
        with_action(changes, Action::Update),
    );
    let mut updates = updates;
    updates.extend(
        vip_maps_changed(observed, desired)
            .into_iter()
            .filter(|a| !creates.contains(a) && !deletes.contains(a)),
    );
    let rebuilt = taken_along(observed, desired, &deletes, &creates);
    let gone = deleted_namespaces(observed, &deletes);
    let (observed_graph, desired_graph) = (graph::build(observed), graph::build(desired));
    // Replica tables name their networks' VIPs; the kernel needs the chains themselves, in
    // the tables this run updates or builds. Each is spelled out when it is written, and
    // freed after: spelled out all at once before the first write, the 2 x 202 tables of a
    // scale took 1.6 ms and 1.5 MB of fresh memory.
    let (old_vips, new_vips) = (Expander::new(observed), Expander::new(desired));
    let compiled = ops::Compiled::default();
    let built = |r: &&Resource| {
        creates.contains(&r.address) || updates.contains(&r.address) || rebuilt.contains(&r.address)
    };
    let (observed, desired): (Vec<&Resource>, Vec<&Resource>) =
        (observed.iter().collect(), desired.iter().collect());
    let old: HashMap<&ResourceId, &Resource> = observed.iter().map(|r| (&r.address, *r)).collect();
    // What goes with the deleted namespaces counts as deleted; the veth host ends are waited
    // for (they must be gone before a link of the same name is created again).
    let with_namespaces: Vec<&Resource> = observed
        .iter()
        .copied()
        .filter(|r| deletes.contains(&r.address) && inside_gone(r, &gone))
        .collect();
    let host_ends: Vec<&Resource> = with_namespaces
        .iter()
        .copied()
        .filter(|r| matches!(&r.spec, Spec::Link(l) if l.host_ifname.is_some()))
        .collect();
    // Which resources are destroyed and which built, looked up once each.
    let destroyed: Vec<bool> = observed
        .iter()
        .map(|r| deletes.contains(&r.address) && !inside_gone(r, &gone))
        .collect();
    let marked: Vec<bool> = desired.iter().map(built).collect();
    if !ready.await {
        return Ok(Outcome::default());
    }
    let count = |flags: &[bool]| flags.iter().filter(|f| **f).count();
    progress(Step::Planned(
        count(&destroyed) + host_ends.len() + count(&marked),
    ));
    if !swept {
        sweeping.await;
    }

    let timings = Timings::from_env();
    let doomed: Vec<&Resource> = observed
        .iter()
        .zip(&destroyed)
        .filter_map(|(r, d)| d.then_some(*r))
        .collect();
    let surveyed = &ops::survey_namespaces(k, &doomed).await;
    for wave in observed_graph.map_err(|e| vec![e.into()])?.destroy_waves() {
        let todo: Vec<&Resource> = wave
            .into_iter()
            .filter(|i| destroyed[*i])
            .map(|i| observed[i])
            .collect();
        let t = timings.start(&todo);
        // The namespaces first, then let go of: the kernel frees them while the rest of the
        // wave (a bridge releasing its ports, each after an RCU grace period) is deleted.
        let (namespaces, rest): (Vec<&Resource>, Vec<&Resource>) = todo
            .into_iter()
            .partition(|r| matches!(r.spec, Spec::Namespace(_)));
        let delete = |r| async move { timed("-", r, progress, ops::delete(k, r, surveyed)).await };
        let first = run(namespaces, delete).await;
        k.let_go();
        out.deleted += both(first, run(rest, delete).await)?;
        timings.phase("destroy wave", t);
    }
    let t = timings.start(&host_ends);
    out.deleted += with_namespaces.len() - host_ends.len();
    out.deleted += reap(k, &host_ends, progress).await?;
    timings.phase("reap", t);
    let graph = desired_graph.map_err(|e| vec![e.into()])?;
    let todo: Vec<&Resource> = desired
        .iter()
        .zip(&marked)
        .filter_map(|(r, m)| m.then_some(*r))
        .collect();
    let t = timings.start(&todo);
    let contention: Vec<flow::Contention> = desired.iter().map(|r| contention(&r.spec)).collect();
    let n = flow::flow(&graph, &marked, &contention, |i| {
        let r = desired[i];
        let prev = old
            .get(&r.address)
            .copied()
            .filter(|_| updates.contains(&r.address) && !rebuilt.contains(&r.address));
        let (old_vips, new_vips, compiled) = (&old_vips, &new_vips, &compiled);
        async move {
            let new = new_vips.expand(r);
            match prev {
                Some(p) => {
                    let old = old_vips.expand(p);
                    timed("~", r, progress, ops::update(k, &old, &new, compiled)).await
                }
                None => timed("+", r, progress, ops::create(k, &new, compiled)).await,
            }
        }
    })
    .await?;
    let upd = todo
        .iter()
        .filter(|r| updates.contains(&r.address) && !rebuilt.contains(&r.address))
        .count();
    out.updated += upd;
    out.created += n - upd;
    timings.phase("build", t);
    out.elapsed = start.elapsed();
    Ok(out)
}

/// What the operation on `spec` waits for in the kernel besides the CPU.
fn contention(spec: &Spec) -> flow::Contention {
    use flow::Contention::{MachineWide, OwnOnly};
    match spec {
        Spec::Firewall(_) | Spec::Files(_) => OwnOnly,
        // The daemon serves these: no kernel work of their own.
        Spec::Vip(_) | Spec::Dns(_) => OwnOnly,
        Spec::Namespace(_)
        | Spec::Bridge(_)
        | Spec::Link(_)
        | Spec::Route(_)
        | Spec::Macvlan(_)
        | Spec::External(_)
        | Spec::Vxlan(_)
        | Spec::Remote(_) => MachineWide,
    }
}

/// One operation, reported as it starts and when it is done.
async fn timed(
    symbol: &str,
    r: &Resource,
    progress: Progress<'_>,
    op: impl std::future::Future<Output = Result<(), ApplyError>>,
) -> Result<(), ApplyError> {
    progress(Step::Started {
        symbol,
        address: &r.address.to_string(),
    });
    done(symbol, r, progress, op).await
}

/// One operation already reported as started, reported when it is done.
async fn done(
    symbol: &str,
    r: &Resource,
    progress: Progress<'_>,
    op: impl std::future::Future<Output = Result<(), ApplyError>>,
) -> Result<(), ApplyError> {
    let t = Instant::now();
    let result = op.await;
    if result.is_ok() {
        progress(Step::Done {
            symbol,
            address: &r.address.to_string(),
            took: t.elapsed(),
        });
    }
    result
}

/// Run one wave, `PARALLEL` at a time; every failure of the wave is reported.
async fn run<'r, F, Fut>(todo: Vec<&'r Resource>, op: F) -> Result<usize, Vec<ApplyError>>
where
    F: Fn(&'r Resource) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApplyError>>,
{
    let n = todo.len();
    let errors: Vec<ApplyError> = stream::iter(todo)
        .map(op)
        .buffer_unordered(PARALLEL)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if errors.is_empty() {
        Ok(n)
    } else {
        Err(errors)
    }
}

/// What two groups of operations did together: how many were done, or every error of both.
fn both(
    a: Result<usize, Vec<ApplyError>>,
    b: Result<usize, Vec<ApplyError>>,
) -> Result<usize, Vec<ApplyError>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a + b),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(mut a), Err(b)) => {
            a.extend(b);
            Err(a)
        }
    }
}

/// The addresses of the changes that take `action`.
fn with_action(changes: &[Change], action: Action) -> HashSet<&ResourceId> {
    changes
        .iter()
        .filter(|c| c.actions.contains(&action))
        .map(|c| &c.address)
        .collect()
}

/// The names of the namespaces of `observed` that `changes` delete (or replace).
pub fn namespaces_deleted<'a>(observed: &'a [Resource], changes: &[Change]) -> HashSet<&'a str> {
    deleted_namespaces(observed, &with_action(changes, Action::Delete))
}

/// Namespaces being deleted: what lives inside them goes with them.
fn deleted_namespaces<'a>(
    observed: &'a [Resource],
    deletes: &HashSet<&ResourceId>,
) -> HashSet<&'a str> {
    observed
        .iter()
        .filter(|r| deletes.contains(&r.address))
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.as_str()),
            _ => None,
        })
        .collect()
}

/// Routes, links, nft tables and files of a namespace that is deleted need no work of their
/// own: the kernel takes them away with the namespace (and the namespace's deletion removes
/// its /etc/netns files). A veth goes as a pair, so its host end goes too, once the kernel has
/// freed the namespace, which it does asynchronously: see [`reap`].
fn inside_gone(r: &Resource, gone: &HashSet<&str>) -> bool {
    namespace_of(&r.spec).is_some_and(|ns| gone.contains(ns))
}

/// The replica namespace `spec` lives in (None: the host, or no kernel object).
fn namespace_of(spec: &Spec) -> Option<&str> {
    match spec {
        Spec::Route(rt) => Some(&rt.namespace),
        Spec::Link(l) => Some(&l.namespace),
        Spec::Files(f) => Some(&f.namespace),
        Spec::Firewall(f) => f.namespace.as_deref(),
        Spec::Bridge(_)
        | Spec::Macvlan(_)
        | Spec::External(_)
        | Spec::Vxlan(_)
        | Spec::Remote(_)
        | Spec::Namespace(_)
        | Spec::Vip(_)
        | Spec::Dns(_) => None,
    }
}

/// Wait until the kernel has freed the deleted namespaces and, with them, the host ends of
/// their veths (`links`, by address and host-side name); delete explicitly whatever is still
/// there once the kernel stops making progress (a process that still holds a namespace keeps
/// it alive). Freeing namespaces in one batch is much cheaper for the kernel than deleting each
/// veth: every link deletion waits for an RCU grace period under the RTNL lock, while the
/// namespace cleanup unregisters all the devices of all dying namespaces at once. The wait is
/// the kernel's, not the polling's: the link dump queues for the RTNL lock that the cleanup
/// holds while it unregisters a batch, and returns as soon as the batch is done.
async fn reap<M: Machine>(
    k: &Kernel<M>,
    links: &[&Resource],
    progress: Progress<'_>,
) -> Result<usize, Vec<ApplyError>> {
    let host_name = |r: &Resource| match &r.spec {
        Spec::Link(l) => l.host_ifname.clone().unwrap_or_default(),
        _ => String::new(),
    };
    // Each host end is in flight from now: the kernel frees it (once the run lets go of the
    // deleted namespaces, all at once), or it is deleted below.
    k.let_go();
    let started = Instant::now();
    for r in links {
        progress(Step::Started {
            symbol: "-",
            address: &r.address.to_string(),
        });
    }
    let mut left: Vec<&Resource> = links.to_vec();
    let mut last_progress = Instant::now();
    while !left.is_empty() && last_progress.elapsed() < REAP_PATIENCE {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let present: HashSet<String> = match k.host().links().await {
            Ok(l) => l.into_iter().map(|l| l.name).collect(),
            Err(_) => break,
        };
        let before = left.len();
        left.retain(|r| present.contains(&host_name(r)));
        if left.len() < before {
            last_progress = Instant::now();
        }
    }
    let gone = links.len() - left.len();
    for r in links
        .iter()
        .filter(|r| !left.iter().any(|x| x.address == r.address))
    {
        progress(Step::Done {
            symbol: "-",
            address: &r.address.to_string(),
            took: started.elapsed(),
        });
    }
    let deleted = run(left, |r| async move {
        done("-", r, progress, ops::delete(k, r, &ops::Surveyed::new())).await
    })
    .await?;
    Ok(gone + deleted)
}

/// How long [`reap`] waits for the kernel without seeing a single host end go.
const REAP_PATIENCE: Duration = Duration::from_secs(2);

/// Resources that the kernel takes away with one that is replaced (deleted, then created), and
/// that must be built again even though the plan has no change of their own for them: what
/// lives in a namespace goes with it, routes go with their link, a bridge's ports are released
/// when it goes (and its per-device sysctls with it). Transitively: a link rebuilt because its
/// bridge was takes its routes along.
fn taken_along<'a>(
    observed: &'a [Resource],
    desired: &'a [Resource],
    deletes: &HashSet<&ResourceId>,
    creates: &HashSet<&ResourceId>,
) -> HashSet<&'a ResourceId> {
    let mut out: HashSet<&ResourceId> = HashSet::new();
    // Most runs replace nothing (a scale only creates, or only deletes): then nothing is
    // looked up per resource, each lookup hashing a whole address.
    if !deletes.iter().any(|a| creates.contains(*a)) {
        return out;
    }
    let mut parents: Vec<&Resource> = observed
        .iter()
        .chain(desired)
        .filter(|r| deletes.contains(&r.address) && creates.contains(&r.address))
        .collect();
    loop {
        let more: Vec<&Resource> = desired
            .iter()
            .filter(|r| !creates.contains(&r.address) && !out.contains(&r.address))
            .filter(|r| parents.iter().any(|p| lives_on(r, p)))
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more.iter().map(|r| &r.address));
        parents.extend(more);
    }
}

/// Whether the kernel destroys (or detaches) `r` when `parent` is deleted.
fn lives_on(r: &Resource, parent: &Resource) -> bool {
    match &parent.spec {
        Spec::Namespace(n) => namespace_of(&r.spec) == Some(n.name.as_str()),
        Spec::Link(l) => match &r.spec {
            Spec::Route(x) => x.namespace == l.namespace && x.ifname == l.ifname,
            Spec::Bridge(_)
            | Spec::Macvlan(_)
            | Spec::External(_)
            | Spec::Vxlan(_)
            | Spec::Remote(_)
            | Spec::Namespace(_)
            | Spec::Link(_)
            | Spec::Files(_)
            | Spec::Vip(_)
            | Spec::Dns(_)
            | Spec::Firewall(_) => false,
        },
        Spec::Bridge(b) => match &r.spec {
            Spec::Link(l) => l.bridge.as_deref() == Some(b.name.as_str()),
            Spec::Vxlan(v) => v.bridge == b.name,
            Spec::Firewall(f) => {
                f.namespace.is_none() && f.sysctls.keys().any(|k| k.contains(b.name.as_str()))
            }
            Spec::Bridge(_)
            | Spec::Macvlan(_)
            | Spec::External(_)
            | Spec::Remote(_)
            | Spec::Namespace(_)
            | Spec::Route(_)
            | Spec::Files(_)
            | Spec::Vip(_)
            | Spec::Dns(_) => false,
        },
        // A remote endpoint's entries go with the VXLAN device they are on.
        Spec::Vxlan(v) => matches!(&r.spec, Spec::Remote(e) if e.device == v.name),
        // No kernel object of its own, or nothing lives on it.
        Spec::Remote(_)
        | Spec::Macvlan(_)
        | Spec::External(_)
        | Spec::Route(_)
        | Spec::Files(_)
        | Spec::Vip(_)
        | Spec::Dns(_)
        | Spec::Firewall(_) => false,
    }
}

/// Leftovers of a run killed half-way that no observe reports, because they carry no mark and
/// cannot: pin files under /run/netns with nothing mounted on them (a kill between creating
/// the file and mounting the namespace on it, or between unmounting and unlinking), and
/// /etc/netns directories of a namespace that no longer exists, holding only the files
/// netcompose writes. Only names of this project (`<project>-...`) are looked at; a live
/// namespace, or a directory with anything else in it, is never touched.
async fn sweep<M: Machine>(k: &Kernel<M>) {
    let prefix = format!("{}-", k.project);
    let (pinned, dirs) = futures::join!(k.list_netns_live(), k.file_dirs());
    let pinned = pinned.unwrap_or_default();
    for (name, _) in pinned
        .iter()
        .filter(|(n, live)| n.starts_with(&prefix) && !live)
    {
        let _ = k.delete_netns(name).await;
    }
    let live: HashSet<&str> = pinned
        .iter()
        .filter(|(_, live)| *live)
        .map(|(n, _)| n.as_str())
        .collect();
    for name in dirs.unwrap_or_default() {
        if !name.starts_with(&prefix) || live.contains(name.as_str()) {
            continue;
        }
        let only_ours = k.file_names(&name).await.is_ok_and(|files| {
            files.iter().all(|f| {
                matches!(
                    f.as_str(),
                    "hosts" | "resolv.conf" | ".hosts.tmp" | ".resolv.conf.tmp"
                )
            })
        });
        if only_ours {
            let _ = k.remove_dir(&name).await;
        }
    }
}

/// `NETCOMPOSE_TIMINGS=1`: a line on stderr for each destroy wave, for the reap and for the
/// build (`timing: build: 200 link, 200 namespace in 812 ms`), to see where an apply spends
/// its time.
struct Timings(bool);

impl Timings {
    fn from_env() -> Timings {
        Timings(std::env::var_os("NETCOMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0"))
    }

    /// What the phase does (counts by kind) and when it started.
    fn start(&self, todo: &[&Resource]) -> Option<(String, Instant)> {
        if !self.0 || todo.is_empty() {
            return None;
        }
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in todo {
            *kinds.entry(r.spec.kind()).or_default() += 1;
        }
        let what: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        Some((what.join(", "), Instant::now()))
    }

    fn phase(&self, phase: &str, started: Option<(String, Instant)>) {
        if let Some((what, t)) = started {
            eprintln!(
                "timing: {phase}: {what} in {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// What a replacement takes along, checked on a model alone (no kernel needed).
#[cfg(test)]
mod taken_along_tests {
    use super::*;
    use crate::model::{ReplicaId, ResourceId};

    #[test]
    fn a_replaced_namespace_or_bridge_takes_what_lives_on_it_along() {
        let rs = crate::pipeline::quickstart_resources();
        let db = ReplicaId::new("db", 1);
        let ns = ResourceId::Replica(db.clone());
        let replaced: HashSet<&ResourceId> = [&ns].into();
        let mut along: Vec<String> = taken_along(&rs, &rs, &replaced, &replaced)
            .into_iter()
            .map(ToString::to_string)
            .collect();
        along.sort();
        assert_eq!(
            along,
            [
                "service.db[1].files",
                "service.db[1].firewall",
                "service.db[1].link.back"
            ]
        );
        let gone: HashSet<&str> = ["quickstart-db-1"].into();
        assert!(rs
            .iter()
            .filter(|r| r.address.replica() == Some(&db) && r.address != ns)
            .all(|r| inside_gone(r, &gone)));

        let front = ResourceId::network("front");
        let replaced: HashSet<&ResourceId> = [&front].into();
        let along = taken_along(&rs, &rs, &replaced, &replaced);
        let links = rs
            .iter()
            .filter(|r| matches!(&r.address, ResourceId::Link(_, n) if n == "front"));
        for link in links {
            assert!(along.contains(&link.address), "{}", link.address);
        }
        // Routes go with their rebuilt link; the host table sets route_localnet on the bridge.
        assert!(along.contains(&ResourceId::Route(
            ReplicaId::new("web", 1),
            crate::model::resource::RouteFamily::V4
        )));
        assert!(along.contains(&ResourceId::HostFirewall));
    }
}
