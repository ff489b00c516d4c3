//! The `graph` stage: resources as a petgraph DAG whose edges mean "must exist before".
//! Apply builds along it, each resource once its dependencies are built; destroy walks it in
//! waves backwards (every resource of a wave is independent of the others, so a wave runs in
//! parallel).

use crate::model::{Resource, ResourceId};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
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
    let nodes: Vec<Node> = resources
        .iter()
        .map(|r| (&r.address, r.depends_on.as_slice()))
        .collect();
    Ok(Graph { dag: dag(&nodes)? })
}

/// A resource as the graph sees it: its address and what it depends on.
type Node<'a> = (&'a ResourceId, &'a [ResourceId]);

/// [`build`]'s error, if any, without the graph: whether the dependencies of `resources` have
/// a cycle. Every resource has a rank by the kind of its address ([`rank`]); where no
/// resource depends on one of a higher rank, a cycle can only be made of dependencies
/// between resources of one rank (along any other it would have to come back down), so only
/// the resources of the ranks that have such dependencies are put in a graph: on a project
/// with `depends_on`, its namespaces, a seventh of its resources. Otherwise, all of them.
pub fn check(resources: &[Resource]) -> Result<(), CycleError> {
    let mut level = [false; RANKS];
    for r in resources {
        let own = rank(&r.address);
        for dep in &r.depends_on {
            match rank(dep).cmp(&own) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => level[own] = true,
                std::cmp::Ordering::Greater => return build(resources).map(drop),
            }
        }
    }
    let nodes: Vec<Node> = resources
        .iter()
        .filter(|r| level[rank(&r.address)])
        .map(|r| (&r.address, r.depends_on.as_slice()))
        .collect();
    dag(&nodes).map(drop)
}

/// How many ranks [`rank`] gives.
const RANKS: usize = 4;

/// The rank of a resource by its address: what the model makes it depend on has a lower one
/// (a link depends on its namespace and its network, a route on its link, ...); only
/// namespaces depend on others of their rank (`depends_on`). [`check`] relies on that for
/// its speed only: with a dependency that goes up a rank it checks every resource.
fn rank(address: &ResourceId) -> usize {
    match address {
        ResourceId::Network(_) | ResourceId::Dns(_) | ResourceId::Daemon => 0,
        ResourceId::Vxlan(_)
        | ResourceId::Replica(_)
        | ResourceId::Vip { .. }
        | ResourceId::HostFirewall => 1,
        ResourceId::Remote { .. }
        | ResourceId::Link(..)
        | ResourceId::Files(_)
        | ResourceId::ReplicaFirewall(_) => 2,
        ResourceId::Route(..) => 3,
    }
}

