"""A small HTTP/1.1 server for the admin: one asyncio.Protocol per connection, h11 for parsing.

The admin listener is not the data path and must not depend on the ``envoi-http`` plugin, so it
has its own server: sans-IO h11 underneath, keep-alive, requests answered in order, and a hard
cap on the size of a request (head and body) so a client cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11

from envoi.stats.store import Scope

#: Largest request head we parse; h11 rejects a bigger one with 431.
MAX_HEAD_BYTES = 64 * 1024
#: Largest request body we accept; admin requests carry (almost) none.
MAX_BODY_BYTES = 1024 * 1024


def reason_phrase(status: int) -> bytes:
    """``OK`` for 200 and so on: the status line Envoy's admin writes."""
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


@dataclass
class Request:
    method: str
    path: str
    #: Query parameters in order; a bare ``?usedonly`` has the value "".
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=UTF-8"
    #: Called once the response has been handed to the transport (``/quitquitquit``).
    after: Callable[[], None] | None = field(default=None, repr=False)


Handler = Callable[[Request], Response]


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return parts.path or "/", query


class AdminHttpStats:
    """``http.admin.*`` and ``listener.admin.*``, as Envoy counts its own admin traffic."""

    def __init__(self, http: Scope, listener: Scope) -> None:
        self.cx_total = http.counter("downstream_cx_total")
        self.cx_active = http.gauge("downstream_cx_active")
        self.cx_http1_total = http.counter("downstream_cx_http1_total")
        self.cx_destroy = http.counter("downstream_cx_destroy")
        self.rq_total = http.counter("downstream_rq_total")
        self.rq_http1_total = http.counter("downstream_rq_http1_total")
        self.rq_active = http.gauge("downstream_rq_active")
        self.rq_completed = http.counter("downstream_rq_completed")
        self.rq_class = {c: http.counter(f"downstream_rq_{c}xx") for c in range(1, 6)}
        self.rq_time = http.histogram("downstream_rq_time")
        self.listener_cx_total = listener.counter("downstream_cx_total")
        self.listener_cx_active = listener.gauge("downstream_cx_active")
        self.listener_cx_destroy = listener.counter("downstream_cx_destroy")

    def response_sent(self, status: int) -> None:
        self.rq_completed.inc()
        klass = status // 100
        if klass in self.rq_class:
            self.rq_class[klass].inc()


class AdminHttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, stats: AdminHttpStats, loop: asyncio.AbstractEventLoop):
        self._handler = handler
        self._stats = stats
        self._loop = loop
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.closed = asyncio.Event()
        #: Told when the connection ends, so the listener can forget it.
        self.on_closed: Callable[[AdminHttpProtocol], None] | None = None

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        for stat in (self._stats.cx_total, self._stats.cx_http1_total,
                     self._stats.listener_cx_total):
            stat.inc()
        self._stats.cx_active.inc()
        self._stats.listener_cx_active.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.cx_active.dec()
        self._stats.cx_destroy.inc()
        self._stats.listener_cx_active.dec()
        self._stats.listener_cx_destroy.inc()
        self._transport = None
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._drain_events()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._drain_events()
        return None

    # -- request handling ---------------------------------------------------------------

    def _drain_events(self) -> None:
        while self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._start_request(event):
                    return
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > MAX_BODY_BYTES:
                    self._fail(413, "request body too large")
                    return
                self._body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._finish_request()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _start_request(self, event: h11.Request) -> bool:
        # h11 bounds a head that is still arriving; one that arrived whole is measured here.
        head_size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head_size > MAX_HEAD_BYTES:
            self._fail(431, "request header fields too large")
            return False
        path, query = parse_target(event.target.decode("latin-1"))
        self._request = Request(
            method=event.method.decode("ascii"),
            path=path,
            query=query,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
        )
        self._body = []
        self._body_size = 0
        self._stats.rq_total.inc()
        self._stats.rq_http1_total.inc()
        self._stats.rq_active.inc()
        return True

    def _finish_request(self) -> None:
        request = self._request
        assert request is not None
        request.body = b"".join(self._body)
        self._request = None
        start = self._loop.time()
        try:
            response = self._handler(request)
        except Exception as exc:  # a bug in a handler must not take the admin down
            response = Response(500, f"internal error: {exc}\n".encode())
        self._send(response)
        self._stats.rq_active.dec()
        self._stats.rq_time.record((self._loop.time() - start) * 1000)
        if response.after is not None:
            self._loop.call_soon(response.after)

    def _send(self, response: Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("cache-control", "no-cache, max-age=0"),
            ("x-content-type-options", "nosniff"),
            ("server", "envoi"),
        ]
        try:
            data = self._conn.send(h11.Response(status_code=response.status, headers=headers,
                                                reason=reason_phrase(response.status)))
            data = (data or b"") + (self._conn.send(h11.Data(data=response.body)) or b"")
            data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        self._stats.response_sent(response.status)
        if self._transport is not None:
            self._transport.write(data)
        self._next_cycle_or_close()

    def _next_cycle_or_close(self) -> None:
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._close()
        elif self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()

    def _fail(self, status: int, reason: str) -> None:
        # Answer a malformed or oversized request once, then hang up.
        if self._request is not None:
            self._request = None
            self._stats.rq_active.dec()
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                data = self._conn.send(
                    h11.Response(
                        status_code=status,
                        reason=reason_phrase(status),
                        headers=[("content-length", str(len(reason) + 1)),
                                 ("connection", "close")],
                    )
                )
                data = (data or b"") + (self._conn.send(h11.Data(data=reason.encode() + b"\n"))
                                        or b"")
                if self._transport is not None:
                    self._transport.write(data)
                self._stats.response_sent(status)
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
