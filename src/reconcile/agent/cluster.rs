//! `up` and `down` of a project on a cluster, and what `nodes` shows. `up` loads and
//! validates here, allocates for every replica, places the replicas on the live nodes, and
//! writes spec, allocations and placement in one compare-and-swap transaction (no lock: one
//! revision per `up`); then it waits until every live node's report matches the share that
//! write asks of it (or is at or after it): a node whose share did not change has nothing to
//! report. `down` deletes the project's keys in one compare-and-swap transaction (no lock
//! either: one revision) and waits until every agent took its share down (its status
//! gone).

use super::{share, spec, ClusterError};
use crate::placement::{self, Demand};
use crate::project_name::ProjectName;
use crate::reconcile::planning::{build, context, taken_by, Unreadable};
use crate::reconcile::{load, Events, ReconcileError};
use crate::state::cluster::{
    allocations_key, placement_key, project_prefix, put_if_changed, spec_key, ClusterKv,
    ClusterSnapshot, NodeRecord, StatusRecord,
};
use crate::state::kv::{Kv, KvStore, Op, Unchanged};
use crate::state::{self, State, StateError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the wait reads the statuses.
const POLL: Duration = Duration::from_millis(50);

/// Where one node is in a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// No report at or after the write yet (the revision it last reported, if any).
    Waiting {
        reported: Option<i64>,
    },
    Converged {
        revision: i64,
    },
    Failed {
        errors: Vec<String>,
    },
    /// Its lease is gone.
    Lost,
    /// `down`: its share is gone.
    Removed,
}

/// Each node's progress, as it changes.
pub trait ClusterProgress: Sync {
    fn node(&self, node: &str, state: &NodeState);
}

/// A node as `netcompose nodes` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub record: NodeRecord,
    /// Seconds its lease has left (None: it just expired).
    pub ttl: Option<i64>,
    /// Projects whose last report from this node has errors.
    pub failing: Vec<String>,
    /// Project → the revision this node last reported it converged to (without errors).
    pub converged: BTreeMap<String, i64>,
    /// Its VXLAN probe of the other nodes (None: none reported yet).
    pub health: Option<crate::state::cluster::HealthRecord>,
}

/// `up` on a cluster; the revision of the write every node converged to.
pub fn up_cluster<K: Kv + ClusterKv>(
    store: &KvStore<K>,
    opts: &crate::load::LoadOptions,
    environment: &BTreeMap<String, String>,
    timeout: Duration,
    events: &dyn Events,
    progress: &dyn ClusterProgress,
) -> Result<i64, ReconcileError> {
    let mut checked = load(opts, events)?;
    let project = ProjectName::new(checked.project.name.clone())?;
    let record =
        spec::capture(opts, &checked, environment).map_err(|source| ClusterError::Spec {
            path: checked.working_dir.display().to_string(),
            source,
        })?;
    let demands = Demand::of_project(&checked.project);
    let conflict =
        |e: &ReconcileError| matches!(e, ReconcileError::State(StateError::Conflict { .. }));
    // No lock: the one transaction below is guarded by every key it read (spec, placement,
    // the project's state, and the allocation epoch when it allocates), so a concurrent `up`
    // or an agent's re-placement in between makes it read and allocate again.
    let (written, nodes) = state::retry_on_conflict(&project, conflict, || {
        let cluster = ClusterSnapshot::read(store.kv())?;
        let nodes = share::nodes(&cluster);
        if nodes.is_empty() {
            return Err(ClusterError::NoLiveNodes.into());
        }
        let (snapshot, seen) = store.read_unlocked(&project)?;
        let prior = snapshot.state.unwrap_or_default();
        let others = taken_by(snapshot.others, Unreadable::Refuse, events)?;
        let keys = cluster.projects.get(project.as_str());
        let current = keys
            .and_then(|k| k.placement.as_ref())
            .map(|p| p.value.assignment.clone())
            .unwrap_or_default();
        // Placed first: a global service's replicas are those it places, one per node.
        let placement = placement::place(&nodes, &demands, &current);
        placement::number_global(&mut checked.project, &placement.assignment);
        let desired = build(
            &checked,
            &context(&checked, &prior.allocations, &others, None)?,
        )?;
        let mut extra: Vec<Op> = Vec::new();
        extra.extend(put_if_changed(
            spec_key(project.as_str()),
            &record,
            keys.and_then(|k| k.spec.as_ref()).map(|s| s.raw.as_slice()),
        )?);
        extra.extend(put_if_changed(
            placement_key(project.as_str()),
            &placement,
            keys.and_then(|k| k.placement.as_ref())
                .map(|p| p.raw.as_slice()),
        )?);
        let guards = [spec_key(project.as_str()), placement_key(project.as_str())]
            .map(|key| Unchanged {
                key,
                since: cluster.revision,
            })
            .to_vec();
        let state = State {
            format_version: state::FORMAT_VERSION,
            project: project.to_string(),
            allocations: desired.allocations.clone(),
            // Each host keeps what it applied in its own store; the cluster's is the plan.
            resources: Vec::new(),
            files: checked
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            scale: opts.scale.iter().cloned().collect(),
        };
        let (written, _) = store.save_seen(&seen, &state, guards, extra)?;
        Ok((written, nodes))
    })?;
    let names: Vec<String> = nodes.into_iter().map(|n| n.name).collect();
    wait(
        store.kv(),
        &project,
        &names,
        written,
        timeout,
        progress,
        Goal::Converged,
    )?;
    Ok(written)
}

