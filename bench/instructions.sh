#!/usr/bin/env bash
# Count the instructions of `up` (root): the project of bench/lb.sh (SERVICES services x
# REPLICAS replicas, VIPs and policies) is brought up, then a scale of svc0 by one replica,
# an `up` with no change and the scale back down each run once under valgrind's callgrind.
# Prints each run's instructions (the netcompose process, all its threads; not the daemon's,
# not the kernel's) and those of its stages, inclusive, by the functions that carry them.
#
# Why: wall times on this kind of shared VM move by 10-30% from run to run, and the VM itself
# ran 2.4x slower in one session than in the one before (bench/lb.sh's header); instruction
# counts are the same for the same binary and input whatever else the machine does, so two
# commits compare in one run each. They leave out what the kernel does for the syscalls
# (namespaces, links, nf_tables transactions): bench/lb.sh measures that part.
#
#   sudo bench/instructions.sh            # 20 services x 10 replicas
#   sudo bench/instructions.sh 20 10
#   sudo NETCOMPOSE_BIN=/path/to/netcompose bench/instructions.sh   # a binary built elsewhere
#
# A stage missing from a binary's symbols (inlined into its caller) prints as "-". Build with
# debug symbols (the release profile keeps them) for the stages to be found.
#
# Measured on 3 Dec 2026 (f92b472, release build), 200 replicas: scale by one replica 177.8 M
# instructions: load 4.6 M, state read 18.7 M, model 9.0 M, observe 24.7 M (of which 6.1 M
# read the daemon's survey reply, JSON), diff 7.3 M, the two state saves 27.2 M, apply 30.8 M,
# daemon 3.9 M. The state file (468 KB of JSON here), read once and written twice, is a quarter
# of the instructions.
# Session 19 (5ec381f) against session 18's head (9a6e9d4), same run: scale 176.2 M against
# 176.8 M, no change 101.2 M against 105.0 M, scale back 189.6 M against 199.8 M.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
services=${1:-20}
replicas=${2:-10}
for t in valgrind callgrind_annotate unshare; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install valgrind util-linux)" >&2; exit 1; }
done
source "$repo/bench/binary.sh"
bench_work
export NC=$work/netcompose REPO=$repo SERVICES=$services REPLICAS=$replicas WORK=$work

# Everything runs inside a private network + mount namespace, as in bench/lb.sh.
unshare --net --mount --propagation private bash -euo pipefail <<'INNER'
source "$REPO/bench/lb_project.sh"
lb_sandbox
lb_project "$REPLICAS" > "$WORK/base.yaml"
lb_project "$((REPLICAS + 1))" > "$WORK/more.yaml"
# Down on any exit: the daemon would otherwise outlive the sandbox.
trap '"$NC" -f "$WORK/base.yaml" down >/dev/null 2>&1 || true' EXIT
# Each stage: a label and the function that carries it, as callgrind_annotate names it.
stages=(
  "load|netcompose::load::load"
  "state read|<&S as netcompose::state::Store>::read"
  "model|netcompose::reconcile::planning::build"
  "observe|netcompose::reconcile::session::Session::observe_to"
  "diff|netcompose::plan::diff::diff"
  "state saves|<&S as netcompose::state::Store>::save"
  "apply|netcompose::apply::apply::{{closure}}"
  "daemon|netcompose::reconcile::daemon::after_up"
)
millions() { awk '{gsub(",", "", $1); printf "%.1f M", $1 / 1e6}'; }
counted() { # $1: label, $2: compose file
  local out=$WORK/callgrind.out
  valgrind --tool=callgrind --callgrind-out-file="$out" "$NC" -f "$2" up >/dev/null 2>"$WORK/valgrind.log" \
    || { echo "$1: failed under valgrind:" >&2; tail -20 "$WORK/valgrind.log" >&2; exit 1; }
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null > "$WORK/annotated"
  local total parts=() entry label symbol n
  total=$(awk '/PROGRAM TOTALS/ {print $1}' "$WORK/annotated" | millions)
  for entry in "${stages[@]}"; do
    label=${entry%%|*} symbol=${entry#*|}
    # The function's largest line: callgrind_annotate sorts by cost, and splits a function
    # into a line per source file that its inlined code came from.
    n=$(grep -F -- ":$symbol" "$WORK/annotated" | grep -v -- '=>' | head -1 | millions || true)
    parts+=("$label ${n:--}")
  done
  local IFS=,
  echo "$1: $total instructions (${parts[*]})" | sed 's/,/, /g'
}
"$NC" -f "$WORK/base.yaml" up >/dev/null 2>&1
# One cycle first, so that the counted runs meet a project that has scaled before.
"$NC" -f "$WORK/more.yaml" up >/dev/null 2>&1
"$NC" -f "$WORK/base.yaml" up >/dev/null 2>&1
counted "scale by one replica" "$WORK/more.yaml"
counted "up with no change" "$WORK/more.yaml"
counted "scale back down" "$WORK/base.yaml"
INNER
