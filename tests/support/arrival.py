"""When a new replica arrives, as seen from inside another replica's namespace (root):
  arrival.py ADDR NAME TIMEOUT
prints three lines, "reachable T", "resolvable T" and "vip T", each T the wall-clock time
(seconds since the epoch) at which it first held: ADDR answers a ping, NAME resolves to ADDR
through the namespace's resolver, ADDR is in the namespace's nftables ruleset (the VIP maps).
A check that never held by TIMEOUT prints "never". Polled, so each T is late by at most a
few milliseconds (ping sends every 5 ms and stamps each reply itself).
"""
import fcntl
import os
import re
import socket
import subprocess
import sys
import time

addr, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + timeout
seen = {}
listed = re.compile(r"(?<![\d.])" + re.escape(addr) + r"(?![\d.])")

# -D stamps each reply with its arrival time; -O reports the requests left unanswered.
ping = subprocess.Popen(
    ["ping", "-n", "-D", "-i", "0.005", "-W", "1", "-w", str(int(timeout)), addr],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
)
flags = fcntl.fcntl(ping.stdout, fcntl.F_GETFL)
fcntl.fcntl(ping.stdout, fcntl.F_SETFL, flags | os.O_NONBLOCK)
buffered = ""

while time.time() < deadline and len(seen) < 3:
    if "reachable" not in seen:
        try:
            buffered += os.read(ping.stdout.fileno(), 65536).decode()
        except BlockingIOError:
            pass
        for line in buffered.splitlines():
            if line.startswith("[") and "bytes from" in line:
                seen["reachable"] = float(line[1 : line.index("]")])
                break
        buffered = buffered[buffered.rfind("\n") + 1 :]
    if "resolvable" not in seen:
        try:
            if addr in {i[4][0] for i in socket.getaddrinfo(name, None, socket.AF_INET)}:
                seen["resolvable"] = time.time()
        except OSError:
            pass
    if "vip" not in seen:
        rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
        if listed.search(rules.stdout):
            seen["vip"] = time.time()
    time.sleep(0.002)

ping.kill()
ping.wait()
for check in ("reachable", "resolvable", "vip"):
    print(check, seen.get(check, "never"))
