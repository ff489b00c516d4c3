#!/usr/bin/env bash
# The control plane's figures on a 3-host sandbox cluster (tests/agent_bench.rs on
# tests/common/cluster.rs: 3 hosts, 3 etcd members, one `netcompose agent` per host, all
# contained and removed at the end):
#
#   - `up` of BENCH_REPLICAS replicas (300) on one overlay network until every host reports
#     it converged, and the etcd revisions it took, split by writer (read back from etcd's
#     history: `up`, each agent, a lease expiring);
#   - the revisions of a scale by one replica, with `up --scale` and by editing the file;
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
# Measured on a DEBUG build, 2-CPU machine under heavy load (load average 18-21 from other
# builds; no release figure yet), full sizes:
#   - up of 300 replicas, every host converged: 6.30 s; 4 revisions: up 1, one report per
#     agent (n0 1, n1 1, n2 1);
#   - scale by one with `up --scale`: 2 revisions: up 1, the agent that builds it 1 (its
#     endpoints and status in one transaction); the other agents write nothing;
#   - scale by one by editing the file: 4 revisions: up 1, every agent 1 (a new spec);
#   - steady state over 30 s: 0 revisions;
#   - removal after kill -9, 10 kills, sorted: 1.59 1.87 2.01 2.08 2.22 2.26 2.30 2.37 2.37
#     2.46 s (TTL 2 s);
#   - an added replica reachable, resolvable and in the VIP on both other hosts: p50 2.06 s,
#     p99 6.10 s, max 6.10 s over 50 adds (up's write reached the store at p50 0.25 s). On a
#     quieter moment, 5 adds: p50 0.75 s, p99 0.82 s.
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
