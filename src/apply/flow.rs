//! The build as a flow: each resource starts as soon as everything it depends on is built,
//! rather than once the whole wave of the graph before its own is. In waves, the nftables
//! tables of a wave (kernel CPU, under no lock of the kernel's but their namespace's) waited
//! for the last namespaces of the wave before, whose making the kernel partly serializes on
//! its locks, and a core was left idle meanwhile. Among the resources ready, those under
//! locks of their own only go first, but one under a machine-wide lock starts whenever none
//! is running (see [`Contention`]); among either, those with the longest chain of operations
//! still to follow first (a namespace before a link before a route), so that the chains that
//! take longest are not held up.

use super::{ApplyError, PARALLEL};
use crate::graph::Graph;
use futures::stream::{FuturesUnordered, StreamExt};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Run `op` on each resource of `graph` that `build` marks, once every resource it depends on
/// is done, at most [`PARALLEL`] at once. A resource not marked is done as soon as its own
/// dependencies are, with no operation: what depends on it still waits for what it depends
/// on. After an error no operation starts; those under way end, and every error is returned.
/// How many operations succeeded, otherwise.
pub(super) async fn flow<F, Fut>(
    graph: &Graph,
    build: &[bool],
    contention: &[Contention],
    op: F,
) -> Result<usize, Vec<ApplyError>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApplyError>>,
{
    let mut state = Flow::new(graph, build, contention);
    let op = &op;
    let mut running = FuturesUnordered::new();
    let (mut done, mut errors, mut machine_wide) = (0, Vec::new(), 0);
    loop {
        while errors.is_empty() && running.len() < PARALLEL {
            let Some(i) = state.next(machine_wide == 0) else {
                break;
            };
            if state.contention(i) == Contention::MachineWide {
                machine_wide += 1;
            }
            running.push(async move { (i, op(i).await) });
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        if state.contention(i) == Contention::MachineWide {
            machine_wide -= 1;
        }
        match result {
            Ok(()) => {
                done += 1;
                state.finished(i);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(errors)
    }
}

/// What an operation mostly waits for in the kernel besides the CPU. Operations under the
/// RTNL lock run one at a time machine-wide, so one of them always runs when one is ready: the
/// lock is never left idle. Other ready operations go before further ones: left to the order
/// of their chains, a replica's nftables table (whose chain ends with it) waited until the
/// last link and route of a 200-replica `up` had started, and the tables' kernel CPU, a tenth
/// of the `up`'s, came after them on both cores (perf record -a); going first, they run while
/// the links queue for the lock. Capping the RTNL operations in flight instead (at 4 or 8)
/// made that `up` 5-20% slower: their work outside the lock runs in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contention {
    /// Under the RTNL mutex, one holder at a time machine-wide: links, addresses, routes,
    /// and a namespace (its loopback device).
    MachineWide,
    /// Under locks of its own namespace or object only: an nftables table (its namespace's
    /// commit mutex), a replica's files.
    OwnOnly,
}

/// Which resources wait, and on how many others; which are ready.
struct Flow<'g> {
    graph: &'g Graph,
    build: &'g [bool],
    contention: &'g [Contention],
    heights: Vec<usize>,
    /// By index: how many of its dependencies are not done yet.
    waiting: Vec<usize>,
    /// Ready to build, by contention: each the longest chain of what must follow first, then
    /// in index order.
    ready_machine_wide: Ready,
    ready_own_only: Ready,
}

/// Resources ready to build, as (height, index).
type Ready = BinaryHeap<(usize, Reverse<usize>)>;

impl<'g> Flow<'g> {
    fn new(graph: &'g Graph, build: &'g [bool], contention: &'g [Contention]) -> Flow<'g> {
        let mut flow = Flow {
            graph,
            build,
            contention,
            heights: graph.heights(),
            waiting: (0..graph.len()).map(|i| graph.dependencies(i)).collect(),
            ready_machine_wide: BinaryHeap::new(),
            ready_own_only: BinaryHeap::new(),
        };
        let free: Vec<usize> = (0..graph.len()).filter(|&i| flow.waiting[i] == 0).collect();
        for i in free {
            flow.free(i);
        }
        flow
    }

    fn contention(&self, i: usize) -> Contention {
        self.contention
            .get(i)
            .copied()
            .unwrap_or(Contention::MachineWide)
    }

    /// The next resource to build, if one is ready: under a machine-wide lock if `idle` (none
    /// such is running) or nothing else is ready, else under its own locks only; of either,
    /// the first in [`Ready`]'s order.
    fn next(&mut self, idle: bool) -> Option<usize> {
        let wide = idle || self.ready_own_only.is_empty();
        let ready = match wide && !self.ready_machine_wide.is_empty() {
            true => &mut self.ready_machine_wide,
            false => &mut self.ready_own_only,
        };
        ready.pop().map(|(_, Reverse(i))| i)
    }

    /// Resource `i` is built: what depends on it waits on one less.
    fn finished(&mut self, i: usize) {
        let mut done = vec![i];
        while let Some(d) = done.pop() {
            for n in self.graph.dependents(d) {
                self.waiting[n] -= 1;
                if self.waiting[n] == 0 && !self.enqueue(n) {
                    done.push(n);
                }
            }
        }
    }

    /// Resource `i` waits on nothing: ready, or done at once if it is not built.
    fn free(&mut self, i: usize) {
        if !self.enqueue(i) {
            self.finished(i);
        }
    }

    /// Put `i` among the ready if it is to be built; false if it is not.
    fn enqueue(&mut self, i: usize) -> bool {
        let built = self.build.get(i).copied().unwrap_or(false);
        if built {
            let ready = match self.contention(i) {
                Contention::MachineWide => &mut self.ready_machine_wide,
                Contention::OwnOnly => &mut self.ready_own_only,
            };
            ready.push((self.heights[i], Reverse(i)));
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use super::Contention::{MachineWide, OwnOnly};
    use super::*;
    use crate::graph::tests::res;
    use crate::model::Resource;
    use std::sync::Mutex;

    fn graph(rs: &[Resource]) -> Graph {
        crate::graph::build(rs).unwrap()
    }

    /// What `flow` makes ready next, by name.
    fn next(f: &mut Flow, rs: &[Resource]) -> Option<String> {
        f.next(true).map(|i| rs[i].address.to_string())
    }

    #[test]
    fn a_resource_is_ready_once_its_dependencies_are_done_longest_chain_first() {
        let rs = [
            res("ns1", &[]),
            res("ns2", &[]),
            res("link1", &["ns1", "net"]),
            res("net", &[]),
            res("route1", &["link1"]),
            res("table2", &["ns2"]),
        ];
        let g = graph(&rs);
        let mut f = Flow::new(&g, &[true; 6], &[MachineWide; 6]);
        // ns1 and net start chains of three; ns2 one of two.
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.ns1"));
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.net"));
        f.finished(0);
        // link1 waits for net too.
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.ns2"));
        assert_eq!(next(&mut f, &rs), None);
        f.finished(1);
        f.finished(3);
        // link1, which route1 follows, before table2, which ends its chain.
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.link1"));
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.table2"));
        f.finished(2);
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.route1"));
        assert_eq!(next(&mut f, &rs), None);
    }

    #[test]
    fn what_needs_no_machine_wide_lock_goes_first_unless_none_that_does_runs() {
        let rs = [
            res("ns1", &[]),
            res("ns2", &[]),
            res("link1", &["ns1"]),
            res("route1", &["link1"]),
            res("table1", &["ns1"]),
            res("table2", &["ns2"]),
        ];
        let g = graph(&rs);
        let contention = [
            MachineWide,
            MachineWide,
            MachineWide,
            MachineWide,
            OwnOnly,
            OwnOnly,
        ];
        let mut f = Flow::new(&g, &[true; 6], &contention);
        assert_eq!(f.next(true), Some(0), "ns1 starts the longest chain");
        assert_eq!(f.next(false), Some(1), "nothing else is ready");
        f.finished(0);
        // While ns2 runs, table1 before link1, though link1 has a route to follow ...
        assert_eq!(f.next(false), Some(4));
        assert_eq!(f.next(false), Some(2), "nothing else is ready");
        f.finished(1);
        assert_eq!(f.next(false), Some(5));
        f.finished(2);
        // ... and once no machine-wide one runs, route1 goes first.
        assert_eq!(f.next(true), Some(3));
        assert_eq!(f.next(true), None);
    }

    #[test]
    fn what_is_not_built_passes_its_dependencies_on() {
        // link1 exists already: route1 still waits for ns1, which link1 depends on.
        let rs = [
            res("ns1", &[]),
            res("link1", &["ns1"]),
            res("route1", &["link1"]),
            res("other", &[]),
        ];
        let g = graph(&rs);
        let mut f = Flow::new(&g, &[true, false, true, true], &[MachineWide; 4]);
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.ns1"));
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.other"));
        assert_eq!(next(&mut f, &rs), None);
        f.finished(0);
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.route1"));
        // Nothing built but route1: it is ready at once.
        let mut f = Flow::new(&g, &[false, false, true, false], &[MachineWide; 4]);
        assert_eq!(next(&mut f, &rs).as_deref(), Some("network.route1"));
        assert_eq!(next(&mut f, &rs), None);
    }

    #[test]
    fn every_marked_resource_is_built_once_and_after_its_dependencies() {
        let rs = [
            res("ns1", &[]),
            res("link1", &["ns1", "net"]),
            res("net", &[]),
            res("route1", &["link1"]),
            res("ns2", &["ns1"]),
        ];
        let g = graph(&rs);
        let started = Mutex::new(Vec::new());
        let n = futures::executor::block_on(flow(
            &g,
            &[true, true, false, true, true],
            &[MachineWide; 5],
            |i| {
                started.lock().unwrap().push(i);
                async { Ok(()) }
            },
        ))
        .unwrap();
        let started = started.into_inner().unwrap();
        assert_eq!(n, 4);
        let at = |i: usize| started.iter().position(|&s| s == i).unwrap();
        assert!(at(0) < at(1) && at(1) < at(3) && at(0) < at(4));
        assert!(!started.contains(&2));
    }

    #[test]
    fn after_an_error_nothing_more_starts() {
        let rs = [res("a", &[]), res("b", &["a"]), res("c", &[])];
        let g = graph(&rs);
        let started = Mutex::new(Vec::new());
        let r = futures::executor::block_on(flow(&g, &[true; 3], &[MachineWide; 3], |i| {
            started.lock().unwrap().push(i);
            async move {
                match i {
                    0 => Err(ApplyError::Internal {
                        address: "a".into(),
                        message: "refused".into(),
                    }),
                    _ => Ok(()),
                }
            }
        }));
        assert_eq!(r.err().map(|e| e.len()), Some(1));
        // a and c were started together (both ready); b, which needed a, never was.
        let mut started = started.into_inner().unwrap();
        started.sort();
        assert_eq!(started, [0, 2]);
    }
}
