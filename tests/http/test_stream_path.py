"""The one request path's state machine, through the real server built from a real config, with
fake transports on both sides (bytes in, bytes out, the event loop's own timers): a pool failure
answered on the stream that asked (no second path to fall back to), watermarks both ways, the
connection's one timer, a 101 upgrade, pipelined requests whose upstream answers early, and a
filter a route adds to or removes from the chain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from envoi.config import ConfigError
from envoi.network.connection import Connection
from envoi.network.listener import ListenerStats
from envoi.server import Options, Server
from envoi.upstream.cluster import UpstreamConnectError
from hcm_driver import parse_responses

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = """\
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
STAMP = """\
          - name: test.filters.http.stamp
            {disabled}
            typed_config:
              "@type": type.googleapis.com/test.filters.http.stamp.v1.Stamp
              value: listener
"""
GET = b"GET /%s HTTP/1.1\r\nhost: svc\r\n\r\n"


def config(routes: str, filters: str = "", hcm_extra: str = "", router: str = ROUTER) -> str:
    return f"""\
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: 19000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: ingress_http
{hcm_extra}          route_config:
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes:
{routes}          http_filters:
{filters}{router}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 18080}}}}}}
"""


PLAIN_ROUTE = """\
              - match: {prefix: "/"}
                route: {cluster: backend}
"""


class Wire:
    """A fake transport: what was written, and what the proxy asked of it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.data += data

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 19000)}.get(
            name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True


class Proxy:
    """The server of ``yaml`` with one downstream connection; upstream connections are
    ``Wire``s too (``refuse`` makes the next connects fail as a refused connect does)."""

    def __init__(self, tmp_path: Path, yaml: str, plugins: tuple[str, ...] = ()) -> None:
        path = tmp_path / "envoi.yaml"
        path.write_text(yaml)
        self.server = Server(Options(config_path=str(path), extra_plugins=list(plugins)))
        self.server.load()
        listener = self.server.listeners[0]
        listener.stats = ListenerStats(listener.scope.scope("listener.127.0.0.1_19000"))
        self.upstreams: list[tuple[Any, Wire]] = []
        self.refuse = 0
        for cluster in self.server.cluster_manager.clusters.values():
            async def connect(host: Any, factory: Any, cluster: Any = cluster,
                              **_: Any) -> tuple[Wire, Any]:
                if self.refuse:
                    self.refuse -= 1
                    raise UpstreamConnectError(host, "Connection refused")
                protocol = factory()
                wire = Wire()
                protocol.connection_made(wire)
                cluster.stats.upstream_cx_total.value += 1
                self.upstreams.append((protocol, wire))
                return wire, protocol
            cluster.connect = connect
        self.down = Wire()
        self.conn = Connection(listener)
        self.conn.connection_made(self.down)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def upstream(self, i: int = 0) -> tuple[Any, Wire]:
        return self.upstreams[i]

    def answer(self, data: bytes, i: int = 0) -> None:
        self.upstreams[i][0].data_received(data)

    def stat(self, name: str) -> int:
        s = self.server.stats.get(name)
        assert s is not None, name
        return int(s.value)  # type: ignore[union-attr]


async def settle() -> None:
    """Let scheduled callbacks and the pool's connect tasks run."""
    for _ in range(20):
        await asyncio.sleep(0)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# -- a pool failure: the stream that asked answers it ---------------------------------------------


@pytest.mark.parametrize("with_filter", [False, True], ids=["router-only", "with-a-filter"])
def test_pool_failure_is_a_503_on_the_stream_and_the_connection_goes_on(
        tmp_path: Path, with_filter: bool) -> None:
    async def body() -> None:
        filters = STAMP.format(disabled="") if with_filter else ""
        p = Proxy(tmp_path, config(PLAIN_ROUTE, filters), ("stamp_http_filter",))
        p.refuse = 1
        p.send(GET % b"a")
        await settle()
        [(status, headers, text)] = parse_responses(p.down.take())
        assert status == 503
        assert text.startswith(b"upstream connect error or disconnect/reset before headers. "
                               b"reset reason: remote connection failure")
        # The local reply went through the encoder filters like any response.
        assert ("x-stamp" in headers) is with_filter
        assert p.stat("cluster.backend.upstream_rq_pending_failure_eject") == 1
        assert p.stat("http.ingress_http.downstream_rq_5xx") == 1
        assert not p.down.closed  # a 503 after a complete request keeps the connection

        p.send(GET % b"b")  # the next request connects, and is answered by the upstream
        await settle()
        assert p.upstream()[1].take().startswith(b"GET /b HTTP/1.1\r\n")
        p.answer(ok())
        [(status, _, text)] = parse_responses(p.down.take())
        assert (status, text) == (200, b"hello")
        assert p.stat("http.ingress_http.downstream_rq_completed") == 2
        assert p.stat("cluster.backend.upstream_rq_active") == 0

    run(body)


