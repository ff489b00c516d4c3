"""Probes for tests, run inside a namespace:
  probe.py tcp|udp ADDR PORT [COUNT]   one answer line per attempt, or "blocked"
  probe.py tcp6|udp6 NAME PORT [COUNT] the same over IPv6 only (NAME resolved to AAAA)
  probe.py icmp ADDR                   "open" or "blocked"
  probe.py hold ADDR PORT              keep one TCP connection; echo stdin lines through it
"""
import socket
import subprocess
import sys

mode, addr = sys.argv[1], sys.argv[2]
port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
count = int(sys.argv[4]) if len(sys.argv) > 4 else 1


family = socket.AF_INET6 if mode.endswith("6") else socket.AF_UNSPEC


def target(kind):
    """The first address of ADDR (of the family asked for) as (family, sockaddr)."""
    info = socket.getaddrinfo(addr, port, family, kind)[0]
    return info[0], info[4]


def tcp_once():
    try:
        fam, to = target(socket.SOCK_STREAM)
        with socket.socket(fam, socket.SOCK_STREAM) as c:
            c.settimeout(1.5)
            c.connect(to)
            return c.makefile().readline().strip() or "empty"
    except OSError:
        return "blocked"


def udp_once():
    try:
        fam, to = target(socket.SOCK_DGRAM)
    except OSError:
        return "blocked"
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        s.sendto(b"probe\n", to)
        return s.recv(2048).decode().strip()
    except OSError:
        return "blocked"
    finally:
        s.close()


if mode == "icmp":
    ok = subprocess.run(["ping", "-c", "1", "-W", "1", addr], capture_output=True).returncode == 0
    print("open" if ok else "blocked")
elif mode == "hold":
    c = socket.create_connection((addr, port), timeout=3)
    f = c.makefile("rw")
    print(f.readline().strip(), flush=True)
    for line in sys.stdin:
        f.write(line)
        f.flush()
        print(f.readline().strip() or "closed", flush=True)
else:
    once = tcp_once if mode.startswith("tcp") else udp_once
    for _ in range(count):
        print(once(), flush=True)
