"""auto_config: each host's protocol is what it picks by ALPN; requests then go to the HTTP/2 or
the HTTP/1.1 pool (real TLS upstreams: hypercorn offers h2 and http/1.1, a Python HTTPS echo only
http/1.1)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from envoi.stats import Store
from envoi.tls.context import build_client_context
from envoi.tls.stats import SslStats
from envoi.upstream.cluster import Cluster, ClusterStats, Host
from envoi_http.codec.h2_options import Http2Options
from envoi_http.router.auto_pool import AutoPool
from envoi_http.router.h2_pool import H2Pool
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from h2_peers import Hypercorn
from test_h2_pool import Req, run
from tls_certs import make_pki
from tls_peers import TlsEchoServer


def tls_cluster(ca: str) -> Cluster:
    c = Cluster("up", ClusterStats(Store().root.scope("cluster.up")), connect_timeout=5.0)
    cfg = tls_pb2.UpstreamTlsContext()
    cfg.common_tls_context.validation_context.trusted_ca.filename = ca
    c.tls = build_client_context(cfg, "c.transport_socket")
    c.ssl_stats = SslStats(c.stats.scope.scope("ssl"))
    return c


def test_alpn_picks_the_pool(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert = pki.servers["upstream.local"].pair

    async def go() -> None:
        with Hypercorn(cert=(Path(cert[0]), Path(cert[1]))) as hyper, \
                TlsEchoServer(cert, alpn=["http/1.1"]) as h1:
            for port, want, version in ((hyper.port, "h2", "2"), (h1.port, "http/1.1", None)):
                cluster = tls_cluster(str(pki.ca.pem))
                auto = AutoPool(cluster, Host("127.0.0.1", port), "auto", Http2Options(), 0)
                reqs = [Req(b"/anything"), Req(b"/anything")]
                for r in reqs:
                    auto.request(r)
                await asyncio.gather(*(r.done.wait() for r in reqs))
                assert [r.status for r in reqs] == [200, 200], reqs[0].failure
                assert auto.chosen == want
                assert isinstance(auto.pool(want), H2Pool) == (want == "h2")
                body = json.loads(reqs[0].response_body)
                if version:
                    assert body["http_version"] == version
                else:
                    assert body["alpn"] == "http/1.1"
                st = cluster.stats
                assert st.upstream_rq_pending_active.value == 0
                # the probe, then the pool's: one HTTP/2 connection, or one per HTTP/1.1 request
                assert st.upstream_cx_total.value == (2 if want == "h2" else 3)
    run(go)
