#!/usr/bin/env bash
# Benchmark `netcompose up` and `netcompose down` of N replicas of one service on one bridge
# network, against a floor: the same kernel objects made and removed by `ip -batch`.
#
#   sudo bench/updown.sh                 # N = 50 200 1000
#   sudo SIZES="50 200" bench/updown.sh
#   sudo NETCOMPOSE_BIN=/path/to/netcompose bench/updown.sh   # a binary built elsewhere
#   sudo NETCOMPOSE_TIMINGS=1 bench/updown.sh   # also netcompose's time per wave
#   sudo REPEAT=3 bench/updown.sh        # each measurement 3 times, the best kept (busy hosts)
#
# Everything runs inside `unshare --net --mount`: a fresh network namespace plays the host,
# and private tmpfs hide /run (so /run/netns), /etc/netns and /var/lib/netcompose, as the
# test sandbox does. Nothing is created on the real machine; when the script ends, the
# namespace and its mounts die and the kernel frees every object made here.
#
# The floor does, per endpoint: `netns add`, a veth whose peer is created directly in the
# namespace, the host end enslaved to the bridge and up (one `ip -batch` for all endpoints),
# then in each namespace the address, eth0 up and lo up (`ip -n NS -batch`, one process per
# namespace: iproute2's batch mode cannot switch namespaces per line). Its teardown deletes
# each veth and each namespace, then the bridge, in one `ip -batch`. netcompose does more:
# a deterministic MAC, ownership marks, a default route, /etc/netns files, the host's nft
# table and, since the service has a virtual IP, an nft table in every replica.
#
# Prints, for each N, the wall time and ms per endpoint of each of the four operations (with
# REPEAT=R, the best of R rounds of all four).
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "bench/updown.sh needs root (it makes network and mount namespaces)" >&2
    exit 1
fi

sizes=${SIZES:-"50 200 1000"}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

source "$repo/bench/binary.sh"
bench_work /tmp/nc-updown.XXXXXX

for n in $sizes; do
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
    } >"$work/compose-$n.yaml"

    # The floor: one bridge, then N endpoints.
    {
        echo "link add fbr0 type bridge"
        echo "link set fbr0 up"
        echo "addr add 10.201.0.1/16 dev fbr0"
        for ((i = 1; i <= n; i++)); do
            echo "netns add floor-$i"
            echo "link add fv$i type veth peer name eth0 netns floor-$i"
            echo "link set fv$i master fbr0 up"
        done
    } >"$work/floor-up-$n.batch"
    for ((i = 1; i <= n; i++)); do
        printf 'addr add 10.201.%d.%d/16 dev eth0\nlink set eth0 up\nlink set lo up\n' \
            $(((i + 1) / 256)) $(((i + 1) % 256)) >"$work/floor-ns-$n-$i.batch"
    done
    {
        for ((i = 1; i <= n; i++)); do
            echo "link del fv$i"
            echo "netns del floor-$i"
        done
        echo "link del fbr0"
    } >"$work/floor-down-$n.batch"
done

inner() {
    set -euo pipefail
    local work=$1 sizes=$2
    # Private /run (so /run/netns), /etc/netns and /var/lib/netcompose, as the sandbox does:
    # a directory that exists gets a tmpfs; a missing one, an overlay on its parent.
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
    ms() { echo $((($2 - $1) / 1000000)); }
    per() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.2f", t / n }'; }
    settle() {
        # Let the kernel finish freeing the namespaces of the last step (it does so
        # asynchronously) before timing the next one.
        sleep "${SETTLE:-2}"
    }
    min() { if [[ -z $1 || $2 -lt $1 ]]; then echo "$2"; else echo "$1"; fi; }
    local results=()
    for n in $sizes; do
      local bup="" bdown="" bfup="" bfdown="" round
      for ((round = 1; round <= ${REPEAT:-1}; round++)); do
        local f=$work/compose-$n.yaml t0 t1 up down fup fns fdown
        echo "== N=$n (round $round)" >&2
        t0=$(now)
        bench_up=$f
        "$nc" -f "$f" up >"$work/up-$n.log" 2>&1 || { cat "$work/up-$n.log" >&2; exit 1; }
        t1=$(now)
        up=$(ms "$t0" "$t1")
        echo "   netcompose up:   $up ms   ($(grep -o 'Applied in [0-9]* ms' "$work/up-$n.log" || true))" >&2
        [[ -n ${NETCOMPOSE_TIMINGS:-} ]] && grep '^timing' "$work/up-$n.log" >&2
        [[ $(ls /run/netns | wc -l) -eq $n ]] || { echo "up made $(ls /run/netns | wc -l) namespaces, not $n" >&2; exit 1; }
        settle
        t0=$(now)
        "$nc" -f "$f" down >"$work/down-$n.log" 2>&1 || { cat "$work/down-$n.log" >&2; exit 1; }
        bench_up=""
        t1=$(now)
        down=$(ms "$t0" "$t1")
        echo "   netcompose down: $down ms" >&2
        [[ -n ${NETCOMPOSE_TIMINGS:-} ]] && grep '^timing' "$work/down-$n.log" >&2
        [[ $(ls /run/netns | wc -l) -eq 0 ]] || { echo "down left namespaces" >&2; exit 1; }
        settle

        t0=$(now)
        ip -batch "$work/floor-up-$n.batch"
        t1=$(now)
        for ((i = 1; i <= n; i++)); do
            ip -n "floor-$i" -batch "$work/floor-ns-$n-$i.batch"
        done
        local t2
        t2=$(now)
        fup=$(ms "$t0" "$t2")
        fns=$(ms "$t1" "$t2")
        echo "   ip -batch up:    $fup ms (of which $fns ms in the per-namespace batches)" >&2
        settle
        t0=$(now)
        ip -batch "$work/floor-down-$n.batch"
        t1=$(now)
        fdown=$(ms "$t0" "$t1")
        echo "   ip -batch down:  $fdown ms" >&2
        settle
        bup=$(min "$bup" "$up")
        bdown=$(min "$bdown" "$down")
        bfup=$(min "$bfup" "$fup")
        bfdown=$(min "$bfdown" "$fdown")
      done
      results+=("$n $bup $bdown $bfup $bfdown")
    done
    echo
    printf '%6s | %26s | %26s | %9s %9s\n' "" "up: ms (ms/endpoint)" "down: ms (ms/endpoint)" "up/floor" "down/floor"
    printf '%6s | %12s %13s | %12s %13s |\n' "N" "netcompose" "ip -batch" "netcompose" "ip -batch"
    for r in "${results[@]}"; do
        read -r n up down fup fdown <<<"$r"
        printf '%6d | %5d (%5s) %6d (%5s) | %5d (%5s) %6d (%5s) | %8sx %8sx\n' \
            "$n" "$up" "$(per "$up" "$n")" "$fup" "$(per "$fup" "$n")" \
            "$down" "$(per "$down" "$n")" "$fdown" "$(per "$fdown" "$n")" \
            "$(awk -v a="$up" -v b="$fup" 'BEGIN { printf "%.2f", a / b }')" \
            "$(awk -v a="$down" -v b="$fdown" 'BEGIN { printf "%.2f", a / b }')"
    done
}

echo "netcompose: $NETCOMPOSE_BIN; kernel $(uname -r); $(nproc) CPUs; load $(cut -d" " -f1-3 /proc/loadavg); sizes: $sizes; repeat: ${REPEAT:-1}"
unshare --net --mount --propagation private \
    bash -c "$(declare -f inner); inner \"\$1\" \"\$2\"" inner "$work" "$sizes"
