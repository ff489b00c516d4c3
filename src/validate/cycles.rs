//! Cycles through depends_on and network_mode (service:/container:), reported with the whole
//! loop spelled out.

use super::refs::container_owner;
use crate::diag::{ConfigError, Diagnostics};
use crate::source::Span;
use crate::spec::{NetworkMode, Project};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    let mut graph: DiGraph<&str, Span> = DiGraph::new();
    let index: HashMap<&str, NodeIndex> = project
        .services
        .keys()
        .map(|k| (k.as_str(), graph.add_node(k.as_str())))
        .collect();
    for (key, svc) in &project.services {
        let from = index[key.as_str()];
        let mut targets: Vec<(&str, Span)> = svc
            .depends_on
            .iter()
            .map(|d| (d.service.value.as_str(), d.service.span))
            .collect();
        if let Some(mode) = &svc.network_mode {
            let target = match &mode.value {
                NetworkMode::Service(t) => Some(t.as_str()),
                NetworkMode::Container(c) => container_owner(project, c),
                _ => None,
            };
            targets.extend(target.map(|t| (t, mode.span)));
        }
        for (target, span) in targets {
            if let Some(&to) = index.get(target) {
                if to != from {
                    graph.add_edge(from, to, span);
                }
            }
        }
    }
    for scc in tarjan_scc(&graph).into_iter().filter(|c| c.len() > 1) {
        let mut members = scc.clone();
        members.sort_by_key(|n| graph[*n]);
        let path = loop_through(&graph, &members);
        let names: Vec<&str> = path
            .iter()
            .map(|n| graph[*n])
            .chain(std::iter::once(graph[path[0]]))
            .collect();
        let at = graph
            .find_edge(path[0], path[1 % path.len()])
            .map_or(Span::default(), |e| graph[e]);
        diags.push(ConfigError::Cycle {
            cycle: names.join(" → "),
            at,
        });
    }
}

/// A loop that starts at the first member and returns to it, staying within the component.
fn loop_through(graph: &DiGraph<&str, Span>, members: &[NodeIndex]) -> Vec<NodeIndex> {
    let start = members[0];
    let mut path = vec![start];
    let mut visited = vec![start];
    if dfs(graph, members, start, start, &mut path, &mut visited) {
        path
    } else {
        members.to_vec()
    }
}

fn dfs(
    graph: &DiGraph<&str, Span>,
    members: &[NodeIndex],
    start: NodeIndex,
    at: NodeIndex,
    path: &mut Vec<NodeIndex>,
    visited: &mut Vec<NodeIndex>,
) -> bool {
    let mut next: Vec<NodeIndex> = graph
        .neighbors(at)
        .filter(|n| members.contains(n))
        .collect();
    next.sort_by_key(|n| graph[*n]);
    for n in next {
        if n == start {
            return true;
        }
        if !visited.contains(&n) {
            visited.push(n);
            path.push(n);
            if dfs(graph, members, start, n, path, visited) {
                return true;
            }
            path.pop();
        }
    }
    false
}
