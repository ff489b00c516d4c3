#!/usr/bin/env python3
"""Ask 127.0.0.11 for NAME (A) in a loop until STOPFILE exists; print one JSON summary line.

    query_loop.py NAME STOPFILE

Each query waits up to 1 s for its answer; a query without an answer (or with a wrong ID, or
an rcode other than NOERROR) counts as lost. "sizes" counts the answers by number of records.
"""
import json
import os
import random
import socket
import struct
import sys
import time

name, stop = sys.argv[1], sys.argv[2]
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
sent = lost = 0
sizes = {}
errors = []
deadline = time.time() + 120
while not os.path.exists(stop) and time.time() < deadline:
    ident = random.randrange(65536)
    s.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q, ("127.0.0.11", 53))
    sent += 1
    try:
        while True:
            r, _ = s.recvfrom(4096)
            if struct.unpack("!H", r[:2])[0] == ident:
                break
        rcode = r[3] & 0x0F
        if rcode != 0:
            lost += 1
            errors.append(f"rcode {rcode}")
            continue
        n = struct.unpack("!H", r[6:8])[0]
        sizes[n] = sizes.get(n, 0) + 1
    except socket.timeout:
        lost += 1
        errors.append("timeout")
    time.sleep(0.002)
print(json.dumps({"sent": sent, "lost": lost, "sizes": sizes, "errors": errors[:10]}), flush=True)