# -- watermarks -----------------------------------------------------------------------------------


def test_a_slow_client_pauses_the_upstream_and_resumes_it(tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(PLAIN_ROUTE))
        p.send(GET % b"big")
        await settle()
        _, up = p.upstream()
        p.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 30000\r\n\r\n" + b"x" * 10000)
        p.conn.pause_writing()  # the client's socket buffer is full
        assert not up.reading
        assert p.stat("cluster.backend.upstream_flow_control_paused_reading_total") == 1
        p.conn.resume_writing()
        assert up.reading
        assert p.stat("cluster.backend.upstream_flow_control_resumed_reading_total") == 1
        p.answer(b"x" * 20000)
        [(status, _, text)] = parse_responses(p.down.take())
        assert status == 200 and len(text) == 30000
        assert p.stat("cluster.backend.upstream_rq_active") == 0

    run(body)


def test_a_slow_upstream_pauses_the_client_and_resumes_it(tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(PLAIN_ROUTE))
        p.send(b"POST /up HTTP/1.1\r\nhost: svc\r\ncontent-length: 8\r\n\r\nabcd")
        await settle()
        protocol, up = p.upstream()
        protocol.pause_writing()  # the upstream's socket buffer is full
        assert not p.down.reading
        assert p.stat("http.ingress_http.downstream_flow_control_paused_reading_total") == 1
        protocol.resume_writing()
        assert p.down.reading
        assert p.stat("http.ingress_http.downstream_flow_control_resumed_reading_total") == 1
        p.send(b"efgh")
        assert up.take().endswith(b"\r\n\r\nabcdefgh")
        p.answer(ok())
        assert parse_responses(p.down.take())[0][0] == 200

    run(body)


# -- the connection's one timer -------------------------------------------------------------------


def test_route_timeouts_of_many_requests_share_one_timer(tmp_path: Path) -> None:
    routes = """\
              - match: {prefix: "/"}
                route: {cluster: backend, timeout: 2s}
"""

    async def body() -> None:
        p = Proxy(tmp_path, config(routes))
        loop = asyncio.get_running_loop()
        armed: list[float] = []
        call_at = loop.call_at

        def counting_call_at(when: float, cb: Any, *args: Any, **kw: Any) -> Any:
            armed.append(when)
            return call_at(when, cb, *args, **kw)

        loop.call_at = counting_call_at  # type: ignore[method-assign]
        for i in range(50):
            p.send(GET % b"%d" % i)
            await settle()
            p.answer(ok())
        assert len(parse_responses(p.down.take())) == 50
        # One deadline per request, one timer for them all: armed for the first; later
        # deadlines are later, so it is not re-armed while it waits.
        assert len(armed) <= 2, armed

        p.send(GET % b"silent")  # an upstream that never answers: the route timeout fires
        await until(lambda: b"upstream request timeout" in p.down.data)
        [(status, _, _)] = parse_responses(p.down.take())
        assert status == 504
        assert p.stat("cluster.backend.upstream_rq_timeout") == 1

    run(body)


def test_stream_idle_timeout_from_the_connection_timer(tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(PLAIN_ROUTE, hcm_extra="          stream_idle_timeout: 0.2s\n"))
        p.send(GET % b"idle")
        await until(lambda: b"stream timeout" in p.down.data)
        [(status, _, text)] = parse_responses(p.down.take())
        assert (status, text) == (504, b"stream timeout")
        assert p.stat("http.ingress_http.downstream_rq_idle_timeout") == 1
        assert p.upstream()[1].closed  # the exchange's upstream connection was reset

    run(body)


# -- a 101 upgrade --------------------------------------------------------------------------------


def test_a_101_upgrade_tunnels_bytes_both_ways(tmp_path: Path) -> None:
    routes = """\
              - match: {prefix: "/"}
                route: {cluster: backend, upgrade_configs: [{upgrade_type: websocket}]}
"""

    async def body() -> None:
        p = Proxy(tmp_path, config(routes))
        p.send(b"GET /ws HTTP/1.1\r\nhost: svc\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
               b"\r\n")
        await settle()
        _, up = p.upstream()
        head = up.take().lower()
        assert head.startswith(b"get /ws http/1.1\r\n")
        assert b"upgrade: websocket\r\n" in head
        p.answer(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
                 b"upgrade: websocket\r\n\r\nfrom-upstream")
        out = p.down.take()
        assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert out.endswith(b"\r\n\r\nfrom-upstream")
        assert p.stat("http.ingress_http.downstream_cx_upgrades_active") == 1
        p.send(b"from-client")
        assert up.take() == b"from-client"
        p.answer(b"more")
        assert p.down.take() == b"more"

    run(body)


