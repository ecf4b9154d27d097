"""A scriptable HTTP/2 server on loopback for pool tests, built on envoi's own server codec.

Each request is answered by ``respond(server, conn, request) -> None``; the default answers
``200`` with the request path as the body. Helpers make the awkward servers the pool must
survive: a small SETTINGS_MAX_CONCURRENT_STREAMS, a GOAWAY after N requests, slow answers, big
bodies sent as fast as the windows allow, resets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import H2Codec
from envoi_http.codec.h2_options import Http2Options


@dataclass
class Request:
    stream_id: int
    head: ev.RequestHeaders
    body: bytearray = field(default_factory=bytearray)
    trailers: ev.Headers | None = None
    complete: bool = False
    reset: bool = False


Responder = Callable[["ServerConn", Request], Any]


def echo_path(conn: ServerConn, req: Request) -> None:
    conn.codec.send_response_head(req.stream_id, 200, [(b"x-path", req.head.target)], False)
    conn.codec.send_data(req.stream_id, req.head.target + b"|" + bytes(req.body), True)
    conn.flush()


class ServerConn(asyncio.Protocol):
    def __init__(self, server: H2TestServer) -> None:
        self.server = server
        self.codec = H2Codec("server", server.options)
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, Request] = {}
        self.served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self)
        self.flush()

    def data_received(self, data: bytes) -> None:
        for e in self.codec.receive(data):
            t = type(e)
            if t is ev.RequestHeaders:
                req = self.requests[e.stream_id] = Request(e.stream_id, e)  # type: ignore[arg-type]
                self.server.seen.append(req)
                req.complete = e.end_stream  # type: ignore[union-attr]
                if req.complete:
                    self._answer(req)
            elif t is ev.Body:
                req = self.requests[e.stream_id]
                req.body += e.data  # type: ignore[union-attr]
                self.codec.acknowledge(e.stream_id, len(e.data))  # type: ignore[union-attr]
                if e.end_stream:  # type: ignore[union-attr]
                    req.complete = True
                    self._answer(req)
            elif t is ev.Trailers:
                req = self.requests[e.stream_id]
                req.trailers = e.headers  # type: ignore[union-attr]
                req.complete = True
                self._answer(req)
            elif t is ev.StreamReset:
                if e.stream_id in self.requests:
                    self.requests[e.stream_id].reset = True
            elif t is hev.StreamWritable:
                pass
        self.flush()

    def _answer(self, req: Request) -> None:
        self.served += 1
        self.server.respond(self, req)
        limit = self.server.goaway_after
        if limit and self.served == limit:
            self.codec.go_away()
        self.flush()

    def flush(self) -> None:
        data = self.codec.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.codec.transport_buffered(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.closed += 1


class H2TestServer:
    def __init__(self, respond: Responder = echo_path, *, max_streams: int = 1024,
                 goaway_after: int = 0, window: int | None = None) -> None:
        self.respond = respond
        self.options = Http2Options(
            max_concurrent_streams=max_streams,
            **({"initial_stream_window_size": window,
                "initial_connection_window_size": max(window, 65535)} if window else {}))
        self.goaway_after = goaway_after
        self.conns: list[ServerConn] = []
        self.seen: list[Request] = []
        self.closed = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> H2TestServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ServerConn(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        await self._server.wait_closed()
