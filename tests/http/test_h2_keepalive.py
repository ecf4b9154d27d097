"""connection_keepalive: PINGs every interval, the connection closed (http2.keepalive_timeout)
when neither the ACK nor any other frame arrives within the timeout; config as Envoy's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from envoi.upstream.cluster import Host
from envoi_http.codec.h2_options import Http2Options, KeepaliveOptions, from_proto
from envoi_http.h2_keepalive import Keepalive
from envoi_http.router.h2_pool import H2Pool
from envoy.config.core.v3 import protocol_pb2
from google.protobuf import json_format
from h2_test_server import H2TestServer
from test_h2_pool import Req, make_cluster, run, until


def test_options_from_config() -> None:
    msg = json_format.ParseDict({"connection_keepalive": {"interval": "2s", "timeout": "0.5s",
                                                          "interval_jitter": {"value": 10}}},
                                protocol_pb2.Http2ProtocolOptions())
    opts, issues = from_proto(msg, "p")
    assert issues == [] and opts.keepalive == KeepaliveOptions(2.0, 0.5, 10.0)
    bad = json_format.ParseDict({"connection_keepalive": {"interval": "1s",
                                                          "connection_idle_interval": "1s"}},
                                protocol_pb2.Http2ProtocolOptions())
    _, issues = from_proto(bad, "p")
    assert [p for p, _ in issues] == ["p.connection_keepalive.connection_idle_interval",
                                      "p.connection_keepalive.timeout"]


class FakeTimers:
    """The ``call_later`` of an event loop on a fake clock: ``advance`` fires the timers that
    fall due, in order (a real loop on a loaded box fires them late, and together)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, Callable[[], object], list[bool]]] = []

    def call_later(self, delay: float, callback: Callable[[], object]) -> Any:
        cancelled = [False]
        self.timers.append((self.now + delay, len(self.timers), callback, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True
        return Handle()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while due := sorted(t for t in self.timers if t[0] <= end and not t[3][0]):
            when, _, callback, cancelled = due[0]
            self.now, cancelled[0] = when, True
            callback()
        self.now = end


def test_driver_pings_and_expires() -> None:
    timers = FakeTimers()
    pings: list[bytes] = []
    expired: list[bool] = []
    k = Keepalive(timers, KeepaliveOptions(0.05, 0.1, 0),  # type: ignore[arg-type]
                  pings.append, lambda: expired.append(True))
    timers.advance(0.08)
    assert len(pings) == 1 and len(pings[0]) == 8
    k.acked()  # answered: the next one an interval later
    timers.advance(0.08)
    assert len(pings) == 2 and not expired
    for _ in range(4):  # other frames keep extending the deadline
        timers.advance(0.05)
        k.received()
    assert not expired and len(pings) == 2  # no second PING while one is unanswered
    timers.advance(0.09)
    assert not expired  # (the deadline: 0.1 s after the last frame)
    timers.advance(0.02)
    assert expired == [True]
    k.close()


def test_pool_closes_a_connection_that_stops_answering() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            # A timeout a loaded box cannot miss between a PING and its ACK (both ends run on
            # this loop), and a wait longer than interval + timeout.
            opts = Http2Options(keepalive=KeepaliveOptions(0.05, 1.0, 0))
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port), opts)
            r = Req(b"/x")
            pool.request(r)
            await r.done.wait()
            await asyncio.sleep(1.5)  # PINGs answered: the connection stays
            assert len(pool.conns) == 1 and pool.codec_stats.keepalive_timeout.value == 0
            for c in srv.conns:
                assert c.transport is not None
                c.transport.pause_reading()  # the peer stops answering
            await until(lambda: not pool.conns, 15.0)
            assert pool.codec_stats.keepalive_timeout.value == 1
            again = Req(b"/again")
            pool.request(again)
            await again.done.wait()
            assert again.status == 200 and len(srv.conns) == 2
    run(go)
