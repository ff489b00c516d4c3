#!/usr/bin/env bash
# Benchmark the embedded resolver against aardvark-dns and dnsmasq, and measure the daemon's
# peak memory with many replicas.
#
#   sudo bench/dns.sh                    # 50 records, 10 s per server, 1000 replicas for RSS
#   DURATION=30 ROUNDS=5 SCALE_DURATION=30 RSS_REPLICAS=2000 sudo bench/dns.sh
#   NETCOMPOSE_BIN=/path/to/netcompose sudo bench/dns.sh
#
# What runs: a project with 50 replicas (50 names, one A record each) and a client, brought up
# by netcompose. From the client's namespace, a load generator asks for the 50 names in turn
# for DURATION seconds, keeping WINDOW queries outstanding over 4 sockets: first netcompose's
# resolver (127.0.0.11:53), then aardvark-dns (Podman's, from Debian's aardvark-dns package,
# configured by hand with the same 50 records, listening on 127.0.0.12:5533) and dnsmasq
# (dnsmasq-base, the same records as a hosts file, on 127.0.0.13:53), each alone, in turn,
# ROUNDS times (the median round is reported, and each round's ratio of netcompose's rate to
# dnsmasq's, with their median: the two run back to back, so the ratio is steadier than either
# rate on a busy machine). Every server is checked to answer the names correctly first.
# The load generator is bench/dnsload.rs (CLIENT=dnsload, the default; built with `cargo build
# --release --example dnsload`, or given as DNSLOAD=path): it sends and reads its queries in
# batches, so that it costs less than the servers it measures. CLIENT=dnsperf uses `dnsperf
# -c 4 -q 100` instead (CLIENT_THREADS sets its -T), which on 2 CPUs measured itself (below).
# WINDOW (default 100, as dnsperf's -q 100) stays under what a server's default socket buffer
# holds: at 256, dnsmasq and aardvark-dns dropped about 125 queries a run.
# Each round prints the client's and the server's CPU over the run (1.00 is one core busy
# throughout) and the server's CPU per answer, which compares servers whether or not any of
# them is at its limit.
# Then loss while the service scales: dnsperf asks netcompose's resolver for the 50 names and
# the service's own name (`app`) for SCALE_DURATION seconds while `up --scale` adds a replica
# and takes it away again, over and over; every query must be answered, with NOERROR.
# Then the daemon's peak RSS (VmHWM) is read with RSS_REPLICAS replicas up.
#
# Measured on 2 Dec (release build, 2 CPUs, load about 2), with dnsperf: against netcompose the
# client is at its limit (client CPU 0.92-0.98), against dnsmasq less so (0.83-0.92), so the
# rate measures dnsperf as much as the server. netcompose 107-128k queries/s, dnsmasq 81-100k,
# ratios 1.07 / 1.41 / 1.49 (median 1.41); with 5 rounds of 15 s an hour earlier, 1.01-1.29
# (median 1.13). Two client threads only share the same two CPUs with the server: 74-83k
# against 79-94k. PIN=1 (client on CPU 0, each server on CPU 1), quiet machine, 3 rounds of
# 10 s, same binary as an unpinned run just before: netcompose 100-110k queries/s, dnsmasq
# 106-111k (0.90 / 1.00 / 1.04x), with the client at 0.98 of its CPU against both: one dnsperf
# core cannot saturate either server, so the rate is the client's. Latency tells them apart:
# 0.28-0.32 ms against 0.65-0.71 ms. Unpinned in that run: 101-103k against 86-96k, 1.07 /
# 1.17 / 1.18x.
# 2 Dec, evening, with dnsload (PIN=1, 3 rounds of 8 s, load about 1.5): the client uses 0.26-
# 0.48 of its core, so the rate is the servers'. WINDOW=64: netcompose 74-96k queries/s,
# dnsmasq 33-36k, aardvark-dns 29-47k (netcompose/dnsmasq 2.34 / 2.94 / 2.02x); WINDOW=128:
# 68-92k, 38-46k, 28-35k (1.69 / 1.96 / 2.42x); no query lost. Server CPU per answer:
# netcompose 4.5-6.6 us, dnsmasq 7.1-9.1 us, aardvark-dns 13-18 us. Neither server used more
# than about half of its CPU: at this depth each waits on wake-ups across the two CPUs;
# netcompose reads and answers its queue 32 at a time (recvmmsg/sendmmsg), which is likely why
# it turns a full queue round faster.
#
# 3 Dec 2026, session 18, release build of f92b472 on a fresh VM, defaults (dnsload, WINDOW
# 100, 3 rounds of 10 s): netcompose 124-160k queries/s, dnsmasq 82-99k, aardvark-dns 52-59k;
# netcompose/dnsmasq 1.61 / 1.83 / 1.48x (median 1.61x), no query lost; server CPU per answer
# 6.0-7.6 us against dnsmasq's 10.0-12.1; 394,754 queries while the service scaled 116 times
# in 10 s, all answered NOERROR; the daemon's peak RSS 17.7 MB at 51 replicas, 30.7 MB at 1000.
#
# 3 Dec 2026, session 19, a faster VM, release build of 5ec381f, defaults, two runs: netcompose
# 382-396k queries/s, dnsmasq 282-286k, aardvark-dns 127-128k; netcompose/dnsmasq median 1.37x
# and 1.34x (rounds 1.23-1.40x), no query lost; 2.4 us of server CPU per answer against
# dnsmasq's 3.5; 1,388,205-1,442,264 queries while the service scaled 230-238 times, all
# NOERROR. On this VM the client and the servers share two cores that they all saturate.
#
# 4 Dec 2026, session 22, same VM kind, release build of a5bac3a, defaults, two runs:
# netcompose/dnsmasq 1.26x (rounds 1.36 / 1.26 / 1.17) and 1.56x (1.36 / 1.63 / 1.56); 2.3-2.4 us
# of server CPU per answer against dnsmasq's 3.2-3.4; 1,432,498 and 1,418,799 queries while the
# service scaled 298 and 304 times, all NOERROR. The ratio moves by more between runs than
# anything changed in the resolver since session 19.
#
# Everything happens in a private mount and network namespace (unshare): /run, /etc/netns and
# /var/lib/netcompose are tmpfs there, the "host" is a fresh network namespace, and all of it
# vanishes when the script ends. Needs root, dnsperf, dnsmasq, python3 and (optionally)
# aardvark-dns:  apt-get install dnsperf dnsmasq-base aardvark-dns
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
RECORDS=${RECORDS:-50}
RSS_REPLICAS=${RSS_REPLICAS:-1000}
ROUNDS=${ROUNDS:-3}
SCALE_DURATION=${SCALE_DURATION:-10}
CLIENT_THREADS=${CLIENT_THREADS:-1}
PIN=${PIN:-0}
CLIENT=${CLIENT:-dnsload}
WINDOW=${WINDOW:-100}

