#!/usr/bin/env bash
# Benchmark the pure load + validate stage: `netcompose -f FILE validate` on a generated file.
#
#   bench/load.sh                 # 5000 services on 50 networks
#   bench/load.sh 20000 200       # SERVICES NETWORKS
#   NETCOMPOSE_BIN=/path/to/netcompose bench/load.sh   # measure a binary built elsewhere
#
# Prints the wall time (hyperfine if installed, else the mean and best of RUNS runs timed with
# date), the peak RSS (GNU time's "Maximum resident set size") and the CPU time of one run. The
# release binary is built first unless NETCOMPOSE_BIN is given.
set -euo pipefail

services=${1:-5000}
networks=${2:-50}
runs=${RUNS:-5}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

source "$repo/bench/binary.sh"
bench_binary

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
file=$work/compose.yaml
python3 "$repo/bench/gen.py" --services "$services" --networks "$networks" -o "$file"
echo "file: $services services, $networks networks, $(wc -l <"$file") lines, $(du -h "$file" | cut -f1)"

# A failing validation would time the error path, not the real work: stop instead.
"$NETCOMPOSE_BIN" -f "$file" validate

if command -v hyperfine >/dev/null; then
    hyperfine --warmup 1 --runs "$runs" "'$NETCOMPOSE_BIN' -f '$file' validate"
else
    "$NETCOMPOSE_BIN" -f "$file" validate 2>/dev/null # warm the page cache
    total=0
    best=
    for _ in $(seq "$runs"); do
        start=$(date +%s.%N)
        "$NETCOMPOSE_BIN" -f "$file" validate 2>/dev/null
        end=$(date +%s.%N)
        ms=$(echo "($end - $start) * 1000" | bc)
        total=$(echo "$total + $ms" | bc)
        if [[ -z $best ]] || (($(echo "$ms < $best" | bc))); then best=$ms; fi
    done
    printf 'wall time: mean %.1f ms, best %.1f ms over %d runs\n' \
        "$(echo "$total / $runs" | bc -l)" "$best" "$runs"
fi

if [[ ! -x /usr/bin/time ]]; then
    echo "GNU time is missing: sudo apt-get install time" >&2
    exit 1
fi
/usr/bin/time -v "$NETCOMPOSE_BIN" -f "$file" validate 2>"$work/time.txt" >/dev/null
rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
echo "peak RSS: $((rss_kb / 1024)) MiB ($rss_kb KiB)"
# CPU time varies less than wall time on a machine shared with other work.
awk -F': ' '/User time/ {u = $2} /System time/ {s = $2}
    END {printf "cpu time (one run): %.0f ms user + %.0f ms sys\n", u * 1000, s * 1000}' "$work/time.txt"
