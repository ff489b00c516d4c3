"""A replica's stand-in service for tests: on TCP and UDP port PORT (default 80), over IPv4 and
(where the namespace has it) IPv6, it answers "<name> <client address>", and echoes every line a
TCP client sends afterwards. It prints "ready" once every socket is bound."""
import socket
import sys
import threading

name = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 80


def serve_tcp_client(conn, addr):
    with conn:
        conn.sendall(f"{name} {addr[0]}\n".encode())
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(f"{name} {data.decode().strip()}\n".encode())


def bound(family, kind):
    """A socket bound to the port on every address of `family` (IPv6 only for AF_INET6, so that
    IPv4 clients keep their plain addresses); None where the namespace lacks IPv6."""
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::", port))
        else:
            s.bind(("0.0.0.0", port))
    except OSError:
        if family == socket.AF_INET6:
            s.close()
            return None
        raise
    if kind == socket.SOCK_STREAM:
        s.listen(512)
    return s


def tcp(s):
    while True:
        conn, addr = s.accept()
        threading.Thread(target=serve_tcp_client, args=(conn, addr), daemon=True).start()


def udp(s):
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto(f"{name} {addr[0]}\n".encode(), addr)


sockets = [(bound(f, k), k) for f in (socket.AF_INET, socket.AF_INET6)
           for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM)]
for s, kind in sockets:
    if s is not None:
        threading.Thread(target=tcp if kind == socket.SOCK_STREAM else udp, args=(s,),
                         daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