if [[ ${1:-} != --inside ]]; then
    if [[ $EUID -ne 0 ]]; then
        echo "bench/dns.sh needs root (namespaces)" >&2
        exit 1
    fi
    for t in dnsperf dnsmasq python3 unshare /usr/bin/time; do
        command -v "$t" >/dev/null || { echo "missing $t (apt-get install dnsperf dnsmasq-base python3 time)" >&2; exit 1; }
    done
    source "$repo/bench/binary.sh"
    bench_binary
    if [[ $CLIENT == dnsload && -z ${DNSLOAD:-} ]]; then
        (cd "$repo" && cargo build --release --quiet --example dnsload)
        DNSLOAD=$repo/target/release/examples/dnsload
    fi
    export NETCOMPOSE_BIN DURATION RECORDS RSS_REPLICAS ROUNDS SCALE_DURATION CLIENT_THREADS PIN CLIENT WINDOW DNSLOAD
    # /etc/netns and /var/lib/netcompose get a tmpfs inside; they must exist to be mounted on.
    mkdir -p /etc/netns /var/lib/netcompose
    exec unshare --mount --net --propagation private bash "${BASH_SOURCE[0]}" --inside
fi

# ---------------------------------------------------------------- inside the private namespaces
mount -t tmpfs -o mode=0755 nc-bench /run
mkdir -p /run/netns /run/netcompose
mount -t tmpfs -o mode=0755 nc-bench /etc/netns
mount -t tmpfs -o mode=0755 nc-bench /var/lib/netcompose
ip link set lo up

