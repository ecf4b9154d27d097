"""connection_keepalive: PINGs every interval, the connection closed (http2.keepalive_timeout)
when neither the ACK nor any other frame arrives within the timeout; config as Envoy's."""

from __future__ import annotations

import asyncio

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


def test_driver_pings_and_expires() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        pings: list[bytes] = []
        expired: list[bool] = []
        k = Keepalive(loop, KeepaliveOptions(0.05, 0.1, 0), pings.append,
                      lambda: expired.append(True))
        await asyncio.sleep(0.08)
        assert len(pings) == 1 and len(pings[0]) == 8
        k.acked()  # answered: the next one an interval later
        await asyncio.sleep(0.08)
        assert len(pings) == 2 and not expired
        for _ in range(4):  # other frames keep extending the deadline
            await asyncio.sleep(0.05)
            k.received()
        assert not expired and len(pings) == 2  # no second PING while one is unanswered
        await asyncio.sleep(0.15)
        assert expired == [True]
        k.close()
    run(go)


def test_pool_closes_a_connection_that_stops_answering() -> None:
    async def go() -> None:
        async with H2TestServer() as srv:
            cluster = make_cluster()
            opts = Http2Options(keepalive=KeepaliveOptions(0.05, 0.15, 0))
            pool = H2Pool(cluster, Host("127.0.0.1", srv.port), opts)
            r = Req(b"/x")
            pool.request(r)
            await r.done.wait()
            await asyncio.sleep(0.3)  # PINGs answered: the connection stays
            assert len(pool.conns) == 1 and pool.codec_stats.keepalive_timeout.value == 0
            for c in srv.conns:
                assert c.transport is not None
                c.transport.pause_reading()  # the peer stops answering
            await until(lambda: not pool.conns, 3.0)
            assert pool.codec_stats.keepalive_timeout.value == 1
            again = Req(b"/again")
            pool.request(again)
            await again.done.wait()
            assert again.status == 200 and len(srv.conns) == 2
    run(go)
