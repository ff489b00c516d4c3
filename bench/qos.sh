#!/usr/bin/env bash
# Benchmark the cost of x-qos: `netcompose up` of N replicas of one service on one bridge
# network, without x-qos and with x-qos on every attachment (htb on both ends of each veth and
# a loss rule in each replica's table). The issue's aim: with ≤ 1.2 × without.
#
#   sudo bench/qos.sh                    # N = 200, median of 3 rounds
#   sudo SIZES="50 200" REPEAT=5 bench/qos.sh
#   sudo NETCOMPOSE_BIN=/path/to/netcompose bench/qos.sh
#
# Everything runs inside `unshare --net --mount`, with private tmpfs over /run, /etc/netns and
# /var/lib/netcompose, as bench/updown.sh does: nothing is made on the real machine, and the
# kernel frees every object when the script ends. Each `up` starts from nothing (a `down`
# runs between measurements, untimed). Rounds alternate plain and x-qos, so that a busy minute
# hits both; prints the median of REPEAT rounds (REPEAT=3 unless set).
#
# Measured (release build, 2 CPUs shared with other builds, load average 18, so noisy):
# N=200 median of 3: 1152 ms plain, 1317 ms x-qos, 1.14x; median of 5: 1204 / 1487 ms, 1.24x;
# median of 3 again: 1569 / 1329 ms, 0.85x. The spread is the machine's, not the feature's.
# On the quiet machine (nothing else running), N=200 median of 3: 560 ms plain, 612 ms x-qos,
# 1.09x.
# A new link gets its trees without reading anything first: 3 requests on each side.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "bench/qos.sh needs root (it makes network and mount namespaces)" >&2
    exit 1
fi

sizes=${SIZES:-"200"}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

source "$repo/bench/binary.sh"
bench_work /tmp/nc-qos.XXXXXX

for n in $sizes; do
    for variant in plain qos; do
        {
            echo "name: bench"
            echo "networks:"
            echo "  net:"
            echo "    ipam:"
            echo "      config:"
            echo "        - subnet: 10.200.0.0/16"
            echo "services:"
            echo "  app:"
            echo "    deploy:"
            echo "      replicas: $n"
            echo "    networks: [net]"
            if [[ $variant == qos ]]; then
                echo "    x-qos:"
                echo "      egress: {rate: 100mbit, ceil: 1gbit}"
                echo "      ingress: {rate: 50mbit}"
                echo "      loss: 1%"
            fi
        } >"$work/$variant-$n.yaml"
    done
done

inner() {
    set -euo pipefail
    local work=$1 sizes=$2
    mount -t tmpfs -o mode=0755 nc-bench /run
    mkdir -p /run/netns /run/.nc
    for d in /etc/netns /var/lib/netcompose; do
        if [[ -d $d ]]; then
            mount -t tmpfs -o mode=0755 nc-bench "$d"
        else
            local p t
            p=$(dirname "$d")
            t=/run/.nc/$(echo "$p" | tr / _)
            mkdir -p "$t/up" "$t/work"
            mount -t overlay nc-bench -o "lowerdir=$p,upperdir=$t/up,workdir=$t/work" "$p"
            mkdir -p "$d"
        fi
    done
    ip link set lo up

    # On any exit, the project down: its daemon would otherwise outlive the sandbox, in a
    # namespace nothing names any more (`|| true`: errexit holds inside a trap too). Globals,
    # which the trap still sees once inner has returned.
    bench_nc=$work/netcompose bench_up=""
    trap '[[ -z $bench_up ]] || "$bench_nc" -f "$bench_up" down >/dev/null 2>&1 || true' EXIT
    trap 'exit 1' HUP INT PIPE TERM
    local nc=$work/netcompose
    now() { date +%s%N; }
    median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
    local results=()
    for n in $sizes; do
        local plain=() qos=() round variant
        for ((round = 1; round <= ${REPEAT:-3}; round++)); do
            for variant in plain qos; do
                local f=$work/$variant-$n.yaml t0 t1 took
                t0=$(now)
                bench_up=$f
                "$nc" -f "$f" up >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
                t1=$(now)
                took=$((($t1 - $t0) / 1000000))
                echo "== N=$n $variant (round $round): up $took ms" >&2
                "$nc" -f "$f" down >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; exit 1; }
                bench_up=""
                sleep "${SETTLE:-2}"
                if [[ $variant == plain ]]; then
                    plain+=("$took")
                else
                    qos+=("$took")
                fi
            done
        done
        results+=("$n $(median "${plain[@]}") $(median "${qos[@]}")")
    done
    echo
    printf '%6s | %14s | %14s | %7s\n' "N" "up (ms)" "up x-qos (ms)" "ratio"
    for r in "${results[@]}"; do
        read -r n plain qos <<<"$r"
        printf '%6d | %14d | %14d | %6sx\n' "$n" "$plain" "$qos" \
            "$(awk -v a="$qos" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')"
    done
}

echo "netcompose: $NETCOMPOSE_BIN; kernel $(uname -r); $(nproc) CPUs; load $(cut -d" " -f1-3 /proc/loadavg); sizes: $sizes; repeat: ${REPEAT:-3}"
unshare --net --mount --propagation private \
    bash -c "$(declare -f inner); inner \"\$1\" \"\$2\"" inner "$work" "$sizes"
