"""An h2c upstream (the ``h2`` library, a thread per connection) that, unlike grpcio, enforces no
``grpc-timeout`` of its own, so only the proxy can end a call on time. Per request, by its
``x-mode`` header:

* ``hold`` (default): never answers;
* ``headers``: sends response headers (200, ``application/grpc``) and nothing more;
* ``answer``: answers trailers-only ``grpc-status: 0`` at once;
* ``reset``: resets the stream (RST_STREAM, the error code in ``x-reset-code``, default
  INTERNAL_ERROR) without answering.

Every request's ``grpc-timeout`` (None: absent) is recorded in ``timeouts`` under its ``x-case``
header, and every request's (``x-case``, ``grpc-timeout``) in ``seen`` (retries too).
"""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events


class HoldServer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.timeouts: dict[str, str | None] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        try:
            c.sendall(conn.data_to_send())
            while data := c.recv(65536):
                for e in conn.receive_data(data):
                    if isinstance(e, h2.events.RequestReceived):
                        hdrs = {str(k): str(v) for k, v in e.headers}
                        with self.lock:
                            self.timeouts[hdrs.get("x-case", "")] = hdrs.get("grpc-timeout")
                            self.seen.append((hdrs.get("x-case", ""), hdrs.get("grpc-timeout")))
                        mode = hdrs.get("x-mode", "hold")
                        if mode == "headers":
                            conn.send_headers(e.stream_id, [(":status", "200"),
                                                            ("content-type", "application/grpc")])
                        elif mode == "answer":
                            conn.send_headers(e.stream_id, [
                                (":status", "200"), ("content-type", "application/grpc"),
                                ("grpc-status", "0")], end_stream=True)
                        elif mode == "reset":
                            conn.reset_stream(e.stream_id, int(hdrs.get("x-reset-code", "2")))
                    elif isinstance(e, h2.events.DataReceived):
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                c.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()
