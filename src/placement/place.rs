//! The placement algorithm, in two passes so that what stays of every service counts in the
//! nodes' load before anything is placed. First, per service, what stays: replicas on a live node that still matches
//! (up to the maximum per node; a global service keeps one per node), less a scale-down, which
//! drops replicas that lost their node first, then takes from the most loaded nodes, highest
//! index first. Then, service by service in name order, what must be placed (replicas that lost
//! their node, keeping their index, then new ones at the lowest free indexes) goes to the
//! matching node with the fewest replicas of the service, then the fewest replicas in all, then
//! the first name. Services that join another replica's namespace (network_mode) go last, to
//! that replica's node.

use super::{
    constraint::matches_all, Assignment, Demand, Move, NoSuitableNode, Node, Placement, ReplicaKey,
};
use crate::spec::DeployMode;
use std::collections::{BTreeMap, BTreeSet};

/// One service while it is placed.
struct Service<'a> {
    demand: &'a Demand,
    /// Live nodes that match the constraints.
    eligible: BTreeSet<&'a str>,
    /// The indexes each node runs.
    on: BTreeMap<&'a str, BTreeSet<u32>>,
    /// Replicas to place again (their node died, no longer matches, or holds too many).
    orphans: BTreeSet<u32>,
}

impl Service<'_> {
    fn count_on(&self, node: &str) -> usize {
        self.on.get(node).map_or(0, BTreeSet::len)
    }

    fn has_room(&self, node: &str) -> bool {
        self.demand
            .max_per_node
            .is_none_or(|m| self.count_on(node) < m as usize)
    }

    fn running(&self) -> usize {
        self.on.values().map(BTreeSet::len).sum()
    }
}

/// The new assignment. Node names are unique (a repeated name: the last one counts); a demand
/// repeated for one service: the first one counts.
pub fn place(nodes: &[Node], demands: &[Demand], current: &Assignment) -> Placement {
    let nodes: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut demands: Vec<&Demand> = demands.iter().collect();
    demands.sort_by(|a, b| a.service.cmp(&b.service));
    demands.dedup_by(|a, b| a.service == b.service);
    let (joiners, demands): (Vec<&Demand>, Vec<&Demand>) =
        demands.into_iter().partition(|d| d.joins.is_some());
    let mut services: Vec<Service> = demands.iter().map(|d| keep(d, &nodes, current)).collect();
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &services {
        for (node, indexes) in &s.on {
            *load.entry(node).or_default() += indexes.len();
        }
    }
    let mut out = Placement::default();
    for s in &mut services {
        fill(s, &nodes, &mut load, &mut out);
    }
    for s in &services {
        for (node, indexes) in &s.on {
            for i in indexes {
                out.assignment
                    .insert(ReplicaKey::new(&s.demand.service, *i), node.to_string());
            }
        }
    }
    join(&joiners, &nodes, &mut out);
    // A key that changes node is a move, whatever the cause: an orphan placed again, or a
    // global service's freed index taken on another node.
    for (key, to) in &out.assignment {
        if let Some(from) = current.get(key).filter(|from| *from != to) {
            let m = Move {
                from: from.clone(),
                to: to.clone(),
            };
            out.moved.insert(key.clone(), m);
        }
    }
    out
}

/// The first pass: what of `current` stays, and for a global service, the new replicas too
/// (their nodes are fixed).
fn keep<'a>(
    demand: &'a Demand,
    nodes: &BTreeMap<&'a str, &'a Node>,
    current: &Assignment,
) -> Service<'a> {
    let eligible = nodes
        .iter()
        .filter(|(_, n)| n.alive && matches_all(&demand.constraints, n))
        .map(|(name, _)| *name)
        .collect();
    let mut s = Service {
        demand,
        eligible,
        on: BTreeMap::new(),
        orphans: BTreeSet::new(),
    };
    let first = ReplicaKey::new(&demand.service, 0);
    let last = ReplicaKey::new(&demand.service, u32::MAX);
    for (key, node) in current.range(first..=last) {
        let Some(name) = s.eligible.get(node.as_str()).copied() else {
            // A global replica belongs to its node: it goes with it.
            if demand.mode == DeployMode::Replicated {
                s.orphans.insert(key.index);
            }
            continue;
        };
        let here = s.on.entry(name).or_default();
        match demand.mode {
            DeployMode::Replicated => {
                here.insert(key.index);
            }
            // One per node: a second one (left by a change of mode) is removed.
            DeployMode::Global => {
                if here.is_empty() {
                    here.insert(key.index);
                }
            }
        }
    }
    match demand.mode {
        DeployMode::Replicated => {
            over_the_maximum(&mut s);
            scale_down(&mut s);
        }
        DeployMode::Global => {
            let missing: Vec<&str> = s
                .eligible
                .iter()
                .copied()
                .filter(|n| s.count_on(n) == 0)
                .collect();
            let fresh = free_indexes(&s, missing.len());
            for (node, index) in missing.into_iter().zip(fresh) {
                s.on.entry(node).or_default().insert(index);
            }
        }
    }
    s
}