/// `down` on a cluster: the project's keys deleted in one transaction (one revision), then
/// every agent's share gone. No lock: the delete is guarded by every key it deletes, as read
/// with the nodes to wait for, so an `up` that lands in between makes it read again (and wait
/// for the nodes that `up` reached too).
pub fn down_cluster<K: Kv + ClusterKv>(
    store: &KvStore<K>,
    project: &ProjectName,
    timeout: Duration,
    progress: &dyn ClusterProgress,
) -> Result<(), ReconcileError> {
    let conflict =
        |e: &ReconcileError| matches!(e, ReconcileError::State(StateError::Conflict { .. }));
    let names = state::retry_on_conflict(project, conflict, || {
        let (revision, records) = store.kv().list(&project_prefix(project.as_str()))?;
        let snapshot = ClusterSnapshot::from_records(revision, &records);
        let keys = snapshot.projects.get(project.as_str());
        let mut names: Vec<String> = keys
            .map(|k| {
                let reported = k.status.keys().cloned();
                let placed = k.placement.iter().flat_map(|p| p.value.assignment.values());
                reported.chain(placed.cloned()).collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect();
        names.sort();
        names.dedup();
        let mut doomed = vec![
            spec_key(project.as_str()),
            allocations_key(project.as_str()),
            placement_key(project.as_str()),
        ];
        doomed.extend(KvStore::<K>::state_keys(project));
        doomed.sort();
        doomed.dedup();
        doomed.retain(|key| records.iter().any(|r| &r.key == key));
        if doomed.is_empty() {
            return Ok(names);
        }
        let guards: Vec<Unchanged> = doomed
            .iter()
            .map(|key| Unchanged {
                key: key.clone(),
                since: revision,
            })
            .collect();
        let ops: Vec<Op> = doomed.into_iter().map(|key| Op::Delete { key }).collect();
        match store.kv().commit_on(None, &guards, &ops)? {
            Some(_) => Ok(names),
            None => Err(StateError::Conflict {
                project: project.to_string(),
            }
            .into()),
        }
    })?;
    wait(
        store.kv(),
        project,
        &names,
        0,
        timeout,
        progress,
        Goal::Removed,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    Converged,
    Removed,
}

/// Read the statuses until every node in `nodes` reached `goal` (or lost its lease), or
/// until `timeout`.
fn wait(
    kv: &dyn ClusterKv,
    project: &ProjectName,
    nodes: &[String],
    written: i64,
    timeout: Duration,
    progress: &dyn ClusterProgress,
    goal: Goal,
) -> Result<(), ReconcileError> {
    let deadline = Instant::now() + timeout;
    let mut shown: BTreeMap<String, NodeState> = BTreeMap::new();
    loop {
        let (_, records) = kv.list(&project_prefix(project.as_str()))?;
        let snapshot = ClusterSnapshot::from_records(0, &records);
        let (_, node_records) = kv.list(crate::state::cluster::NODES)?;
        let live = ClusterSnapshot::from_records(0, &node_records).nodes;
        let keys = snapshot.projects.get(project.as_str());
        let mut states = BTreeMap::new();
        for node in nodes {
            let status = keys.and_then(|k| k.status.get(node)).map(|s| &s.value);
            // A node reports again only when its share changes: one whose report matches the
            // share asked of it now has built it, whenever it reported.
            let built = |s: &StatusRecord| {
                keys.is_some_and(|k| s.share == share::share_digest(k, node))
                    || s.revision >= written
            };
            let state = match (goal, status) {
                (_, _) if !live.contains_key(node) => NodeState::Lost,
                (Goal::Removed, None) => NodeState::Removed,
                (Goal::Removed, s) => NodeState::Waiting {
                    reported: s.map(|s| s.revision),
                },
                (Goal::Converged, Some(s)) if built(s) && !s.errors.is_empty() => {
                    NodeState::Failed {
                        errors: s.errors.clone(),
                    }
                }
                (Goal::Converged, Some(s)) if built(s) => NodeState::Converged {
                    revision: s.revision,
                },
                (Goal::Converged, s) => NodeState::Waiting {
                    reported: s.map(|s| s.revision),
                },
            };
            if shown.get(node) != Some(&state) {
                progress.node(node, &state);
                shown.insert(node.clone(), state.clone());
            }
            states.insert(node.clone(), state);
        }
        let pending: Vec<(String, String)> = states
            .iter()
            .filter_map(|(n, s)| match s {
                NodeState::Waiting { reported: None } => Some((n.clone(), "no report".into())),
                NodeState::Waiting { reported: Some(r) } => Some((
                    n.clone(),
                    match goal {
                        Goal::Converged => format!("last converged to revision {r} < {written}"),
                        Goal::Removed => "still has the project".into(),
                    },
                )),
                NodeState::Converged { .. } | NodeState::Removed | NodeState::Lost => None,
                NodeState::Failed { .. } => None,
            })
            .collect();
        let failed: Vec<(String, String)> = states
            .iter()
            .filter_map(|(n, s)| match s {
                NodeState::Failed { errors } => Some((n.clone(), errors.join("; "))),
                NodeState::Waiting { .. }
                | NodeState::Converged { .. }
                | NodeState::Removed
                | NodeState::Lost => None,
            })
            .collect();
        if pending.is_empty() {
            if !failed.is_empty() {
                return Err(ClusterError::Failed { nodes: failed }.into());
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut nodes = pending;
            nodes.extend(failed);
            return Err(ClusterError::NotConverged { timeout, nodes }.into());
        }
        std::thread::sleep(POLL);
    }
}

/// Where a cluster project runs: each replica's node, the replicas that fit nowhere (with
/// the reason), and each node's last report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    pub assignment: placement::Assignment,
    pub pending: BTreeMap<placement::ReplicaKey, String>,
    /// node → (its report, whether the node is live).
    pub nodes: BTreeMap<String, (Option<crate::state::cluster::StatusRecord>, bool)>,
}

/// `ps` on a cluster.
pub fn cluster_status(
    kv: &dyn ClusterKv,
    project: &ProjectName,
) -> Result<ClusterStatus, StateError> {
    let snapshot = ClusterSnapshot::read(kv)?;
    let keys = snapshot.projects.get(project.as_str());
    let placed = keys.and_then(|k| k.placement.as_ref()).map(|p| &p.value);
    let mut nodes: BTreeMap<String, (Option<crate::state::cluster::StatusRecord>, bool)> = snapshot
        .nodes
        .keys()
        .map(|n| (n.clone(), (None, true)))
        .collect();
    for (node, status) in keys.map(|k| &k.status).into_iter().flatten() {
        let live = snapshot.nodes.contains_key(node);
        nodes.insert(node.clone(), (Some(status.value.clone()), live));
    }
    Ok(ClusterStatus {
        assignment: placed.map(|p| p.assignment.clone()).unwrap_or_default(),
        pending: placed
            .map(|p| {
                p.pending
                    .iter()
                    .map(|(k, why)| (k.clone(), why.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        nodes,
    })
}

/// Every live node, with its lease's time left and the projects it fails on.
pub fn node_list(kv: &dyn ClusterKv) -> Result<Vec<NodeInfo>, StateError> {
    let snapshot = ClusterSnapshot::read(kv)?;
    let mut out = Vec::new();
    for (name, node) in &snapshot.nodes {
        let failing = snapshot
            .projects
            .iter()
            .filter(|(_, k)| {
                k.status
                    .get(name)
                    .is_some_and(|s| !s.value.errors.is_empty())
            })
            .map(|(p, _)| p.clone())
            .collect();
        let converged = snapshot
            .projects
            .iter()
            .filter_map(|(p, k)| {
                let s = &k.status.get(name)?.value;
                s.errors.is_empty().then(|| (p.clone(), s.revision))
            })
            .collect();
        out.push(NodeInfo {
            name: name.clone(),
            record: node.record.value.clone(),
            ttl: kv.time_to_live(node.lease)?,
            failing,
            converged,
            health: snapshot.health.get(name).map(|h| h.value.clone()),
        });
    }
    Ok(out)
}
