#!/usr/bin/env bash
# The control plane's figures on a 3-host sandbox cluster (tests/agent_bench.rs on
# tests/common/cluster.rs: 3 hosts, 3 etcd members, one `netcompose agent` per host, all
# contained and removed at the end):
#
#   - `up` of BENCH_REPLICAS replicas (300) on one overlay network until every host reports
#     it converged, and the etcd revisions it took, split by writer (read back from etcd's
#     history: `up`, each agent, a lease expiring);
#   - the revisions of a scale by one replica, with `up --scale` and by editing the file;
#     each run's revisions split by writer: `up`, `agent <node>` (its status), a probe's
#     finding, a lease expiring;
#   - the revisions over BENCH_STEADY seconds (30) of steady state (keep-alives write none);
#   - the time from `kill -9` of an agent to its keys' removal, over BENCH_KILLS kills (10),
#     with the agents' TTL of the tests (2 s);
#   - BENCH_ADDS (50) times, a replica added on n0 by `up --scale`: the time from `up`'s start
#     until it answers a ping from a replica on n1 and on n2, resolves there and is in their
#     VIP map (p50, p99, max).
#
#   sudo bench/cluster.sh
#   BENCH_REPLICAS=30 BENCH_STEADY=5 BENCH_KILLS=3 BENCH_ADDS=5 sudo -E bench/cluster.sh
#   PROFILE=release sudo -E bench/cluster.sh   # optimised build (slow to build on 2 cores)
#
# Needs root and etcd (Debian's etcd-server).
#
# Measured with every agent deriving the other hosts' endpoints from `up`'s write (no endpoint
# keys) and applying a new view of the same files as a difference to its record. RELEASE
# build, 2-CPU VM, quiet machine (load average under 2 before the run), 2 Dec 2026, full sizes:
#   - up of 300 replicas, every host converged: 1.81 s; 4 revisions: up 1, one report per
#     agent (n0 1, n1 1, n2 1);
#   - scale by one with `up --scale` (0.87 s): 2 revisions: up 1, the agent that builds it 1
#     (its status: `up` waits for it, so it cannot be folded into `up`'s transaction); the
#     other agents program the replica from `up`'s write and write nothing;
#   - scale by one by editing the file (1.14 s): 4 revisions: up 1, every agent 1 (a new spec);
#   - steady state over 30 s: 0 revisions;
#   - removal after kill -9, 10 kills, sorted: 2.03 2.37 2.38 2.39 2.41 2.42 2.44 2.44 2.47
#     2.48 s (TTL 2 s);
#   - an added replica reachable, resolvable and in the VIP on both other hosts, 50 adds:
#     p50 0.407 s, p99 0.575 s, max 0.575 s (up's write reached the store at p50 0.067 s).
# A release build of the code before these changes (each host waited for the building host's
# endpoint key, then read every namespace back), same machine, quiet, 1 h 45 min earlier: up of
# 300 in 2.30 s, arrival p50 0.527 s, p99 1.101 s. A debug build under load (8-20) gave, after: up
# 8.19 s, arrival p50 0.905 s, p99 1.168 s; before: p50 2.06 s, p99 6.10 s.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $EUID -ne 0 ]]; then
    echo "bench/cluster.sh needs root (namespaces)" >&2
    exit 1
fi
command -v etcd >/dev/null || { echo "missing etcd (apt-get install etcd-server)" >&2; exit 1; }
profile=()
if [[ ${PROFILE:-debug} == release ]]; then
    profile=(--release)
fi
cd "$repo"
cargo test "${profile[@]}" --test agent_bench -- --ignored --nocapture --test-threads=1 bench_
