//! `up` and `up --plan`: make the kernel match the desired state, record it in the store
//! (allocations first, so an interrupted run keeps its addresses), then update the daemon.
//! With a shared store, another host may allocate between this run's read and its save: the
//! save then fails with a conflict and the run reads and allocates again (bounded).
//! A caller that alone changed the project since its last run (the agent) may start from
//! what that run recorded instead of observing every namespace ([`Observation::Recorded`]).

use super::planning::{
    build, context_with, daemon_config, host_facts, load_on, taken_by, Unreadable,
};
use super::session::Session;
use super::timing::Stages;
use super::{daemon, lock, Applied, Events, ReconcileError};
use crate::apply::Outcome;
use crate::diag::{ConfigError, Diagnostics};
use crate::load::LoadOptions;
use crate::model::cluster::ClusterView;
use crate::model::daemon::DaemonConfig;
use crate::model::{Desired, Spec};
use crate::observe::live::Depth;
use crate::pipeline::Checked;
use crate::plan::{self, Plan};
use crate::project_name::ProjectName;
use crate::state::{self, Lock, State, StateError, Store};
use std::collections::BTreeMap;
use std::path::Path;

/// What `up` did to the kernel (the daemon's part is reported through [`Events`]).
#[derive(Debug, Clone, Copy)]
pub enum UpOutcome {
    NoChanges,
    Applied(Outcome),
}

/// `up` from the Compose file(s).
pub fn up(
    store: &dyn Store,
    opts: &LoadOptions,
    events: &dyn Events,
) -> Result<UpOutcome, ReconcileError> {
    up_on(store, opts, None, events)
}

/// `up` of this host's share of a cluster project: the replicas placed here, and the overlay
/// entries, names and VIP backends of the other hosts' endpoints (`cluster`); None builds
/// every replica here, as [`up`] does.
pub fn up_on(
    store: &dyn Store,
    opts: &LoadOptions,
    cluster: Option<&ClusterView>,
    events: &dyn Events,
) -> Result<UpOutcome, ReconcileError> {
    up_with(store, opts, cluster, Observation::Full, events).map(|(outcome, _)| outcome)
}

/// What a run takes the project's kernel objects to be before it compares them with the
/// desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Read back from the kernel, every namespace: what `up` does, so drift is repaired.
    Full,
    /// What the last run recorded in the state, after a cheap check that its namespaces are
    /// pinned and its host links present (else read in full, with a warning): the difference
    /// alone is applied. For a caller that knows that nothing but its own runs changed the
    /// project since (the agent, applying a new placement or other hosts' endpoints), so that
    /// a change of a few entries does not cost a read of every namespace.
    Recorded,
}

/// [`up_on`], starting from `observation`; also which one it started from (a record that no
/// longer holds is read back in full).
pub fn up_with(
    store: &dyn Store,
    opts: &LoadOptions,
    cluster: Option<&ClusterView>,
    observation: Observation,
    events: &dyn Events,
) -> Result<(UpOutcome, Observation), ReconcileError> {
    let stages = Stages::from_env("up");
    let checked = load_on(opts, cluster, events)?;
    stages.stage("load");
    let project = ProjectName::new(checked.project.name.clone())?;
    let lock = lock(store, &project, events)?;
    let session = Session::open_locked(&project, &lock)?;
    if observation == Observation::Full {
        session.read_ahead(Depth::Full);
    }
    stages.stage("lock and session");
    // The host's facts (routes, nameservers, sockets, port range) need nothing of the state:
    // read on a thread of their own while this one reads the state, rather than after it.
    let facts = std::thread::scope(|s| {
        let facts = s.spawn(|| host_facts(&checked, None));
        let first = store.read(&lock);
        facts
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map(|facts| (facts, first))
    });
    let (facts, first) = facts?;
    let mut first = Some(first);
    stages.stage("state read and host facts");
    let conflict =
        |e: &ReconcileError| matches!(e, ReconcileError::State(StateError::Conflict { .. }));
    state::retry_on_conflict(&project, conflict, || {
        // A retry after a conflict reads the state again.
        let snapshot = match first.take() {
            Some(read) => read?,
            None => store.read(&lock)?,
        };
        let prior = snapshot.state.unwrap_or_default();
        let others = taken_by(snapshot.others, Unreadable::Refuse, events)?;
        let ctx = context_with(&prior.allocations, &others, cluster, facts.clone());
        let desired = build(&checked, &ctx)?;
        let daemon = daemon_config(&checked, &desired)?;
        stages.stage("model");
        let missing = session.missing_links(&externals(&desired))?;
        if !missing.is_empty() {
            return Err(external_missing(&checked, &missing));
        }
        let taken = session.udp_ports_taken(&vxlan_ports(&desired))?;
        if !taken.is_empty() {
            return Err(vxlan_ports_taken(&checked, &desired, &taken));
        }
        let converged = converge(
            store,
            &lock,
            &session,
            &prior,
            Target {
                desired,
                daemon: Some(daemon),
                observation,
                fingerprint: None,
                files: checked
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect(),
                scale: opts.scale.iter().cloned().collect(),
            },
            events,
            &stages,
        );
        super::drop_later(prior);
        converged
    })
}

