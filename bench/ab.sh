#!/usr/bin/env bash
# Compare two netcompose binaries on the steps of bench/lb.sh (root), alternated in one
# sandbox. By default, the scale steps: the project (SERVICES services x REPLICAS replicas,
# VIPs and policies) is brought up once, then each cycle runs, with each binary in turn, a
# scale of svc0 by one replica, an `up` with no change and the scale back down. STEPS=ups: each
# cycle runs, with each binary in turn, the `up` of the project with VIPs and policies and the
# same `up` without them (each followed by an untimed down), and the ratio of their medians is
# given per binary. Prints each binary's median milliseconds per step, with every cycle's
# value; with CPU=1, also the CPU of each run (perf stat's task-clock: all the up's threads,
# not the daemon's).
#
# Why: one run of bench/lb.sh per binary compares runs minutes apart, and this kind of VM moves
# by more than most changes do; alternating in one sandbox puts both binaries under the same
# noise. Both binaries must read each other's state (the same state format).
#
#   sudo bench/ab.sh OLD NEW            # 12 cycles
#   sudo CYCLES=20 CPU=1 bench/ab.sh OLD NEW
#   sudo SERVICES=10 REPLICAS=5 bench/ab.sh OLD NEW
#   sudo STEPS=ups CYCLES=20 bench/ab.sh OLD NEW
#
# Figures: bench/lb.sh's header (session 19 onwards).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -ne 2 ]]; then
    echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY" >&2
    exit 2
fi
if [[ -n ${CPU:-} ]] && ! command -v perf >/dev/null; then
    echo "CPU=1 needs perf (apt-get install linux-perf)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Copies, so that a concurrent build cannot swap a binary in the middle of the run.
cp "$1" "$work/a" && cp "$2" "$work/b"
echo "a: $1"
echo "b: $2"
case ${STEPS:=scale} in
    scale | ups) ;;
    *) echo "STEPS is scale or ups, not $STEPS" >&2; exit 2 ;;
esac
export REPO=$repo WORK=$work SERVICES=${SERVICES:-20} REPLICAS=${REPLICAS:-10} CYCLES=${CYCLES:-12} STEPS

unshare --net --mount --propagation private bash -euo pipefail <<'INNER'
source "$REPO/bench/lb_project.sh"
lb_sandbox
lb_project "$REPLICAS" > "$WORK/base.yaml"
lb_project "$((REPLICAS + 1))" > "$WORK/more.yaml"
lb_project "$REPLICAS" plain > "$WORK/plain.yaml"
# On any exit, the projects down: their daemons would otherwise outlive the sandbox.
down_all() {
    "$WORK/a" -f "$WORK/base.yaml" down >/dev/null 2>&1 || true
    "$WORK/a" -f "$WORK/plain.yaml" down >/dev/null 2>&1 || true
}
trap down_all EXIT
trap 'exit 1' HUP INT PIPE TERM
# One timed run: its milliseconds (and CPU) appended to the files of its binary and step.
timed() { # $1: binary (a or b); $2: step; $3: Compose file
    local t0 t1
    t0=$(date +%s%N)
    if [[ -n ${CPU:-} ]]; then
        perf stat -x, -e task-clock -o "$WORK/perf" -- "$WORK/$1" -f "$3" up >/dev/null 2>&1
        awk -F, '/task-clock/ {printf "%.1f\n", $1}' "$WORK/perf" >> "$WORK/cpu.$1.$2"
    else
        "$WORK/$1" -f "$3" up >/dev/null 2>&1
    fi
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 )) >> "$WORK/ms.$1.$2"
    # The daemon's updates settle before the next step.
    sleep 0.3
}
# An untimed down, and time for the kernel to free the namespaces before the next step.
down() { # $1: binary; $2: Compose file
    "$WORK/$1" -f "$2" down >/dev/null 2>&1
    sleep 0.5
}
if [[ $STEPS == scale ]]; then
  steps="scale same back"
  "$WORK/a" -f "$WORK/base.yaml" up >/dev/null
  sleep 1
else
  steps="vip plain"
fi
for _ in $(seq 1 "$CYCLES"); do
  for bin in a b; do
    if [[ $STEPS == scale ]]; then
      timed "$bin" scale "$WORK/more.yaml"
      timed "$bin" same "$WORK/more.yaml"
      timed "$bin" back "$WORK/base.yaml"
    else
      timed "$bin" vip "$WORK/base.yaml"
      down "$bin" "$WORK/base.yaml"
      timed "$bin" plain "$WORK/plain.yaml"
      down "$bin" "$WORK/plain.yaml"
    fi
  done
done
median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "medians of $CYCLES cycles ($((SERVICES * REPLICAS)) replicas; wall ms${CPU:+, then CPU ms}):"
for step in $steps; do
  for bin in a b; do
    line="  $step $bin: $(median "$WORK/ms.$bin.$step") ms ($(paste -sd' ' "$WORK/ms.$bin.$step"))"
    if [[ -n ${CPU:-} ]]; then line="$line; CPU $(median "$WORK/cpu.$bin.$step") ms"; fi
    echo "$line"
  done
done
if [[ $STEPS == ups ]]; then
  for bin in a b; do
    echo "  ratio $bin: $(awk -v v="$(median "$WORK/ms.$bin.vip")" -v p="$(median "$WORK/ms.$bin.plain")" 'BEGIN {printf "%.3f", v / p}')x (up with VIPs and policies / without)"
  done
fi
INNER
