#!/usr/bin/env python3
"""A tiny authoritative DNS server for the resolver tests (UDP and TCP, no dependencies).

    fake_upstream.py ADDR PORT LOGFILE

fwd.example      A 203.0.113.7
nx.example       NXDOMAIN
fail.example     SERVFAIL
big.example      40 A records (truncated over UDP without EDNS)
slow.example     never answered
anything else    REFUSED

Every query is logged to LOGFILE as "<udp|tcp> <client ip> <name>".
"""
import socket
import struct
import sys
import threading

addr, port, logfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def log(proto, peer, name):
    with lock, open(logfile, "a") as f:
        f.write(f"{proto} {peer} {name}\n")


def parse(q):
    i, labels = 12, []
    while q[i]:
        n = q[i]
        labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    qtype, _ = struct.unpack("!HH", q[i + 1:i + 5])
    has_edns = struct.unpack("!H", q[10:12])[0] > 0
    return ".".join(labels), qtype, q[12:i + 5], has_edns


def answer(q, tcp):
    name, qtype, question, has_edns = parse(q)
    ident, flags = struct.unpack("!HH", q[:4])
    rd = flags & 0x0100
    rcode, answers = 5, []
    if name == "fwd.example":
        rcode = 0
        if qtype in (1, 255):
            answers = [bytes([203, 0, 113, 7])]
    elif name == "nx.example":
        rcode = 3
    elif name == "fail.example":
        rcode = 2
    elif name == "big.example":
        rcode = 0
        if qtype in (1, 255):
            answers = [bytes([203, 0, 113, i]) for i in range(1, 41)]
    elif name == "slow.example":
        return None
    body = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + a for a in answers)
    tc = 0
    if not tcp and not has_edns and 12 + len(question) + len(body) > 512:
        body, answers, tc = b"", [], 0x0200
    hdr = struct.pack("!HHHHHH", ident, 0x8480 | rd | tc | rcode, 1, len(answers), 0, 0)
    return hdr + question + body


def serve_udp(s):
    while True:
        q, peer = s.recvfrom(4096)
        try:
            log("udp", peer[0], parse(q)[0])
            r = answer(q, False)
        except Exception:
            continue
        if r:
            s.sendto(r, peer)


def serve_tcp_client(c, peer):
    with c:
        while True:
            hdr = c.recv(2)
            if len(hdr) < 2:
                return
            n = struct.unpack("!H", hdr)[0]
            q = b""
            while len(q) < n:
                chunk = c.recv(n - len(q))
                if not chunk:
                    return
                q += chunk
            log("tcp", peer[0], parse(q)[0])
            r = answer(q, True)
            if r:
                c.sendall(struct.pack("!H", len(r)) + r)


def serve_tcp(s):
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve_tcp_client, args=(c, peer), daemon=True).start()


u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((addr, port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(16)
threading.Thread(target=serve_tcp, args=(t,), daemon=True).start()
print("ready", flush=True)
serve_udp(u)