/// A plan saved with `plan --out`.
pub fn read_plan(path: &Path) -> Result<Plan, ReconcileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReconcileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReconcileError::NotAPlan {
        path: path.display().to_string(),
        source,
    })
}

/// `up --plan`: apply a saved plan, refused if the machine changed since it was made. The
/// plan carries everything (resources, allocations, the daemon's configuration).
pub fn up_plan(
    store: &dyn Store,
    saved: Plan,
    events: &dyn Events,
) -> Result<UpOutcome, ReconcileError> {
    let project = ProjectName::new(saved.project.clone())?;
    let parts = [
        ("desired state", Some(saved.desired.project.as_str())),
        (
            "daemon configuration",
            saved.daemon.as_ref().map(|d| d.project.as_str()),
        ),
    ];
    for (part, other) in parts {
        if let Some(other) = other.filter(|o| *o != project.as_str()) {
            return Err(ReconcileError::InconsistentPlan {
                plan: project.to_string(),
                part,
                other: other.to_string(),
            });
        }
    }
    let lock = lock(store, &project, events)?;
    let session = Session::open_locked(&project, &lock)?;
    // A saved plan's allocations are fixed: a conflict here is an error, not a retry.
    let prior = store.read(&lock)?.state.unwrap_or_default();
    let missing = session.missing_links(&externals(&saved.desired))?;
    if !missing.is_empty() {
        return Err(ReconcileError::ExternalMissing(missing));
    }
    // A plan does not name its Compose files: keep those the last `up` recorded.
    let files = prior.files.clone();
    converge(
        store,
        &lock,
        &session,
        &prior,
        Target {
            desired: saved.desired,
            daemon: saved.daemon,
            observation: Observation::Full,
            fingerprint: Some(saved.fingerprint),
            files,
            scale: Default::default(),
        },
        events,
        &Stages::from_env("up --plan"),
    )
    .map(|(outcome, _)| outcome)
}

/// The host links that the project's external networks name.
fn externals(desired: &Desired) -> Vec<String> {
    desired
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::External(e) => Some(e.name.clone()),
            _ => None,
        })
        .collect()
}

/// Compose's refusal ("network X declared as external, but could not be found"), pointing
/// at each network's `external` key; `up` stops before anything is built.
fn external_missing(checked: &Checked, missing: &[String]) -> ReconcileError {
    let mut diags = Diagnostics::default();
    for net in checked.project.networks.values() {
        let Some(at) = net.external.filter(|_| missing.contains(&net.name.value)) else {
            continue;
        };
        diags.push(ConfigError::Invalid {
            message: format!(
                "network {} declared as external, but could not be found",
                net.name.value
            ),
            hint: format!(
                "create it first (e.g. `ip link add {} type bridge`), or drop `external` to let netcompose make it",
                net.name.value
            ),
            at,
        });
    }
    ReconcileError::Invalid {
        diags: Box::new(diags),
        sources: Box::new(checked.sources.clone()),
    }
}