/// The graph of `nodes` (by index), or the cycle its dependencies make.
fn dag(nodes: &[Node]) -> Result<DiGraph<usize, ()>, CycleError> {
    let mut dag = DiGraph::with_capacity(nodes.len(), nodes.len() * 2);
    let indexes: Vec<NodeIndex> = (0..nodes.len()).map(|i| dag.add_node(i)).collect();
    let mut by_address: FastMap<&ResourceId, NodeIndex> =
        FastMap::with_capacity_and_hasher(nodes.len(), ahash::RandomState::new());
    by_address.extend(nodes.iter().zip(&indexes).map(|((a, _), n)| (*a, *n)));
    for ((_, depends_on), &node) in nodes.iter().zip(&indexes) {
        for dep in *depends_on {
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
        let mut members: Vec<ResourceId> = cycle.iter().map(|n| nodes[dag[*n]].0.clone()).collect();
        members.sort();
        return Err(CycleError { members });
    }
    Ok(dag)
}

impl Graph {
    /// How many resources the graph holds (indices `0..len`).
    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// The resources that depend on resource `i` directly.
    pub fn dependents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.dag
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| self.dag[n])
    }

    /// How many resources resource `i` depends on directly.
    pub fn dependencies(&self, i: usize) -> usize {
        self.dag
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .count()
    }

    /// Each resource's level, by index: 0 for one that depends on nothing, else one more than
    /// the highest level among its dependencies.
    pub fn levels(&self) -> Vec<usize> {
        self.longest_chains(Direction::Incoming)
    }

    /// Each resource's height, by index: 0 for one that nothing depends on, else one more than
    /// the highest height among the resources that depend on it (the longest chain of
    /// operations that must follow its own).
    pub fn heights(&self) -> Vec<usize> {
        self.longest_chains(Direction::Outgoing)
    }

    /// By index: how many edges the longest path has that reaches each resource from its
    /// `towards` side (Incoming: its dependencies, for [`Graph::levels`]; Outgoing: what
    /// depends on it, for [`Graph::heights`]). Each resource is worked out after every one on
    /// that side of it: in topological order, or in its reverse.
    fn longest_chains(&self, towards: Direction) -> Vec<usize> {
        let mut order = toposort(&self.dag, None).unwrap_or_default();
        match towards {
            Direction::Incoming => {}
            Direction::Outgoing => order.reverse(),
        }
        let mut length: Vec<usize> = vec![0; self.dag.node_count()];
        for n in order {
            length[self.dag[n]] = self
                .dag
                .neighbors_directed(n, towards)
                .map(|m| length[self.dag[m]] + 1)
                .max()
                .unwrap_or(0);
        }
        length
    }

    /// Resource indices grouped in waves by their [`Graph::levels`].
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (i, l) in self.levels().into_iter().enumerate() {
            if waves.len() <= l {
                waves.resize_with(l + 1, Vec::new);
            }
            waves[l].push(i);
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
pub(crate) mod tests {
    use super::*;
    use crate::model::resource::{ExternalNetwork, Spec};
    use crate::model::ReplicaId;

    /// An external network `net` that depends on the networks `deps`: a node with edges and
    /// nothing else.
    pub(crate) fn res(net: &str, deps: &[&str]) -> Resource {
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
        assert_eq!(g.heights(), [1, 2, 2, 0]);
        assert_eq!(g.destroy_waves()[0], vec![3]);
    }

    /// A namespace of service `service`, depending on the first replica of each of `deps`.
    fn namespace(service: &str, deps: &[&str]) -> Resource {
        Resource {
            address: ResourceId::Replica(ReplicaId::new(service, 1)),
            depends_on: deps
                .iter()
                .map(|d| ResourceId::Replica(ReplicaId::new(*d, 1)))
                .collect(),
            ..res(service, &[])
        }
    }

    /// A link of `service`'s first replica, on its namespace and `network`.
    fn link(service: &str, network: &str) -> Resource {
        let replica = ReplicaId::new(service, 1);
        Resource {
            address: ResourceId::Link(replica.clone(), network.into()),
            depends_on: vec![ResourceId::Replica(replica), ResourceId::network(network)],
            ..res(network, &[])
        }
    }

    /// The check finds what the graph finds, whether the dependencies go only down the ranks
    /// (then only namespaces are put in a graph) or not.
    #[test]
    fn check_finds_the_cycles_the_graph_finds() {
        let cases = [
            vec![namespace("a", &["b"]), namespace("b", &[]), link("a", "n")],
            vec![
                namespace("a", &["c"]),
                namespace("b", &["a"]),
                namespace("c", &["b"]),
                link("a", "n"),
                res("n", &[]),
            ],
            vec![res("a", &["c"]), res("b", &["a"]), res("c", &["b"])],
            // A network that depends on a link: a dependency up the ranks.
            vec![
                Resource {
                    depends_on: vec![link("a", "n").address],
                    ..res("n", &[])
                },
                link("a", "n"),
                namespace("a", &[]),
            ],
            vec![res("n", &[]), link("a", "n"), namespace("a", &[])],
        ];
        for (k, resources) in cases.iter().enumerate() {
            let built = build(resources).err();
            assert_eq!(check(resources).err(), built, "{k}");
        }
        assert!(check(&cases[0]).is_ok());
        assert!(check(&cases[1]).is_err());
        assert!(check(&cases[2]).is_err());
        assert!(check(&cases[3]).is_err());
        assert!(check(&cases[4]).is_ok());
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
