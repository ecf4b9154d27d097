"""An HTTP/1.1 backend for the upstream tests, run as its own process.

``python tests/e2e/hc_backend.py PORT [MODE [ADDRESS]]`` serves (on ADDRESS, 127.0.0.1 by
default):

* ``GET /health`` -> the current health status (200 at start);
* ``POST /control/health?status=503`` -> sets it; ``POST /control/mode?m=hang`` -> from now on
  every request is read and never answered (``normal`` undoes it);
* ``GET /status/<code>`` -> that status; ``GET /slow?ms=N`` answers after N ms; anything
  else -> 200 with ``{"port": PORT, "address": ADDRESS}``.

Counts health checks in ``GET /control/checks``. MODE ``hang`` starts hanging. Prints
``READY <port>`` once listening.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

STATE = {"health": 200, "mode": "normal", "checks": 0}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        if url.path.startswith("/control/"):
            with LOCK:
                if url.path == "/control/health":
                    STATE["health"] = int(q["status"][0])
                elif url.path == "/control/mode":
                    STATE["mode"] = q["m"][0]
                body = json.dumps(STATE).encode()
            self._send(200, body)
            return
        if STATE["mode"] == "hang":
            time.sleep(3600)
            return
        if url.path == "/health":
            with LOCK:
                STATE["checks"] += 1
                status = int(STATE["health"])
            self._send(status)
            return
        if url.path == "/slow":
            time.sleep(int(q["ms"][0]) / 1000)
        if url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]))
            return
        address, port = self.server.server_address[:2]
        self._send(200, json.dumps({"port": port, "address": address,
                                    "path": self.path}).encode())

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        STATE["mode"] = sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    socketserver.TCPServer.allow_reuse_address = True
    srv = http.server.ThreadingHTTPServer((address, port), Handler)
    srv.daemon_threads = True
    print(f"READY {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
