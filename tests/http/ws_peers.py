"""Peers for the WebSocket tests: a real ``websockets`` echo server on a thread, and a raw
upstream that answers any upgrade with 101 and then echoes bytes (for non-WebSocket tokens)."""

from __future__ import annotations

import socket
import threading

from scripted_upstream import TcpUpstream, read_head
from websockets.sync.server import Server, ServerConnection, serve


class WsEcho:
    """``websockets`` echo server; ``/close`` makes the server close after the first message."""

    def __init__(self) -> None:
        self.server: Server = serve(self._handler, "127.0.0.1", 0)
        self.port: int = self.server.socket.getsockname()[1]
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        for msg in ws:
            ws.send(msg)
            if ws.request.path.startswith("/ws/close"):
                ws.close(1000, "bye")
                return

    def __enter__(self) -> WsEcho:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


class RawUpgradeEcho(TcpUpstream):
    """Reads a request head; answers 101 when it asks for an upgrade (any token) and then
    echoes bytes, else 200 with the request head as the body. Records each head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        super().__init__()

    def serve(self, c: socket.socket) -> None:
        got = read_head(c)
        if got is None:
            return
        head, rest = got
        self.heads.append(head)
        low = head.lower()
        if b"\r\nupgrade:" in low:
            token = low.split(b"\r\nupgrade:", 1)[1].split(b"\r\n", 1)[0].strip()
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: " + token +
                      b"\r\nconnection: upgrade\r\n\r\n" + rest)
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return
                c.sendall(chunk)
        body = head + b"\r\n\r\n"
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def __enter__(self) -> RawUpgradeEcho:
        return self
