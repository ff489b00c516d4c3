#!/usr/bin/env bash
# Benchmark `netcompose plan` (model + IPAM + graph + diff) on a generated project:
# SERVICES services x REPLICAS replicas on NETWORKS networks, from scratch and against a saved
# baseline with one service changed. Prints wall time and peak RSS of each.
#
# Measured on 2 Dec (release build, quiet machine, one run) after mimalloc and typed plan
# changes (no JSON for a text plan, no daemon config for it, a saved plan's desired read
# alone): from scratch 1.59 s and 311 MB, --json 1.80 s and 307 MB, against the baseline
# 1.56 s and 419 MB. That morning: 3.0 s and 433 MB from scratch. Targets: 0.5 s, 250 MB.
# Later that day, resources smaller and moved once, diff merged in address order, a saved
# plan's changes not read (machine loaded 5-6 by other builds, best of three, back to back
# with the binary before): from scratch 1.14 s and 265-273 MB (before 1.43 s, 303-322 MB),
# --json 1.16 s and 279 MB (1.70 s, 291-333 MB), against the baseline 0.92 s and 327 MB
# (1.51 s, 407-424 MB).
# After a plan only shown took its desired specs into its changes (load 5.5, non-root, two runs
# alternated with the binary before): from scratch 1.03-1.11 s and 239-241 MB (before
# 1.06-1.16 s, 252-262 MB; its diff stage 86 -> 51 ms). --json and --out copy as before; the
# plan against the baseline, a few changes, stays at 326 MB.
# Main with those branches and no transparent huge pages for mimalloc (quiet machine, as
# root, one run): from scratch 1.00 s and 236 MB, --json 1.27 s and 265 MB, against the
# baseline 1.00 s and 326 MB.
# After typed attributes shown without JSON, the model's parts and the text's pieces on two
# threads, addresses sorted by their text once (branch wt-plan; load 1.5-1.7 from others' builds,
# as root, three runs alternated with main's binary): from scratch 0.93-0.98 s and 222-236 MB
# (main 1.38-1.62 s, 235-240 MB), --json 1.53-1.94 s and 264-275 MB (1.86-2.07 s, 261-264 MB),
# against the baseline 1.08-1.43 s and 312-323 MB (1.41-1.45 s, 321-326 MB).
# Main with that branch merged, load 1.7, two runs alternated with the binary before it: from
# scratch 0.82 / 0.89 s and 232-235 MB (before 1.17 / 1.26 s), --json 1.27 / 1.31 s (1.58 /
# 1.37 s), against the baseline 1.02 / 1.07 s and 314 MB (1.18 / 1.36 s, 326 MB): now slower
# than from scratch, whose rendering of 99,561 creations got faster while the baseline's
# read (about 350 ms for the desired half of a 140 MB plan) did not. Reading that half on a
# thread of its own while the model is built gained nothing on two CPUs (tried, not kept).
# 2 Dec 2026 evening, branch wt-baseline: a saved plan's resources stay text until the desired
# ones are built, each desired resource is written out as --out nests it and compared with the
# saved bytes (two threads), only those that differ are parsed; the file is read and indexed
# while the Compose file loads. Load 3-6 from another helper's builds, as root, six runs
# alternated with main's binary: against the baseline 1.58 1.69 2.15 2.08 2.99 2.85 / 1.60 1.21
# 1.28 s and 293-321 MB (main 1.87 2.50 2.53 3.18 3.25 2.62 / 1.32 1.53 1.49 s, 306-320 MB);
# from scratch in the same runs 1.42 1.38 2.31 2.26 1.20 1.76 / 1.27 1.43 1.22 s (main 0.91
# 1.78 1.86 1.97 1.60 2.68 / 0.90 1.42 1.21 s). By stages (three runs): the baseline read
# 370-750 ms -> hidden in the load (load 215-255 -> 315-420 ms on a busy machine), the diff
# 130-145 -> 215-280 ms (the comparison), peak 306-310 -> 288-293 MB; against the baseline
# 1.31-1.42 s where from scratch is 1.05-1.39 s (main: 1.54-1.85 against 1.28-1.41 s).
# Main with that branch merged, alternated with 4c20c77's binary (release build, load about 2,
# three pairs): from scratch 0.69 / 0.77 / 0.91 s and 228-234 MB (4c20c77: 0.74 / 0.78 / 1.05
# s), --json 1.54 / 1.34 / 1.37 s (1.22 / 1.33 / 1.74 s), against the baseline 0.83 / 1.04 /
# 0.86 s and 315-318 MB (1.00 / 1.12 / 1.18 s, 314-324 MB): 1.20 / 1.35 / 0.95x the plan
# from scratch of the same run, where 4c20c77's was 1.35 / 1.44 / 1.12x.
# 2/3 Dec 2026, branch wt-plan: the model's two threads given even shares (the files built on
# the first), its sorted parts merged once, its replicas put in address order so that the
# parts built replica by replica need no sort, IPAM and the endpoints split over two threads;
# the check for a dependency cycle done over the ranks of the resources (only namespaces put
# in a graph); a machine with nothing of the project's observed without the templates or the
# host table's digest; the diff's changes given room at once; replicas' text blocks grouped
# by borrowed keys and aHash; the host table's piece of text shown on a third thread. Output
# byte for byte as main's (plan, --json, --out, --against). Load 1.7-2.3, as root, six runs
# alternated with main's binary (5c246bc): from scratch 0.50 0.63 0.51 0.63 0.63 0.60 s and
# 203-212 MB (main 0.85 0.91 0.63 0.71 0.79 0.80 s, 226-238 MB), --json 1.07 1.11 1.05 1.12
# 1.41 1.25 s and 265-267 MB (1.44 1.23 1.24 1.13 1.54 1.37 s, 280-282 MB), against the
# baseline 0.92 0.57 0.73 0.74 0.64 0.73 s and 311-316 MB (0.68 0.66 0.68 0.65 0.93 0.88 s,
# 304-318 MB). By stages (alternated, load 2-3): observe 50-62 -> 2-7 ms, diff 52-69 -> 28-42
# ms, model 380-436 -> 270-346 ms with the cycle check (by perf samples 55-75 ms -> about 30).
# Against the baseline is now slower than from scratch (0.90-1.84x; main 0.73-1.18x): its
# comparison, every desired resource written out as JSON (about 100-130 ms on two threads),
# costs more than the text of 99,561 creations now does. Tried and dropped: mimalloc with
# transparent huge pages for this plan (0.72-1.55 s against 1.03-1.29 s, its system time
# 0.06-0.48 s by whether the kernel had huge pages at hand; 221-231 MB), a zone's names in a
# hash map (no change).
# 3 Dec 2026, main with wt-plan merged, release build, load about 2, alternated with 5c246bc:
# from scratch 0.77 / 0.67 / 0.64 s and 199-208 MB (5c246bc 1.08 / 0.98 s, 225 MB), against
# the baseline 0.73 / 0.77 / 0.88 s (5c246bc 0.91 / 0.91 s).
# 3 Dec 2026, session 14, branch wt-plan2: a table's update shown from its typed sides (the host
# table's chains and maps compared typed, not written out as JSON twice and read back), the saved
# plan's next resource tried before its address map and the comparison's threads given runs of
# 512 in turn (halves were uneven), a saved resource that differs parsed by the thread that finds
# it, the host's sockets read during the load, the baseline's allocations moved not copied, a file
# of 256 KiB or more parsed on two threads (events in batches to the tree's builder), duplicate
# keys found by hashes, IPAM validation in one pass over the services. Output byte for byte as
# main's (plan, --json, --out, --against, the corpus, and against saved plans scaled down, to zero,
# with ports, with a policy). Load 1.5-2.9 from others, as root, four runs alternated with main's
# binary (eaf1b32): from scratch 0.69 0.74 0.67 0.54 s and 203-220 MB (main 0.74 0.70 0.73 0.71 s,
# 203-207 MB), --json 1.30 1.45 1.23 1.24 s and 252-269 MB (1.36 1.37 1.40 1.45 s, 265-266 MB),
# against the baseline 0.65 0.70 0.59 0.61 s and 288-293 MB (0.77 0.82 0.80 0.93 s, 310-319 MB):
# 0.94 0.95 0.88 1.13x the plan from scratch of the same run (main 1.04 1.17 1.10 1.31x). By
# stages (three pairs, load about 1.7): host facts 11-21 -> 0.2 ms, against the baseline's diff
# 119 161 155 -> 122 81 73 ms and its wall 0.74 0.88 0.75 -> 0.64 0.54 0.52 s (from scratch in the
# same runs 0.57 0.66 0.62 s); eight runs from scratch: load median 200 -> 174 ms, wall median
# 0.77 -> 0.72 s. Still above 0.5 s from scratch on this busy machine. Tried and dropped: the
# services decoded half on a second thread (load medians 174 -> 173 ms over eight runs).
# 3 Dec 2026, session 18, f92b472, release build, a fresh and slower VM (session 17 measured
# 0.29 s from scratch on a fast one), three runs: from scratch 0.78 / 0.72 / 0.75 s and
# 205-213 MB, --json 1.38 / 1.51 / 1.47 s and 256 MB, against the baseline 0.87 / 0.71 / 0.70 s
# and 286-287 MB.
# 3 Dec 2026, session 19 (a fast VM), release build of 5ec381f, ROUNDS=5, with the baseline
# synced before the timed runs: from scratch 0.32 s (0.32-0.34) and 203 MiB, --json 0.64 s and
# 268 MiB, against the baseline 0.33 s (0.32-0.34) and 283 MiB. Before the sync, three one-round
# runs had given 0.37-0.64 s against the baseline (its writeback in the timed run).
# 4 Dec 2026, session 27, a slower VM (AMD EPYC, SRSO mitigation; 25b1b30 gave 0.47-0.55 s
# from scratch here). Callgrind of the plan from scratch: 3,589 M instructions at 25b1b30;
# format_mac without a String per byte and aHash for the project's keyed maps 3,411 M, the
# Compose schema compiled once into shapes instead of looked up in serde_json maps at every
# key 3,270 M (load 317 -> 175 M), aHash for the endpoint index 3,234 M (-9.9%). perf stat -r
# 8-10, alternated with 25b1b30, four pairs: CPU 544 / 678 / 582 / 543 ms against 650 / 774 /
# 676 / 770 ms, wall 0.44 / 0.52 / 0.51 / 0.44 s against 0.55 / 0.56 / 0.55 / 0.47 s. ROUNDS=5,
# three alternated pairs: from scratch 0.51 / 0.41 / 0.46 s against 0.47 / 0.43 / 0.48 s (the
# rounds of one run spread over 0.38-0.58 s), 201-202 MB against 206-208; against the baseline
# 0.45 / 0.45 / 0.46 s and 282-291 MB. Then a change's body given 512 bytes of room at once
# (81d9448): 3,112 M instructions; perf stat -r 10, three pairs alternated with 677975b: CPU
# 535 / 563 / 539 ms against 588 / 664 / 680; ROUNDS=5, two pairs: from scratch 0.45 / 0.41 s
# against 0.44 / 0.42 s, 202-204 MB; against the baseline 0.45 / 0.45 s.
# Session 28 (the same VM, slower in the afternoon): two ids of replicas of one service compared
# by their numbers alone, 3,111.9 -> 3,064.1 M instructions; perf stat -r 8, two pairs
# alternated with e3d449d: CPU 553 / 565 ms against 570 / 613; ROUNDS=5, one pair: from scratch
# 0.56 s against 0.59 s (0.49 s in a run earlier the same day), 201-202 MB; against the
# baseline 0.57 against 0.53 s.
# Session 29 (the same VM, quieter at night), ROUNDS=5, alternated with 5013a71: from scratch
# 0.37 s (0.35-0.39) and 202 MB against 0.36 s, --json 0.82 against 0.84 s, against the
# baseline 0.39 s (0.37-0.40) and 287 MB against 0.38 s: the session's changes are for a scale
# and leave the plan as it was. At 5013a71 earlier the same evening: 0.48 s from scratch.
#
#   bench/plan.sh                 # 5000 services x 3 replicas on 50 networks
#   bench/plan.sh 1000 3 20
#   ROUNDS=5 bench/plan.sh        # each kind timed five times (default three)
#   NETCOMPOSE_BIN=/path/to/netcompose bench/plan.sh   # a binary built elsewhere (before/after)
set -euo pipefail

