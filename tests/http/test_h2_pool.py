"""The multiplexed upstream pool against a real HTTP/2 server on loopback (envoi's own server
codec, scripted): streams per connection up to the peer's limit, new connections beyond it,
GOAWAY and draining, max requests per connection, circuit breakers, per-stream flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from envoi.stats import Store
from envoi.upstream.cluster import Cluster, ClusterStats, Host, Thresholds
from envoi_http.codec import events as ev
from envoi_http.codec.h2_options import Http2Options
from envoi_http.router.h2_pool import H2Pool, H2Stream, h2_pool_for
from h2_frames import Peer
from h2_test_server import H2TestServer, Request, ServerConn, echo_path


def make_cluster(**thresholds: int) -> Cluster:
    stats = ClusterStats(Store().root.scope("cluster.up"))
    c = Cluster("up", stats, connect_timeout=2.0)
    c.set_thresholds({"DEFAULT": Thresholds(**thresholds)})
    return c


class Req:
    """A request as the router drives one: head (and body) on ready, events until the end."""

    def __init__(self, path: bytes, body: bytes = b"", *, release: bool = True,
                 pause: bool = False) -> None:
        self.pause = pause
        self.path = path
        self.body = body
        self.release = release
        self.handle: H2Stream | None = None
        self.events: list[ev.Event] = []
        self.failure = ""
        self.closed = False
        self.watermarks: list[str] = []
        self.done = asyncio.Event()

    def on_pool_ready(self, conn: H2Stream) -> None:
        self.handle = conn
        if self.pause:
            conn.transport.pause_reading()  # the router's answer to a slow client
        conn.send_head(b"POST" if self.body else b"GET", self.path, b"up", b"http", [],
                       not self.body)
        if self.body:
            conn.send_data(self.body, True)

    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None:
        self.failure = reason
        self.done.set()

    def on_upstream_events(self, events: list[ev.Event]) -> None:
        self.events += events
        last = events[-1]
        if (isinstance(last, (ev.Body, ev.ResponseHeaders)) and last.end_stream) or \
                isinstance(last, (ev.Trailers, ev.StreamReset)):
            self.done.set()
            if self.release and self.handle is not None:
                if isinstance(last, ev.StreamReset):
                    self.handle.abort()
                else:
                    self.handle.release()

    def on_upstream_closed(self) -> None:
        self.closed = True
        self.done.set()

    def on_upstream_above_high_watermark(self) -> None:
        self.watermarks.append("above")

    def on_upstream_below_low_watermark(self) -> None:
        self.watermarks.append("below")

    @property
    def response_body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, ev.Body))

    @property
    def status(self) -> int:
        heads = [e for e in self.events if isinstance(e, ev.ResponseHeaders)]
        return heads[0].status if heads else 0


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), 20))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


async def all_done(reqs: list[Req]) -> None:
    await asyncio.gather(*(r.done.wait() for r in reqs))


def test_streams_share_one_connection() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            reqs = [Req(b"/%d" % i) for i in range(20)]
            for r in reqs:
                pool.request(r)
            await all_done(reqs)
            assert [r.response_body for r in reqs] == [b"/%d|" % i for i in range(20)]
            st = cluster.stats
            assert st.upstream_cx_total.value == 1 == st.upstream_cx_http2_total.value
            assert st.upstream_rq_pending_total.value == 20  # all waited for the first SETTINGS
            assert st.upstream_rq_pending_active.value == 0
            later = Req(b"/again")
            pool.request(later)  # the ready connection takes it at once
            await later.done.wait()
            assert st.upstream_rq_pending_total.value == 20 and len(srv.conns) == 1
    run(go)


def test_peer_limit_opens_more_connections() -> None:
    async def go() -> None:
        held: list[Request] = []

        def hold(conn: ServerConn, req: Request) -> None:
            held.append(req)
            if len(held) == 5:  # answer once all five are in
                for h in held:
                    echo_path(conn if h in conn.requests.values() else _owner(srv, h), h)

        async with H2TestServer(hold, max_streams=2) as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            reqs = [Req(b"/%d" % i) for i in range(5)]
            for r in reqs:
                pool.request(r)
            await all_done(reqs)
            assert all(r.status == 200 for r in reqs)
            assert len(srv.conns) == 3  # 2 + 2 + 1 streams
            assert max(len(c.requests) for c in srv.conns) == 2
            assert cluster.stats.upstream_cx_http2_total.value == 3
    run(go)


def _owner(srv: H2TestServer, req: Request) -> ServerConn:
    return next(c for c in srv.conns if req in c.requests.values())


def test_configured_limit_applies_too() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port),
                          Http2Options(max_concurrent_streams=1))
            reqs = [Req(b"/%d" % i) for i in range(3)]
            for r in reqs:
                pool.request(r)
            await all_done(reqs)
            assert all(r.status == 200 for r in reqs)
            assert max(len(c.requests) for c in srv.conns) <= 3
            assert cluster.stats.upstream_cx_http2_total.value >= 2
    run(go)


def test_goaway_drains_the_connection() -> None:
    async def go() -> None:
        async with H2TestServer(goaway_after=2) as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            first = [Req(b"/a"), Req(b"/b")]
            for r in first:
                pool.request(r)
            await all_done(first)
            await until(lambda: cluster.stats.upstream_cx_close_notify.value == 1)
            nxt = Req(b"/c")
            pool.request(nxt)
            await nxt.done.wait()
            assert nxt.status == 200 and len(srv.conns) == 2
            await until(lambda: srv.closed >= 1)  # the drained connection went away
            assert cluster.stats.upstream_cx_destroy_local.value == 1
    run(go)


def test_goaway_refuses_streams_above_last() -> None:
    async def go() -> None:
        seen: list[Request] = []

        def stall_then_goaway(conn: ServerConn, req: Request) -> None:
            seen.append(req)
            if len(seen) == 2:
                first = seen[0]
                conn.transport.write(Peer.goaway(first.stream_id))  # type: ignore[union-attr]
                echo_path(conn, first)

        async with H2TestServer(stall_then_goaway) as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            a, b = Req(b"/a"), Req(b"/b")
            pool.request(a)
            pool.request(b)
            await all_done([a, b])
            assert a.status == 200
            assert b.events[-1] == ev.StreamReset(b.handle.stream_id,  # type: ignore[union-attr]
                                                  "remote_refused_stream_reset")
            assert cluster.stats.upstream_cx_close_notify.value == 1
    run(go)


def test_max_requests_per_connection() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port), max_requests=2)
            for i in range(5):
                r = Req(b"/%d" % i)
                pool.request(r)
                await r.done.wait()
                assert r.status == 200
            assert cluster.stats.upstream_cx_max_requests.value == 2  # two connections used up
            assert cluster.stats.upstream_cx_http2_total.value == 3
            assert max(c.served for c in srv.conns) == 2
    run(go)


def test_circuit_breakers() -> None:
    async def go() -> None:
        async def slow_answer(conn: ServerConn, req: Request) -> None:
            await asyncio.sleep(0.05)
            echo_path(conn, req)

        def respond(conn: ServerConn, req: Request) -> None:
            asyncio.get_running_loop().create_task(slow_answer(conn, req))

        async with H2TestServer(respond, max_streams=1) as srv:
            cluster = make_cluster(max_connections=1, max_pending_requests=2)
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            reqs = [Req(b"/%d" % i) for i in range(4)]
            for r in reqs:
                pool.request(r)
            assert reqs[2].failure == "overflow" and reqs[3].failure == "overflow"
            assert cluster.stats.upstream_rq_pending_overflow.value == 2
            await all_done(reqs[:2])
            assert [r.status for r in reqs[:2]] == [200, 200]
            assert len(srv.conns) == 1 and cluster.stats.upstream_cx_overflow.value >= 1
    run(go)


def test_connect_failure_fails_pending() -> None:
    async def go() -> None:
        srv = H2TestServer()
        async with srv:
            port = srv.port
        cluster = make_cluster()
        pool = H2Pool(cluster, Host("127.0.0.1", port))
        reqs = [Req(b"/x"), Req(b"/y")]
        for r in reqs:
            pool.request(r)
        await all_done(reqs)
        assert [r.failure for r in reqs] == ["connection_failure"] * 2
        assert cluster.stats.upstream_rq_pending_active.value == 0
        assert cluster.stats.upstream_cx_connect_fail.value == 1
    run(go)


def test_cancel_pending() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            r = Req(b"/x")
            pool.request(r)
            pool.cancel(r)
            assert cluster.stats.upstream_rq_cancelled.value == 1
            await asyncio.sleep(0.1)
            assert r.handle is None
    run(go)


def test_paused_stream_does_not_stall_others() -> None:
    big = b"z" * 300_000

    def respond(conn: ServerConn, req: Request) -> None:
        conn.codec.send_response_head(req.stream_id, 200, [], False)
        conn.codec.send_data(req.stream_id, big, True)
        conn.flush()

    async def go() -> None:
        async with H2TestServer(respond) as srv:
            cluster = make_cluster()
            opts = Http2Options(initial_stream_window_size=65535)
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port), opts)
            slow, fast = Req(b"/slow", pause=True), Req(b"/fast")
            pool.request(slow)
            pool.request(fast)
            await fast.done.wait()
            assert fast.response_body == big
            got = len(slow.response_body)
            assert got <= 65535  # one window, then the upstream waits for this stream only
            await asyncio.sleep(0.1)
            assert len(slow.response_body) == got and not slow.done.is_set()
            assert slow.handle is not None
            slow.handle.transport.resume_reading()
            await slow.done.wait()
            assert slow.response_body == big
    run(go)


def test_upload_waits_for_the_window() -> None:
    body = b"u" * 200_000

    async def go() -> None:
        gate = asyncio.Event()
        got: list[int] = []

        async def answer_later(conn: ServerConn, req: Request) -> None:
            await gate.wait()
            echo_path(conn, req)

        def respond(conn: ServerConn, req: Request) -> None:
            got.append(len(req.body))
            asyncio.get_running_loop().create_task(answer_later(conn, req))

        async with H2TestServer(respond, window=65535) as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            r = Req(b"/up", body)
            pool.request(r)
            await until(lambda: got == [len(body)])
            gate.set()
            await r.done.wait()
            assert r.response_body == b"/up|" + body
    run(go)


def test_upstream_reset_and_close() -> None:
    def respond(conn: ServerConn, req: Request) -> None:
        if req.head.target == b"/reset":
            conn.codec.reset_stream(req.stream_id, 8)
        elif req.head.target == b"/close":
            conn.transport.close()  # type: ignore[union-attr]
        else:
            echo_path(conn, req)

    async def go() -> None:
        async with H2TestServer(respond) as srv:
            cluster = make_cluster()
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port))
            r = Req(b"/reset")
            pool.request(r)
            await r.done.wait()
            assert isinstance(r.events[-1], ev.StreamReset)
            assert r.events[-1].reason == "remote_reset"
            ok = Req(b"/ok")
            pool.request(ok)
            await ok.done.wait()
            assert ok.status == 200 and len(srv.conns) == 1  # the connection survived
            c = Req(b"/close")
            pool.request(c)
            await c.done.wait()
            assert c.closed or isinstance(c.events[-1], ev.StreamReset)
            await until(lambda: not pool.conns)
            assert cluster.stats.upstream_cx_destroy_remote.value == 1
            assert cluster.stats.upstream_cx_destroy_with_active_rq.value == 1
            again = Req(b"/again")
            pool.request(again)
            await again.done.wait()
            assert again.status == 200
    run(go)


def test_pool_for_caches_per_host_and_stats_names() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            host = Host("127.0.0.1", srv.port)
            pool = h2_pool_for(cluster, host)
            assert h2_pool_for(cluster, host) is pool
            r = Req(b"/x", release=False)
            pool.request(r)
            await r.done.wait()
            assert pool.codec_stats.streams_active.value == 0
            names = {s.name for s in cluster.stats.scope.store}
            assert "cluster.up.http2.rx_reset" in names
            assert "cluster.up.http2.streams_active" in names
    run(go)


def test_removed_host_pool_goes() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            host = Host("127.0.0.1", srv.port)
            cluster.set_hosts([host])
            pool = h2_pool_for(cluster, host)
            r = Req(b"/x")
            pool.request(r)
            await r.done.wait()
            assert len(pool.conns) == 1
            cluster.set_hosts([])  # the host leaves: its idle connection closes
            await until(lambda: srv.closed == 1)
            assert h2_pool_for(cluster, host) is not pool
            assert cluster.resources["DEFAULT"].connections.count == 0
    run(go)
