//! `plan` on a cluster: what each live node would get from an `up` now (its replicas, and the
//! remote endpoints it would program into its overlays), computed as `up` computes it (the
//! same allocation and placement) from the store read once, with no lock and no write, so it
//! needs no root and changes nothing.

use super::{share, ClusterError};
use crate::model::cluster::{ClusterView, RemoteEndpoint, TunnelEnd};
use crate::placement::{self, Demand, ReplicaKey};
use crate::project_name::ProjectName;
use crate::reconcile::planning::{build, context, others_taken, Unreadable};
use crate::reconcile::{load, Events, ReconcileError};
use crate::state::cluster::{ClusterKv, ClusterSnapshot, NodeRecord};
use crate::state::kv::{Kv, KvStore};
use crate::state::Store;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What happens to a replica on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum ReplicaChange {
    /// It runs there and stays.
    Kept,
    /// It does not run anywhere yet.
    New,
    /// It runs on another node now (which died, or no longer fits).
    Moved { from: String },
}

/// One replica of a node's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaPlan {
    /// `web[2]`.
    pub replica: String,
    #[serde(flatten)]
    pub change: ReplicaChange,
}

/// One live node's share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePlan {
    pub node: String,
    pub underlay: std::net::IpAddr,
    pub replicas: Vec<ReplicaPlan>,
    /// Replicas it runs today that no longer run anywhere (scaled down or removed).
    pub removed: Vec<String>,
    /// The endpoints of other nodes' replicas it would program (FDB and neighbour entries,
    /// names, VIP backends), by overlay network.
    pub remote: Vec<RemoteEndpoint>,
    /// The revision it last reported converged to for this project.
    pub converged: Option<i64>,
}

/// `plan` on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterPlan {
    pub project: String,
    /// The store's revision the plan was computed at.
    pub revision: i64,
    pub nodes: Vec<NodePlan>,
    /// Replicas that would fit on no live node, with the reason.
    pub pending: BTreeMap<String, String>,
    /// Whether `up` would write anything (the project's files or the placement differ from
    /// the store's).
    pub changes: bool,
    /// The addresses, MACs, VNIs and ports `up` would store (the stored ones kept).
    pub allocations: crate::ipam::Allocations,
}

/// What an `up` of `opts` would give each live node, read from `store` without writing.
pub fn plan_cluster<K: Kv + ClusterKv>(
    store: &KvStore<K>,
    opts: &crate::load::LoadOptions,
    environment: &BTreeMap<String, String>,
    events: &dyn Events,
) -> Result<ClusterPlan, ReconcileError> {
    let mut checked = load(opts, events)?;
    let project = ProjectName::new(checked.project.name.clone())?;
    let cluster = ClusterSnapshot::read(store.kv())?;
    let nodes = share::nodes(&cluster);
    if nodes.is_empty() {
        return Err(ClusterError::NoLiveNodes.into());
    }
    let prior = store.load(&project)?.unwrap_or_default();
    let others = others_taken(store, &project, Unreadable::Warn, events)?;
    let keys = cluster.projects.get(project.as_str());
    let current = keys
        .and_then(|k| k.placement.as_ref())
        .map(|p| p.value.assignment.clone())
        .unwrap_or_default();
    let placed = placement::place(&nodes, &Demand::of_project(&checked.project), &current);
    placement::number_global(&mut checked.project, &placed.assignment);
    let desired = build(
        &checked,
        &context(&checked, &prior.allocations, &others, None)?,
    )?;
    let record =
        super::spec::capture(opts, &checked, environment).map_err(|source| ClusterError::Spec {
            path: checked.working_dir.display().to_string(),
            source,
        })?;
    let spec_changed = keys
        .and_then(|k| k.spec.as_ref())
        .is_none_or(|s| s.value != record);
    let networks = |keep: fn(&crate::spec::Network) -> bool| -> BTreeSet<String> {
        checked
            .project
            .networks
            .iter()
            .filter(|(_, n)| n.external.is_none() && keep(n))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let overlays = networks(crate::model::overlay::is_overlay);
    let encrypted = networks(crate::model::overlay::is_encrypted);
    let views: Vec<(ClusterView, std::net::IpAddr, Option<i64>)> = cluster
        .nodes
        .iter()
        .map(|(name, live)| {
            let view = node_view(name, &live.record.value, &placed.assignment, &desired);
            let converged = keys
                .and_then(|k| k.status.get(name))
                .filter(|s| s.value.errors.is_empty())
                .map(|s| s.value.revision);
            (view, live.record.value.underlay, converged)
        })
        .collect();
    let published: Vec<Vec<RemoteEndpoint>> = views
        .iter()
        .map(|(v, _, _)| {
            share::published(v, &overlays, &encrypted)
                .into_values()
                .flatten()
                .collect()
        })
        .collect();
    let removed = placed.removed(&current);
    let plans = views
        .iter()
        .enumerate()
        .map(|(i, (view, underlay, converged))| NodePlan {
            node: view.node.clone(),
            underlay: *underlay,
            replicas: placed
                .assignment
                .iter()
                .filter(|(_, n)| **n == view.node)
                .map(|(k, _)| ReplicaPlan {
                    replica: k.to_string(),
                    change: change(k, &view.node, &current, &placed),
                })
                .collect(),
            removed: removed
                .iter()
                .filter(|(_, n)| **n == view.node)
                .map(|(k, _)| k.to_string())
                .collect(),
            remote: published
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, eps)| eps.iter().cloned())
                .collect(),
            converged: *converged,
        })
        .collect();
    Ok(ClusterPlan {
        project: project.to_string(),
        revision: cluster.revision,
        nodes: plans,
        pending: placed
            .pending
            .iter()
            .map(|(k, why)| (k.to_string(), why.to_string()))
            .collect(),
        changes: spec_changed || placed.assignment != current,
        allocations: desired.allocations,
    })
}

/// Node `name`'s share under `assignment`, with every replica's allocations.
fn node_view(
    name: &str,
    record: &NodeRecord,
    assignment: &placement::Assignment,
    desired: &crate::model::Desired,
) -> ClusterView {
    ClusterView {
        node: name.to_string(),
        underlay: Some(record.underlay),
        underlay_mtu: record.underlay_mtu,
        local: assignment
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(k, _)| (k.service.clone(), k.index))
            .collect(),
        remote: Vec::new(),
        tunnel: record.wireguard.as_ref().map(|w| TunnelEnd {
            device: super::tunnel::DEVICE.to_string(),
            address: w.address,
        }),
        allocations: desired.allocations.clone(),
        assignment: Some(assignment.clone()),
    }
}

fn change(
    key: &ReplicaKey,
    node: &str,
    current: &placement::Assignment,
    placed: &placement::Placement,
) -> ReplicaChange {
    match (current.get(key), placed.moved.get(key)) {
        (_, Some(m)) => ReplicaChange::Moved {
            from: m.from.clone(),
        },
        (Some(n), None) if n == node => ReplicaChange::Kept,
        (Some(n), None) => ReplicaChange::Moved { from: n.clone() },
        (None, None) => ReplicaChange::New,
    }
}