/// A node over the maximum (it was lowered) gives up its highest indexes, to be placed again.
fn over_the_maximum(s: &mut Service) {
    let Some(max) = s.demand.max_per_node else {
        return;
    };
    for indexes in s.on.values_mut() {
        while indexes.len() > max as usize {
            if let Some(i) = indexes.pop_last() {
                s.orphans.insert(i);
            }
        }
    }
}

/// Fewer replicas wanted: first those that lost their node (highest index first), then the
/// highest index of the most loaded node.
fn scale_down(s: &mut Service) {
    let want = s.demand.replicas as usize;
    while s.running() + s.orphans.len() > want && s.orphans.pop_last().is_some() {}
    while s.running() > want {
        let fullest =
            s.on.iter_mut()
                .filter(|(_, indexes)| !indexes.is_empty())
                .max_by_key(|(_, indexes)| (indexes.len(), indexes.last().copied()));
        match fullest {
            Some((_, indexes)) => {
                indexes.pop_last();
            }
            None => break,
        }
    }
}

/// The `count` lowest indexes (from 1) that no replica of the service holds.
fn free_indexes(s: &Service, count: usize) -> Vec<u32> {
    let used: BTreeSet<u32> =
        s.on.values()
            .flatten()
            .chain(s.orphans.iter())
            .copied()
            .collect();
    (1..=u32::MAX)
        .filter(|i| !used.contains(i))
        .take(count)
        .collect()
}

/// The second pass for a replicated service: its orphans, then its new replicas.
fn fill<'a>(
    s: &mut Service<'a>,
    nodes: &BTreeMap<&'a str, &'a Node>,
    load: &mut BTreeMap<&'a str, usize>,
    out: &mut Placement,
) {
    if s.demand.mode == DeployMode::Global {
        return;
    }
    let missing = (s.demand.replicas as usize).saturating_sub(s.running() + s.orphans.len());
    let fresh = free_indexes(s, missing);
    let orphans = std::mem::take(&mut s.orphans);
    for index in orphans.into_iter().chain(fresh) {
        let key = ReplicaKey::new(&s.demand.service, index);
        let best = s
            .eligible
            .iter()
            .copied()
            .filter(|n| s.has_room(n))
            .min_by_key(|n| (s.count_on(n), load.get(n).copied().unwrap_or(0), *n));
        let Some(node) = best else {
            out.pending.insert(key, explain(s, nodes));
            continue;
        };
        s.on.entry(node).or_default().insert(index);
        *load.entry(node).or_default() += 1;
    }
}

/// Why no node takes one more replica of `s`: each node under the first check it fails.
fn explain(s: &Service, nodes: &BTreeMap<&str, &Node>) -> NoSuitableNode {
    let mut why = NoSuitableNode::default();
    for (name, node) in nodes {
        if !node.alive {
            why.unavailable += 1;
        } else if !matches_all(&s.demand.constraints, node) {
            why.constraints += 1;
        } else if !s.has_room(name) {
            why.max_replicas += 1;
        }
    }
    why
}

/// Services that run in another replica's namespace go to its node, once it has one (a chain
/// of them resolves from its end; validate refuses cycles, which stay pending here). Their
/// count is Compose's, whatever the mode, as the model builds them.
fn join(joiners: &[&Demand], nodes: &BTreeMap<&str, &Node>, out: &mut Placement) {
    let mut left: Vec<&Demand> = joiners.to_vec();
    while !left.is_empty() {
        let waiting = |d: &Demand| {
            d.joins
                .as_ref()
                .is_some_and(|t| left.iter().any(|o| o.service == t.service))
        };
        let (ready, still): (Vec<&Demand>, Vec<&Demand>) = left.iter().partition(|d| !waiting(d));
        let stuck = ready.is_empty();
        for d in if stuck { &still } else { &ready } {
            place_joiner(d, nodes, out);
        }
        left = if stuck { Vec::new() } else { still };
    }
}

fn place_joiner(d: &Demand, nodes: &BTreeMap<&str, &Node>, out: &mut Placement) {
    let target = d
        .joins
        .as_ref()
        .and_then(|t| out.assignment.get(t))
        .cloned();
    let node = target.as_deref().and_then(|t| nodes.get(t).copied());
    for index in 1..=d.replicas {
        let key = ReplicaKey::new(&d.service, index);
        let mut why = NoSuitableNode::default();
        match node {
            Some(n) if !n.alive => why.unavailable = 1,
            Some(n) if !matches_all(&d.constraints, n) => why.constraints = 1,
            Some(_) if d.max_per_node.is_some_and(|m| index > m) => why.max_replicas = 1,
            Some(n) => {
                out.assignment.insert(key, n.name.clone());
                continue;
            }
            None => {}
        }
        out.pending.insert(key, why);
    }
}
