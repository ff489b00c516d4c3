//! The `graph` stage: resources as a petgraph DAG whose edges mean "must exist before".
//! Apply walks it in waves (every resource of a wave is independent of the others, so a wave
//! runs in parallel); destroy walks the waves backwards.

use crate::model::{Resource, ResourceId};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// aHash rather than std's SipHash: the addresses come from the project's own Compose file,
/// not from anyone who could pick colliding keys, and hashing a hundred thousand of them with
/// SipHash was a visible part of a big project's plan.
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("dependency cycle between resources: {}", members.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → "))]
pub struct CycleError {
    pub members: Vec<ResourceId>,
}

pub struct Graph {
    dag: DiGraph<usize, ()>,
}

/// Build the graph of `resources` (by index). Dependencies on resources that are not in the
/// list (already present, or made by someone else) impose no order.
pub fn build(resources: &[Resource]) -> Result<Graph, CycleError> {
    let mut dag = DiGraph::with_capacity(resources.len(), resources.len() * 2);
    let nodes: Vec<NodeIndex> = (0..resources.len()).map(|i| dag.add_node(i)).collect();
    let mut by_address: FastMap<&ResourceId, NodeIndex> =
        FastMap::with_capacity_and_hasher(resources.len(), ahash::RandomState::new());
    by_address.extend(resources.iter().zip(&nodes).map(|(r, n)| (&r.address, *n)));
    for (r, &node) in resources.iter().zip(&nodes) {
        for dep in &r.depends_on {
            if let Some(&d) = by_address.get(dep) {
                dag.add_edge(d, node, ());
            }
        }
    }
    if toposort(&dag, None).is_err() {
        let cycle = tarjan_scc(&dag)
            .into_iter()
            .find(|c| c.len() > 1)
            .unwrap_or_default();
        let mut members: Vec<ResourceId> = cycle
            .iter()
            .map(|n| resources[dag[*n]].address.clone())
            .collect();
        members.sort();
        return Err(CycleError { members });
    }
    Ok(Graph { dag })
}

impl Graph {
    /// Resource indices grouped in waves: a resource's wave is one more than the latest wave
    /// among its dependencies.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let order = toposort(&self.dag, None).unwrap_or_default();
        // By node index: every node gets its level before any node that depends on it.
        let mut level: Vec<usize> = vec![0; self.dag.node_count()];
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for n in order {
            let l = self
                .dag
                .neighbors_directed(n, petgraph::Direction::Incoming)
                .map(|p| level[p.index()] + 1)
                .max()
                .unwrap_or(0);
            level[n.index()] = l;
            if waves.len() <= l {
                waves.resize_with(l + 1, Vec::new);
            }
            waves[l].push(self.dag[n]);
        }
        for w in &mut waves {
            w.sort_unstable();
        }
        waves
    }

    /// Destroy order: the apply waves reversed.
    pub fn destroy_waves(&self) -> Vec<Vec<usize>> {
        let mut w = self.waves();
        w.reverse();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resource::{ExternalNetwork, Spec};

    fn res(net: &str, deps: &[&str]) -> Resource {
        Resource {
            address: ResourceId::network(net),
            spec: Spec::External(ExternalNetwork {
                network: net.into(),
                name: net.into(),
            }),
            depends_on: deps.iter().map(|d| ResourceId::network(*d)).collect(),
        }
    }

    #[test]
    fn waves_respect_dependencies() {
        let rs = vec![
            res("link", &["ns", "net"]),
            res("ns", &[]),
            res("net", &[]),
            res("route", &["link"]),
        ];
        let g = build(&rs).unwrap();
        assert_eq!(g.waves(), vec![vec![1, 2], vec![0], vec![3]]);
        assert_eq!(g.destroy_waves()[0], vec![3]);
    }

    #[test]
    fn cycle_names_every_member() {
        let rs = vec![
            res("a", &["c"]),
            res("b", &["a"]),
            res("c", &["b"]),
            res("d", &[]),
        ];
        let e = build(&rs).err().unwrap();
        assert_eq!(e.members, ["a", "b", "c"].map(ResourceId::network));
        assert_eq!(
            e.to_string(),
            "dependency cycle between resources: network.a → network.b → network.c"
        );
    }
}