# -- pipelined requests whose upstream answers early ----------------------------------------------


def test_the_next_pipelined_request_starts_after_the_previous_answer_returns(
        tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(PLAIN_ROUTE))
        p.send(GET % b"one" + GET % b"two")  # two requests in one read
        await settle()
        _, up = p.upstream()
        assert up.take().startswith(b"GET /one ")  # HTTP/1.1: one exchange at a time
        p.answer(ok(b"first"))
        # The answer's call returned before the next request started (never inside the
        # previous stream's upstream callback) ...
        assert up.take() == b""
        await settle()
        # ... and the next one went on the same pooled connection once it had.
        assert up.take().startswith(b"GET /two ")
        p.answer(ok(b"second"))
        assert [(s, b) for s, _, b in parse_responses(p.down.take())] == [
            (200, b"first"), (200, b"second")]
        assert len(p.upstreams) == 1

    run(body)


def test_an_answer_before_the_request_is_complete_closes_after_it(tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(PLAIN_ROUTE))
        p.send(b"POST /early HTTP/1.1\r\nhost: svc\r\ncontent-length: 10\r\n\r\nabcd")
        await settle()
        p.answer(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
        [(status, headers, _)] = parse_responses(p.down.take())
        assert status == 413
        assert headers.get("connection") == "close"
        assert p.stat("http.ingress_http.downstream_rq_response_before_rq_complete") == 1
        assert p.down.closed
        p.send(b"efghij" + GET % b"next")  # the rest, and a request that is never read
        await settle()
        assert p.down.take() == b""

    run(body)


# -- a filter added or removed per route ----------------------------------------------------------


def stamp_routes(filter_config: str) -> str:
    return f"""\
              - match: {{prefix: "/changed"}}
                route: {{cluster: backend}}
                typed_per_filter_config:
                  test.filters.http.stamp:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    {filter_config}
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
"""


async def stamps(p: Proxy, path: bytes) -> str | None:
    p.send(GET % path)
    await settle()
    p.answer(ok())
    [(status, headers, _)] = parse_responses(p.down.take())
    assert status == 200
    return headers.get("x-stamp")


def test_a_route_removes_a_filter(tmp_path: Path) -> None:
    async def body() -> None:
        p = Proxy(tmp_path, config(stamp_routes("disabled: true"), STAMP.format(disabled="")),
                  ("stamp_http_filter",))
        assert await stamps(p, b"other") == "listener"
        assert await stamps(p, b"changed") is None
        assert await stamps(p, b"other") == "listener"

    run(body)


def test_a_route_adds_a_filter_that_is_off_by_default(tmp_path: Path) -> None:
    on = ('config: {"@type": type.googleapis.com/test.filters.http.stamp.v1.StampPerRoute, '
          'value: route}')

    async def body() -> None:
        p = Proxy(tmp_path, config(stamp_routes(on), STAMP.format(disabled="disabled: true")),
                  ("stamp_http_filter",))
        assert await stamps(p, b"other") is None
        assert await stamps(p, b"changed") == "route"
        assert await stamps(p, b"other") is None

    run(body)


OFF_ROUTER = ROUTER.replace("router\n", "router\n            disabled: true\n", 1)


@pytest.mark.parametrize(("routes", "filters", "router", "error"), [
    (stamp_routes("disabled: false"), STAMP.format(disabled=""), ROUTER,
     "typed_per_filter_config[test.filters.http.stamp]: Empty route/virtual host per filter "
     "configuration for test.filters.http.stamp filter"),
    (stamp_routes("is_optional: true"), STAMP.format(disabled=""), ROUTER,
     "typed_per_filter_config[test.filters.http.stamp].is_optional: not implemented by envoi"),
    (PLAIN_ROUTE, "", OFF_ROUTER,
     "http_filters[0].disabled: Error: the last (terminal) filter (envoy.filters.http.router) in "
     "the chain cannot be disabled by default."),
    (stamp_routes("disabled: true").replace("test.filters.http.stamp:",
                                            "envoy.filters.http.router:"), "", ROUTER,
     "route_config: the terminal filter envoy.filters.http.router cannot be disabled for a "
     "route (virtual host 'svc')"),
], ids=["neither-config-nor-disabled", "is_optional", "terminal-off-by-default",
        "terminal-off-for-a-route"])
def test_route_filter_config_errors(tmp_path: Path, routes: str, filters: str, router: str,
                                    error: str) -> None:
    with pytest.raises(ConfigError) as info:
        Proxy(tmp_path, config(routes, filters, router=router), ("stamp_http_filter",))
    assert error in str(info.value)
