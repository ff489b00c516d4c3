//! Placement: which node of a cluster runs each replica. Pure and deterministic: the nodes
//! (name, id, labels, alive), each service's demand (mode, replica count, constraints,
//! max_replicas_per_node) and the current assignment (from the store) give the new assignment.
//! Swarm's rules: replicas spread evenly over the live nodes that match the constraints, a
//! global service runs once on each of them, no node runs more of a service than its maximum,
//! and a replica that fits nowhere is pending with Swarm's reason. Placement is sticky: a
//! replica stays where it runs while its node is alive and allowed, so adding a node moves
//! nothing; a replica whose node died is placed again under the same identity.
//!
//! Identity: a replica is a [`ReplicaKey`] (`web[2]`), the very string IPAM keys a replica's
//! addresses and MACs by (`model::ReplicaId`). A moved replica keeps its key, hence its
//! addresses; [`Placement::moved`] says from where to where, so the old node can let it go.
//! On one host without a store nothing here runs: Compose's counts apply (see [`notes`]).

mod constraint;
mod explain;
mod place;
mod render;

pub use constraint::{matches, matches_all, parse, ConstraintError};
pub use explain::NoSuitableNode;
pub use place::place;
pub use render::{notes, render};

use crate::spec::{Constraint, DeployMode, NetworkMode, Project};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A host of the cluster as its agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `--node NAME`; constraints read it as `node.hostname`.
    pub name: String,
    /// `node.id`: the id the store gave the node.
    pub id: String,
    /// `--label KEY=VALUE`; constraints read them as `node.labels.KEY`.
    pub labels: BTreeMap<String, String>,
    /// Whether its lease is alive: a dead node runs nothing.
    pub alive: bool,
}

/// What a service asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub service: String,
    pub mode: DeployMode,
    /// Replicated mode's count (global mode ignores it, except for a service that joins
    /// another's namespace: it runs Compose's count there, as the model builds it).
    pub replicas: u32,
    pub constraints: Vec<Constraint>,
    /// None: no limit (Swarm reads 0 so too).
    pub max_per_node: Option<u32>,
    /// `network_mode: service:X` or `container:NAME`: every replica runs in that replica's
    /// namespace, so on its node (pending while it runs nowhere or its node does not fit).
    pub joins: Option<ReplicaKey>,
}