work=$(mktemp -d /tmp/nc-dnsbench.XXXXXX)
chmod 755 "$work"
nc() { "$NETCOMPOSE_BIN" -f "$work/compose.yaml" "$@"; }
cleanup() {
    [[ -f $work/aardvark/aardvark.pid ]] && kill "$(cat "$work/aardvark/aardvark.pid")" 2>/dev/null || true
    [[ -f $work/dnsmasq.pid ]] && kill "$(cat "$work/dnsmasq.pid")" 2>/dev/null || true
    [[ -f $work/compose.yaml ]] && nc down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/compose.yaml" <<EOF
name: nb
networks:
  front:
    ipam: {config: [{subnet: 10.77.0.0/16}]}
services:
  app:
    deploy: {replicas: $RECORDS}
    networks: [front]
  client:
    networks: [front]
EOF
nc up >/dev/null 2>"$work/up.log" || { cat "$work/up.log"; exit 1; }
client=nb-client-1
inns() { ip netns exec "$client" "$@"; }
# PIN=1 (with 2 CPUs or more): the client runs on CPU 0, each server on CPU 1, so that the
# client never takes the server's CPU (nor the server the client's) and every server gets the
# same single CPU. Unpinned on 2 CPUs, the client used a whole core against netcompose and
# measured itself.
client_cpu=() server_cpu=()
if ((PIN)) && (($(nproc) >= 2)); then
    client_cpu=(taskset -c 0)
    server_cpu=(taskset -c 1)
    taskset -a -p -c 1 "$(cat /run/netcompose/nb/daemon.pid)" >/dev/null
fi

# Names and addresses, from ps --json.
nc ps --json | python3 -c '
import json, sys
ps = json.load(sys.stdin)
for r in ps["replicas"]:
    ip = r["interfaces"][0]["addresses"][0].split("/")[0]
    print(r["service"], r["replica"], ip)
' >"$work/replicas"
client_ip=$(awk '$1 == "client" { print $3 }' "$work/replicas")
: >"$work/queries"
: >"$work/hosts"
mkdir -p "$work/aardvark"
echo "127.0.0.12" >"$work/aardvark/front"
n=0
while read -r svc idx ip; do
    name="nb-$svc-$idx"
    id=$(printf '%s' "$name" | sha256sum | cut -c1-64)
    printf '%s %s  %s\n' "$id" "$ip" "$name" >>"$work/aardvark/front"
    if [[ $svc == app ]]; then
        echo "$name A" >>"$work/queries"
        printf '%s\t%s\n' "$ip" "$name" >>"$work/hosts"
        n=$((n + 1))
    fi
done <"$work/replicas"
echo "records: $n names (one A record each), asked from $client ($client_ip)"

# The other two servers, in the client's namespace.
aardvark=$(command -v aardvark-dns || echo /usr/lib/podman/aardvark-dns)
have_aardvark=0
if [[ -x $aardvark ]]; then
    inns "${server_cpu[@]}" "$aardvark" --config "$work/aardvark" --port 5533 run >"$work/aardvark.log" 2>&1 &
    echo $! >"$work/aardvark/aardvark.pid"
    have_aardvark=1
else
    echo "aardvark-dns not installed: skipped (apt-get install aardvark-dns)"
fi
inns "${server_cpu[@]}" dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
    --addn-hosts="$work/hosts" --listen-address=127.0.0.13 --bind-interfaces \
    --pid-file="$work/dnsmasq.pid" --user=root --group=root >"$work/dnsmasq.log" 2>&1 &
sleep 1

check() { # server port extra-dig-args...
    local server=$1 port=$2
    shift 2
    local want got
    want=$(awk '$1 == "app" && $2 == 1 { print $3 }' "$work/replicas")
    got=$(inns dig +short +tries=1 +timeout=2 -p "$port" "@$server" "$@" nb-app-1 A | head -1)
    [[ $got == "$want" ]] || { echo "$server:$port answers nb-app-1 with '$got', not $want" >&2; return 1; }
}
check 127.0.0.11 53
check 127.0.0.13 53
if ((have_aardvark)); then
    check 127.0.0.12 5533 -b "$client_ip" || have_aardvark=0
fi

# Each server is measured ROUNDS times, in turn (so that a burst of load from elsewhere on the
# machine hits all three alike); the round with the median rate is reported.
declare -A results rate pid
pid[netcompose]=$(cat /run/netcompose/nb/daemon.pid)
pid[dnsmasq]=$(cat "$work/dnsmasq.pid")
((have_aardvark)) && pid[aardvark-dns]=$(cat "$work/aardvark/aardvark.pid")
# A process's CPU time (user + system) in clock ticks, all its threads.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
ratios=""
run() { # label server port extra-dnsperf-args...
    local label=$1 server=$2 port=$3
    shift 3
    local out q l lost cpu before scpu
    before=$(ticks "${pid[$label]}")
    if [[ $CLIENT == dnsperf ]]; then
        out=$(inns "${client_cpu[@]}" /usr/bin/time -f "cpu %U %S %e" dnsperf -s "$server" -p "$port" -d "$work/queries" \
            -c 4 -T "$CLIENT_THREADS" -q 100 -l "$DURATION" "$@" 2>&1)
    else
        out=$(inns "${client_cpu[@]}" /usr/bin/time -f "cpu %U %S %e" "$DNSLOAD" -s "$server" -p "$port" -d "$work/queries" \
            -c 4 -w "$WINDOW" -l "$DURATION" "$@" 2>&1)
    fi
    q=$(awk '/Queries per second:/ { printf "%.0f", $4 }' <<<"$out")
    l=$(awk '/Average Latency/ { printf "%.3f", $4 * 1000 }' <<<"$out")
    lost=$(awk '/Queries lost:/ { print $3 }' <<<"$out")
    # The client's and the server's CPU over the run (1.00 = one core busy throughout): a
    # client at its limit while the server is not measures itself, not the server.
    cpu=$(awk '/^cpu / { printf "%.2f", ($2 + $3) / $4 }' <<<"$out")
    # The server's CPU per answer is its cost whether or not anything saturated.
    read -r scpu per < <(awk -v a="$before" -v b="$(ticks "${pid[$label]}")" -v hz="$hz" -v d="$DURATION" -v q="$q" \
        'BEGIN { printf "%.2f %.1f\n", (b - a) / hz / d, (b - a) / hz / d / q * 1e6 }')
    echo "  round $round $label: $q queries/s, average latency $l ms, lost $lost, client CPU $cpu, server CPU $scpu ($per us per answer)"
    results[$label]+="$q $l $lost"$'\n'
    rate[$label]=$q
}
if [[ $CLIENT == dnsperf ]]; then
    client_desc="dnsperf -c 4 -T $CLIENT_THREADS -q 100 -l $DURATION"
else
    client_desc="dnsload -c 4 -w $WINDOW -l $DURATION"
fi
echo "$client_desc, $ROUNDS rounds, one server at a time${client_cpu[*]:+, client on CPU 0, servers on CPU 1}:"
for round in $(seq "$ROUNDS"); do
    run netcompose 127.0.0.11 53
    if ((have_aardvark)); then
        # aardvark-dns answers only the network's own addresses (-a: the client's source).
        run aardvark-dns 127.0.0.12 5533 -a "$client_ip"
    fi
    run dnsmasq 127.0.0.13 53
    ratio=$(awk -v a="${rate[netcompose]}" -v b="${rate[dnsmasq]}" 'BEGIN { printf "%.2f", a / b }')
    echo "  round $round netcompose/dnsmasq: ${ratio}x"
    ratios+="$ratio"$'\n'
done
echo "median of $ROUNDS rounds ($RECORDS records, $client_desc from a replica namespace):"
for label in netcompose aardvark-dns dnsmasq; do
    [[ -n ${results[$label]:-} ]] || continue
    sort -n <<<"${results[$label]}" | sed '/^$/d' | awk -v label="$label" -v n="$ROUNDS" \
        'NR == int((n + 1) / 2) { printf "  %-13s %8d queries/s   average latency %.3f ms   lost %s\n", label, $1, $2, $3 }'
done

echo "  netcompose/dnsmasq, median of the rounds' ratios: $(sort -n <<<"$ratios" | sed '/^$/d' |
    awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')x"

daemon_pid=$(cat /run/netcompose/nb/daemon.pid)
echo "daemon with $((n + 1)) replicas: $(grep VmHWM "/proc/$daemon_pid/status" | tr -s '\t ' ' ')"

# Loss while the service scales. Each `up --scale` reloads the daemon (records swapped, a
# namespace's sockets opened or closed) while the client keeps asking.
{ cat "$work/queries"; echo "app A"; } >"$work/scale-queries"
inns dnsperf -s 127.0.0.11 -d "$work/scale-queries" -c 4 -q 100 -l "$SCALE_DURATION" \
    >"$work/scale.out" 2>&1 &
perf_pid=$!
scales=0
while kill -0 "$perf_pid" 2>/dev/null; do
    nc up --scale "app=$((RECORDS + 1))" >/dev/null 2>>"$work/scale.log" || { cat "$work/scale.log"; exit 1; }
    nc up --scale "app=$RECORDS" >/dev/null 2>>"$work/scale.log" || { cat "$work/scale.log"; exit 1; }
    scales=$((scales + 2))
done
wait "$perf_pid"
sent=$(awk '/Queries sent:/ { print $3 }' "$work/scale.out")
lost=$(awk '/Queries lost:/ { print $3 }' "$work/scale.out")
codes=$(awk '/Response codes:/ { $1 = $2 = ""; sub(/^ +/, ""); print }' "$work/scale.out")
echo "while app scaled $RECORDS -> $((RECORDS + 1)) -> $RECORDS ($scales scales in $SCALE_DURATION s):" \
    "$sent queries, lost $lost, response codes: $codes"
nc down >/dev/null 2>&1

# Peak memory with many replicas.
cat >"$work/compose.yaml" <<EOF
name: nb
networks:
  front:
    ipam: {config: [{subnet: 10.78.0.0/16}]}
services:
  app:
    deploy: {replicas: $RSS_REPLICAS}
    networks: [front]
EOF
start=$(date +%s)
nc up >/dev/null 2>"$work/up.log" || { cat "$work/up.log"; exit 1; }
took=$(($(date +%s) - start))
daemon_pid=$(cat /run/netcompose/nb/daemon.pid)
ip netns exec nb-app-1 dig +short @127.0.0.11 "nb-app-$RSS_REPLICAS" >/dev/null
tasks=$(ip netns exec nb-app-1 dig +short +tcp @127.0.0.11 tasks.app | wc -l)
echo "daemon with $RSS_REPLICAS replicas (up in ${took} s; tasks.app over TCP: $tasks records):" \
    "$(grep -E 'VmHWM|VmRSS' "/proc/$daemon_pid/status" | tr -s '\t ' ' ' | tr '\n' ' ')," \
    "$(ls "/proc/$daemon_pid/fd" | wc -l) fds, $(ls "/proc/$daemon_pid/task" | wc -l) threads"
