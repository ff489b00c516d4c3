"""A replica's stand-in service for tests: on TCP and UDP port PORT (default 80) it answers
"<name> <client address>", and echoes every line a TCP client sends afterwards."""
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


def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(512)
    while True:
        conn, addr = s.accept()
        threading.Thread(target=serve_tcp_client, args=(conn, addr), daemon=True).start()


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto(f"{name} {addr[0]}\n".encode(), addr)


threading.Thread(target=udp, daemon=True).start()
tcp()