impl Demand {
    /// Every service's demand, in name order.
    pub fn of_project(project: &Project) -> Vec<Demand> {
        let mut out: Vec<Demand> = project
            .services
            .iter()
            .map(|(name, svc)| Demand {
                service: name.clone(),
                mode: svc
                    .deploy
                    .mode
                    .as_ref()
                    .map_or_else(Default::default, |m| m.value),
                replicas: svc.replicas(),
                constraints: svc
                    .deploy
                    .placement
                    .constraints
                    .iter()
                    .map(|c| c.value.clone())
                    .collect(),
                max_per_node: svc
                    .deploy
                    .placement
                    .max_replicas_per_node
                    .as_ref()
                    .map(|m| m.value)
                    .filter(|m| *m > 0),
                joins: svc
                    .network_mode
                    .as_ref()
                    .and_then(|m| joined(project, &m.value)),
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

/// On a cluster, each global service's replicas numbered as `assignment` runs them: one per
/// matching node, with the index placement gave it (not always 1 to N: a dead node's replica
/// goes with it, and a node that joins takes the lowest free index), so that the model builds,
/// allocates for and names exactly those. A global service on no node runs no replica. Other
/// services keep Compose's count, as does one host, which calls nothing here.
pub fn number_global(project: &mut Project, assignment: &Assignment) {
    let global: Vec<String> = Demand::of_project(project)
        .into_iter()
        // A service in another's namespace runs Compose's count there (see `Demand::joins`).
        .filter(|d| d.mode == DeployMode::Global && d.joins.is_none())
        .map(|d| d.service)
        .collect();
    for name in global {
        let first = ReplicaKey::new(&name, 0);
        let last = ReplicaKey::new(&name, u32::MAX);
        let indexes = assignment
            .range(first..=last)
            .map(|(k, _)| k.index)
            .collect();
        if let Some(svc) = project.services.get_mut(&name) {
            svc.placed = Some(indexes);
        }
    }
}

/// The replica whose namespace a network mode joins, as model/endpoints.rs resolves it: a
/// service's first replica, a service's `container_name` (its first replica), or a replica's
/// name `<project>-<service>-<n>`.
fn joined(project: &Project, mode: &NetworkMode) -> Option<ReplicaKey> {
    match mode {
        NetworkMode::Service(target) => Some(ReplicaKey::new(target, 1)),
        NetworkMode::Container(name) => {
            let by_container_name = project
                .services
                .iter()
                .find(|(_, s)| s.container_name.as_ref().is_some_and(|c| &c.value == name));
            if let Some((key, _)) = by_container_name {
                return Some(ReplicaKey::new(key, 1));
            }
            let rest = name.strip_prefix(&format!("{}-", project.name))?;
            let (service, index) = rest.rsplit_once('-')?;
            let index = index.parse().ok()?;
            project
                .services
                .contains_key(service)
                .then(|| ReplicaKey::new(service, index))
        }
        NetworkMode::None | NetworkMode::Host | NetworkMode::Bridge => None,
    }
}

/// One replica's identity: its service and index (from 1, as Compose numbers containers).
/// Written `web[2]`, as IPAM names the owner of an address, and so serialized (a map keyed by
/// it is a JSON object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub service: String,
    pub index: u32,
}

impl ReplicaKey {
    pub fn new(service: impl Into<String>, index: u32) -> Self {
        ReplicaKey {
            service: service.into(),
            index,
        }
    }
}

impl std::fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.service, self.index)
    }
}

/// A string that is not `SERVICE[INDEX]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a replica (SERVICE[INDEX], e.g. web[2])")]
pub struct BadReplicaKey(pub String);

impl std::str::FromStr for ReplicaKey {
    type Err = BadReplicaKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadReplicaKey(s.to_string());
        let (service, rest) = s.rsplit_once('[').ok_or_else(bad)?;
        let index = rest
            .strip_suffix(']')
            .and_then(|i| i.parse::<u32>().ok())
            .ok_or_else(bad)?;
        if service.is_empty() {
            return Err(bad());
        }
        Ok(ReplicaKey::new(service, index))
    }
}

impl Serialize for ReplicaKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReplicaKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Replica → the name of the node that runs it.
pub type Assignment = BTreeMap<ReplicaKey, String>;

/// A replica that changed node, keeping its identity (and so its addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
}

/// The outcome of [`place`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Every replica that runs, and where.
    pub assignment: Assignment,
    /// Replicas that fit on no node, with Swarm's reason. A pending replica keeps its key, so
    /// IPAM keeps its addresses until it runs again or the service scales down.
    pub pending: BTreeMap<ReplicaKey, NoSuitableNode>,
    /// Replicas of the current assignment now on another node (their node died, no longer
    /// matches the constraints, or holds more than the maximum).
    pub moved: BTreeMap<ReplicaKey, Move>,
}

impl Placement {
    /// What each node runs, for every node given (a node that runs nothing has an empty list).
    pub fn by_node(&self, nodes: &[Node]) -> BTreeMap<String, Vec<ReplicaKey>> {
        let mut out: BTreeMap<String, Vec<ReplicaKey>> =
            nodes.iter().map(|n| (n.name.clone(), Vec::new())).collect();
        for (key, node) in &self.assignment {
            out.entry(node.clone()).or_default().push(key.clone());
        }
        out
    }

    /// Replicas of `current` that run nowhere now and are not pending: a scale-down, a removed
    /// service, or a global service's replica on a node that died or no longer matches.
    pub fn removed(&self, current: &Assignment) -> Assignment {
        current
            .iter()
            .filter(|(k, _)| !self.assignment.contains_key(*k) && !self.pending.contains_key(*k))
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
