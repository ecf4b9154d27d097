"""Real upstream peers for the end-to-end tests, each run as its own process.

``python tests/e2e/peers.py echo PORT``     TCP echo (half-close aware: echoes, then FIN on EOF)
``python tests/e2e/peers.py reset PORT``    accepts, reads a little, then resets (RST)
``python tests/e2e/peers.py sink PORT``     accepts and never reads (a stalled upstream)
``python tests/e2e/peers.py blackhole PORT`` never accepts and its accept queue is full, so new
                                            connections' SYNs are dropped (connect timeouts)
Each prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading


def _serve(port: int, handler: object) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()  # type: ignore[arg-type]


def echo(conn: socket.socket) -> None:
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(data)


def reset(conn: socket.socket) -> None:
    conn.recv(16)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


_held: list[socket.socket] = []


def sink(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    _held.append(conn)  # never read: the proxy must apply backpressure


def blackhole(port: int) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(0)
    # Fill the accept queue; later SYNs are dropped and connect() hangs until it times out.
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    print(f"READY {port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "blackhole":
        blackhole(port)
    _serve(port, {"echo": echo, "reset": reset, "sink": sink}[kind])
