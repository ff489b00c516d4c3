#!/usr/bin/env python3
"""The kernel's floor for `down` (root, inside bench/lb.sh's sandbox): tear a project down with
the bare syscalls and print the milliseconds it took.

What netcompose's `down` asks of the kernel, and nothing else (no ownership checks, no state,
no daemon: stop it first): every namespace of the project unpinned (umount, unlink) and its
/etc/netns directory removed, the namespaces held until all are unpinned so that the kernel
frees them in one pass; the bridge deleted with one rtnetlink request; then the wait until the
last veth of the sandbox has gone, polled every 10 ms as `down` polls.

    python3 bench/down_floor.py PROJECT BRIDGE
"""

import ctypes
import os
import shutil
import socket
import struct
import sys
import time

MNT_DETACH = 2
RTM_DELLINK = 17
RTM_GETLINK = 18
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME = 3
IFLA_LINKINFO = 18


def request(sock, kind, flags, attrs=b""):
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
    sock.send(struct.pack("IHHII", 16 + len(body), kind, NLM_F_REQUEST | flags, 1, 0) + body)


def attr(kind, value):
    size = 4 + len(value)
    return struct.pack("HH", size, kind) + value + b"\0" * ((4 - size % 4) % 4)


def messages(sock):
    """Yield (type, payload) until the end of a dump or an acknowledgement."""
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset < len(data):
            length, kind = struct.unpack_from("IH", data, offset)
            yield kind, data[offset + 16 : offset + length]
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                return
            offset += (length + 3) & ~3


def veths(sock):
    """How many veth devices the host has."""
    request(sock, RTM_GETLINK, NLM_F_DUMP)
    count = 0
    for kind, payload in messages(sock):
        if kind != 16:  # RTM_NEWLINK
            continue
        offset = 16
        while offset + 4 <= len(payload):
            size, atype = struct.unpack_from("HH", payload, offset)
            if size < 4:
                break
            if atype & 0x7FFF == IFLA_LINKINFO and b"veth\0" in payload[offset : offset + size]:
                count += 1
            offset += (size + 3) & ~3
    return count


def main():
    project, bridge = sys.argv[1], sys.argv[2]
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.bind((0, 0))
    names = [n for n in os.listdir("/run/netns") if n.startswith(project + "-")]
    started = time.monotonic()
    held = [os.open("/run/netns/" + n, os.O_RDONLY) for n in names]
    for n in names:
        path = "/run/netns/" + n
        shutil.rmtree("/etc/netns/" + n, ignore_errors=True)
        libc.umount2(path.encode(), MNT_DETACH)
        os.unlink(path)
    for fd in held:
        os.close(fd)
    request(sock, RTM_DELLINK, NLM_F_ACK, attr(IFLA_IFNAME, bridge.encode() + b"\0"))
    for _ in messages(sock):
        pass
    while veths(sock):
        time.sleep(0.01)
    print(round((time.monotonic() - started) * 1000))


if __name__ == "__main__":
    main()
