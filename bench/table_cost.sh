#!/usr/bin/env bash
# What each part of a replica's nftables table costs the kernel (root, perf): the table that
# bench/lb.sh's `up` with VIPs and policies writes into each of its 200 namespaces, and the same
# table without one of its parts, each loaded into N fresh namespaces while `perf record -a`
# samples every CPU; the figure is the kernel's CPU under nfnetlink's batch (the table's
# transaction), per table. `nft -f` writes the tables (its own parsing is user space, not
# counted), so that a part can be taken out as text.
#
# Why: a temporary build whose `up` skipped the replica tables' kernel writes but did
# everything else (expanded, compiled and encoded them) took as long as the up without VIPs or
# policies (bench/ab.sh STEPS=ups, 12 cycles, 4 Dec 2026: 221 against 220 ms; 238 with the
# writes): the VIP up's extra time is the kernel's work on these tables, and this says which
# part of it is what.
#
#   sudo bench/table_cost.sh            # 150 namespaces per variant, 2 rounds
#   sudo N=200 ROUNDS=3 bench/table_cost.sh
#
# Variants: `full` (as written); `no-drops` (the dispatch map without the `VIP : drop` entries
# of VIPs whose policy refuses this replica); `no-backend-maps` (each VIP's chain a `dnat` to one
# address: no interval maps); `no-policy` (no ingress chain, no peer sets); `no-ct` (the ingress
# chain without `ct state established,related accept`); `policy-only` (no VIP parts at all).
#
# Measured (4 Dec 2026, 2 CPUs, 6.18 kernel, 150 namespaces, two runs of two rounds, samples
# at 10 kHz): full 144-149 us of kernel CPU per table; without the drop entries 126-140 (-7 to
# -12%); without the backend maps 102-104 (-30%: two named interval maps of 19 elements,
# inserted one by one with the rbtree's overlap checks, each transaction also allocating and
# zeroing its lookup array); without the policy 85-88 (-40%); without the ct rule 134-145
# (-5%); the policy alone 70-79 (the VIP parts half of the table). The two VIPs' ranges in
# one interval map, each VIP's chain reading its own window (`numgen random mod 65536 offset
# K`), cost the same as two maps (134 / 156 against 148 / 148 us, by hand): the cost is per
# element, not per set. Peer sets as interval sets, each service's ten contiguous addresses
# one range, cost 10% less (134-135 against 149-155 us, three rounds by hand), at the price of
# an interval set's lookup array rebuilt by every scale that changes them (200 tables here).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for t in perf nft python3 unshare; do
    command -v "$t" >/dev/null || { echo "bench/table_cost.sh needs $t" >&2; exit 1; }
done
source "$repo/bench/binary.sh"
bench_work
export NC=$work/netcompose REPO=$repo WORK=$work N=${N:-150} ROUNDS=${ROUNDS:-2}

unshare --net --mount --propagation private bash -euo pipefail <<'INNER'
source "$REPO/bench/lb_project.sh"
lb_sandbox
SERVICES=20 REPLICAS=10 lb_project 10 > "$WORK/compose.yaml"
# Set before the up: a daemon it started would otherwise outlive the sandbox if the up failed
# halfway (as in bench/lb.sh).
trap '"$NC" -f "$WORK/compose.yaml" down >/dev/null 2>&1 || true; for i in $(seq 1 "$N"); do ip netns del "tc$i" 2>/dev/null || true; done' EXIT
trap 'exit 1' HUP INT PIPE TERM
"$NC" -f "$WORK/compose.yaml" up >/dev/null 2>&1
ip netns exec lbbench-svc3-1 nft list table inet netcompose > "$WORK/full.nft"
"$NC" -f "$WORK/compose.yaml" down >/dev/null 2>&1
python3 - "$WORK" <<'PY'
import re, sys
work = sys.argv[1]
full = open(f"{work}/full.nft").read()
# nft's own parser types `numgen` as an integer, not a mark: the maps are declared by typeof.
full = full.replace("type mark : ipv4_addr", "typeof numgen random mod 65536 : ip daddr")
full = re.sub(r"counter packets \d+ bytes \d+", "counter", full)
maps = re.compile(r"\tmap vip\.\S+ \{.*?\n\t\}\n\n", re.S)
variants = {
    "full": full,
    "no-drops": re.sub(r"(, )?[\d.]+ : drop(, )?", lambda m: ", " if m[1] and m[2] else "", full),
    # Each VIP's chain a dnat to one address of the network instead of its map.
    "no-backend-maps": re.sub(
        r"numgen random mod 65536 map @vip\.\S+", "10.90.0.140", maps.sub("", full)),
    "no-policy": re.sub(r"\tset from\.\S+ \{.*?\n\t\}\n\n", "",
                        re.sub(r"\tchain ingress \{.*?\n\t\}\n", "", full, flags=re.S), flags=re.S),
    "no-ct": re.sub(r"\t\tct state established,related accept.*\n", "", full),
    "policy-only": re.sub(r"\tchain vip\S* \{.*?\n\t\}\n\n", "", maps.sub("", full), flags=re.S),
}
for name, text in variants.items():
    open(f"{work}/{name}.nft", "w").write(text)
PY
variants="full no-drops no-backend-maps no-policy no-ct policy-only"
hz=10000 # perf's sampling rate: each sample is 1e6 / hz us of a CPU
per_table() { echo $(($1 * 1000000 / hz / N)); }
for v in $variants; do nft -c -f "$WORK/$v.nft"; done
for round in $(seq 1 "$ROUNDS"); do
  for v in $variants; do
    for i in $(seq 1 "$N"); do ip netns add "tc$i"; done
    perf record -q -a -g -F "$hz" -o "$WORK/perf.data" -- \
      bash -c 'for i in $(seq 1 "$N"); do ip netns exec "tc$i" nft -f "$WORK/'"$v"'.nft"; done'
    for i in $(seq 1 "$N"); do ip netns del "tc$i"; done
    samples=$(perf script -i "$WORK/perf.data" -F ip,sym 2>/dev/null \
      | awk 'BEGIN {RS = ""} /nfnetlink_rcv_batch/ {n++} END {print n + 0}')
    echo "$samples" >> "$WORK/samples.$v"
    echo "round $round $v: $(per_table "$samples") us of kernel CPU per table"
    sleep 1 # the namespaces freed before the next variant
  done
done
echo "medians of $ROUNDS rounds, $N tables each (kernel CPU under the table's transaction):"
for v in $variants; do
  m=$(sort -n "$WORK/samples.$v" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
  echo "  $v: $(per_table "$m") us per table"
done
INNER
