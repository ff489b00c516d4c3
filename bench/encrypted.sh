#!/usr/bin/env bash
# Encrypted paths between two sandbox hosts, in one run (tests/wireguard.rs, bench_encrypted,
# on tests/common/cluster.rs: two hosts on an underlay bridge, everything removed at the end):
# one TCP stream (iperf3) per path, each path once per round, BENCH_ROUNDS rounds (3) of
# BENCH_SECONDS seconds (5), then the median per path:
#
#   - direct, on the underlay;
#   - plain VXLAN over the underlay (MTU 1450);
#   - netcompose's userspace WireGuard engine (gotatun on TUN, MTU 1420);
#   - VXLAN over that engine's addresses (MTU 1370), as an encrypted overlay runs;
#   - wireguard-go set up by hand with `wg` and `ip` (MTU 1420);
#
# then netcompose's own overlays as its agents build them (tests/agent_encrypted.rs,
# bench_encrypted_overlay: two sandbox hosts, an etcd member and an agent each, a replica on
# each host): the underlay, the plain overlay and the encrypted overlay, between the replicas.
#
#   sudo bench/encrypted.sh
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 sudo -E bench/encrypted.sh
#
# Always a release build: debug crypto measures the compiler, not the engine. Needs root,
# etcd (Debian's etcd-server), iperf3, and wireguard-go + wireguard-tools (installed here
# with apt-get when missing).
# boringtun-cli is not in the run: Debian has no package, and `cargo install boringtun-cli`
# builds for minutes on 2 cores; multihost notes §5.7 measured it below gotatun-cli.
#
# Measured in one run (release build, 2-core VM, BENCH_ROUNDS=5, medians; round 5 of the first
# test was disturbed, all paths halved): by hand, direct 21.69, plain VXLAN 13.39, netcompose's
# userspace WireGuard 0.62, VXLAN over it 0.53, wireguard-go 0.37 Gbit/s (our engine was
# ahead of wireguard-go in every round); through netcompose's agents, direct 19.64, plain
# overlay 12.13, encrypted overlay 0.46 Gbit/s (rounds 0.40-0.49).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $EUID -ne 0 ]]; then
    echo "bench/encrypted.sh needs root (namespaces, TUN devices)" >&2
    exit 1
fi
command -v iperf3 >/dev/null || { echo "missing iperf3 (apt-get install iperf3)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "missing etcd (apt-get install etcd-server)" >&2; exit 1; }
if ! command -v wireguard-go >/dev/null || ! command -v wg >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        wireguard-go wireguard-tools
fi
cd "$repo"
cargo test --release --test wireguard -- --ignored --nocapture --test-threads=1 bench_encrypted
cargo test --release --test agent_encrypted -- --ignored --nocapture --test-threads=1 bench_encrypted_overlay