/// The UDP ports of the project's VXLAN devices.
fn vxlan_ports(desired: &Desired) -> Vec<u16> {
    let mut ports: Vec<u16> = desired
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Vxlan(v) => Some(v.port),
            _ => None,
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A VXLAN port held by another socket on this host: the device would fail to come up (the
/// kernel binds the port then), so `up` stops before anything is built, pointing at each
/// overlay network on that port.
fn vxlan_ports_taken(checked: &Checked, desired: &Desired, taken: &[u16]) -> ReconcileError {
    let mut diags = Diagnostics::default();
    for r in &desired.resources {
        let Spec::Vxlan(v) = &r.spec else { continue };
        if !taken.contains(&v.port) {
            continue;
        }
        let Some(at) = checked
            .project
            .networks
            .get(&v.network)
            .and_then(|n| n.driver.as_ref())
            .map(|d| d.span)
        else {
            continue;
        };
        diags.push(ConfigError::Invalid {
            message: format!(
                "overlay network {}: UDP port {} (VXLAN) is already in use on this host",
                v.network, v.port
            ),
            hint: format!(
                "find the socket with `ss -ulpn 'sport = :{}'` and stop it: every host of an \
                 overlay needs that port for VXLAN",
                v.port
            ),
            at,
        });
    }
    ReconcileError::Invalid {
        diags: Box::new(diags),
        sources: Box::new(checked.sources.clone()),
    }
}

/// Where a run is going: the desired state, what the daemon serves, where it starts from,
/// (for a saved plan) the fingerprint the machine must still have, and the Compose files and
/// `--scale` to record.
struct Target {
    desired: Desired,
    daemon: Option<DaemonConfig>,
    observation: Observation,
    fingerprint: Option<String>,
    files: Vec<String>,
    scale: BTreeMap<String, u32>,
}

fn converge(
    store: &dyn Store,
    lock: &Lock,
    session: &Session,
    prior: &State,
    target: Target,
    events: &dyn Events,
    stages: &Stages,
) -> Result<(UpOutcome, Observation), ReconcileError> {
    let Target {
        desired,
        daemon,
        observation,
        fingerprint,
        files,
        scale,
    } = target;
    let project = lock.project().clone();
    let observation = match observation {
        Observation::Recorded => match session.recorded_gone(&prior.resources)? {
            None => Observation::Recorded,
            Some(gone) => {
                events.warning(&format!(
                    "{gone} since the last run: reading every namespace back"
                ));
                Observation::Full
            }
        },
        Observation::Full => Observation::Full,
    };
    let observed = match observation {
        Observation::Recorded => prior.resources.clone(),
        Observation::Full => session.observe(&prior.resources, &desired.resources)?,
    };
    stages.stage("observe");
    if fingerprint.is_some_and(|f| f != plan::fingerprint(&observed)) {
        return Err(ReconcileError::StalePlan);
    }
    for d in plan::drift(&prior.resources, &observed) {
        events.drift(&d);
    }
    let changes = plan::diff_to_apply(&observed, &desired.resources);
    stages.stage("diff");
    // One record, saved up to twice: the resources are moved in and out of it rather than
    // copied (a copy of a thousand resources for each save cost more than writing it).
    let mut record = State {
        format_version: state::FORMAT_VERSION,
        project: project.to_string(),
        allocations: desired.allocations,
        resources: Vec::new(),
        files,
        scale,
    };
    if changes.is_empty() {
        // An `up` with nothing to do rewrites (and syncs) the state only if it differs.
        record.resources = desired.resources;
        if record != *prior {
            store.save(lock, &record)?;
        }
        stages.stage("state save");
        events.applied(&Applied::NoChanges);
        // The daemon (DNS, x-run) is not in the kernel diff: start it if it died, update it.
        daemon::after_up(&project, daemon.as_ref(), false, events)?;
        session.save_generations();
        super::drop_later((record, observed));
        stages.stage("daemon");
        return Ok((UpOutcome::NoChanges, observation));
    }
    // Allocations first: an interrupted run keeps its addresses on the next try. The record is
    // written, and the daemon lets go of the namespaces to delete, while the apply works out
    // what to do (1-1.5 ms each for a scale of 200 replicas); its first operation waits.
    record.resources = observed;
    let summary = plan::summarize(&changes);
    let (saved, applied) = std::thread::scope(|s| {
        let (done, written) = tokio::sync::oneshot::channel();
        let (record, project, changes) = (&record, &project, &changes);
        let saving = s.spawn(move || {
            let saved = store.save(lock, record);
            if saved.is_ok() {
                daemon::before_apply(project, &record.resources, changes, events);
            }
            let _ = done.send(saved.is_ok());
            saved
        });
        let ready = async {
            let ok = written.await.unwrap_or(false);
            if ok {
                events.applying(&summary);
            }
            ok
        };
        let applied = session.apply_when_ready(
            &record.resources,
            &desired.resources,
            changes,
            &|step| super::report_step(events, step),
            ready,
        );
        let saved = saving
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (saved, applied)
    });
    saved?;
    let outcome = applied.map_err(ReconcileError::Apply)?;
    let observed = std::mem::take(&mut record.resources);
    stages.stage("state save and apply");
    events.applied(&Applied::Up(outcome));
    // The record of what the kernel holds now and the daemon's new configuration do not
    // depend on each other: the state is written while the daemon takes it.
    record.resources = desired.resources;
    let (saved, served) = std::thread::scope(|s| {
        let serving = s.spawn(|| daemon::after_up(&project, daemon.as_ref(), true, events));
        let saved = store.save(lock, &record);
        (saved, serving.join())
    });
    saved?;
    served.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    session.save_generations();
    let handing = std::time::Instant::now();
    let handed = session.hand_over_sockets(&project);
    stages.note(|| {
        format!(
            "{handed} nfnetlink sockets handed to the daemon in {:.1} ms",
            handing.elapsed().as_secs_f64() * 1e3
        )
    });
    super::drop_later((record, observed, changes));
    stages.stage("state save and daemon");
    Ok((UpOutcome::Applied(outcome), observation))
}