services=${1:-5000}
replicas=${2:-3}
networks=${3:-50}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$repo/bench/binary.sh"
bench_work
bin=$work/netcompose
python3 "$repo/bench/gen.py" -s "$services" -n "$networks" --replicas "$replicas" -o "$work/compose.yaml"
# Plans run against a state that does not exist on this machine; -p keeps every run's project
# name (and so every generated name) the same. Each kind is timed ROUNDS times (default 3), the
# kinds alternated so that machine noise hits them alike; the summary gives each one's median
# with every round's value.
measure() { # $1: kind; the rest: the arguments
    local kind=$1
    shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" -p bench "$@" >"$work/out" 2>"$work/err" || {
        cat "$work/err"
        exit 1
    }
    read -r secs kib <"$work/time"
    echo "$secs" >>"$work/s.$kind"
    echo "$kib" >>"$work/kib.$kind"
    tail -1 "$work/out" >"$work/last.$kind"
}
median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
summary() { # $1: kind; $2: label
    printf '%-34s %s s  %s KiB   %s   (seconds: %s)\n' "$2" "$(median "$work/s.$1")" \
        "$(median "$work/kib.$1")" "$(cat "$work/last.$1")" "$(paste -sd' ' "$work/s.$1")"
}

echo "project: $services services x $replicas replicas on $networks networks"
"$bin" -p bench -f "$work/compose.yaml" plan --out "$work/base.json" >/dev/null 2>&1
# One service changes: svc17 gets one more replica.
python3 - "$work/compose.yaml" "$work/changed.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
head, sep, tail = text.partition("  svc17:\n")
tail = tail.replace("replicas: ", "replicas: 1", 1) if "replicas: " in tail.split("  svc18:")[0] else tail
open(sys.argv[2], "w").write(head + sep + tail)
PY
# The baseline (140 MB at the default size) is on disk before anything is timed: its writeback
# would otherwise land in the first run after it.
sync
for _ in $(seq 1 "${ROUNDS:-3}"); do
    measure scratch -f "$work/compose.yaml" plan
    measure json -f "$work/compose.yaml" plan --json
    measure against -f "$work/changed.yaml" plan --against "$work/base.json"
done
summary scratch "plan from scratch"
summary json "plan --json from scratch"
summary against "plan against baseline (1 changed)"
