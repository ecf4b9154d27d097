"""WebSocket and other upgrades through ``upgrade_configs``, end to end with a real WebSocket
client and server (``websockets``), through the real Envoy 1.39.3 and through envoi with the same
config: the same answers and the same stats from both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_peers import ALL_ROUTES, hcm_listener
from scripted_upstream import Proxy, send_then_read, start_config
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from ws_peers import RawUpgradeEcho, WsEcho

CONFIG = hcm_listener("ws_hcm") + """\
          stat_prefix: ws
          upgrade_configs: [{{upgrade_type: websocket}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/off"}}
                route:
                  cluster: ws
                  upgrade_configs: [{{upgrade_type: websocket, enabled: false}}]
              - match: {{prefix: "/raw"}}
                route: {{cluster: raw}}
              - match: {{prefix: "/ws"}}
                route: {{cluster: ws}}
  - name: plain_hcm
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port2}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: plain
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/on"}}
                route:
                  cluster: ws
                  upgrade_configs: [{{upgrade_type: websocket, enabled: true}}]
              - match: {{prefix: "/raw"}}
                route: {{cluster: raw}}
              - match: {{prefix: "/"}}
                route: {{cluster: ws}}
  clusters:
  - name: ws
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: ws
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {ws}}}}}}}
  - name: raw
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: raw
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {raw}}}}}}}
"""


@pytest.fixture
def peers() -> Iterator[tuple[WsEcho, RawUpgradeEcho]]:
    with WsEcho() as ws, RawUpgradeEcho() as raw:
        yield ws, raw


@pytest.fixture(params=["envoy", "envoi"])
def proxy(request: pytest.FixtureRequest, peers: tuple[WsEcho, RawUpgradeEcho],
          proxy_process: Callable[[str, str, int], Any]) -> Iterator[Proxy]:
    ws, raw = peers
    yield start_config(request.param, CONFIG, proxy_process, ("port2",), ws=ws.port,
                       raw=raw.port)


def raw_exchange(port: int, data: bytes, until: bytes = b"", wait: float = 3.0,
                 ) -> tuple[bytes, bool]:
    """Send ``data``; read until ``until`` was seen, the peer closed, or ``wait`` passed."""
    got = send_then_read(port, data, wait=wait, until=until)
    return got.data, got.closed


def test_websocket_echo_both_ways(proxy: Proxy, peers: tuple[WsEcho, RawUpgradeEcho]) -> None:
    ws, _ = peers
    big = bytes(range(256)) * 400  # 100 KiB binary frame
    with connect(f"ws://127.0.0.1:{proxy.port}/ws/echo", open_timeout=5) as c:
        assert c.response is not None and c.response.status_code == 101
        hdrs = {k.lower(): v for k, v in c.response.headers.raw_items()}
        assert hdrs["upgrade"] == "websocket" and hdrs["connection"] == "Upgrade"
        assert hdrs["server"] == "envoy" and "x-envoy-upstream-service-time" not in hdrs
        for i in range(20):
            c.send(f"message {i}")
            assert c.recv(5) == f"message {i}"
        c.send(big)
        assert c.recv(5) == big
        proxy.wait_stat("http.ws.downstream_cx_upgrades_active", 1)
    proxy.wait_stat("http.ws.downstream_cx_upgrades_active", 0)
    st = proxy.stats()
    # Closed by the client: both count the exchange as a completed 1xx that answered before the
    # request ended, and the upstream connection destroyed with its request active.
    for name, want in [("http.ws.downstream_rq_1xx", 1), ("http.ws.downstream_rq_completed", 1),
                       ("http.ws.downstream_rq_response_before_rq_complete", 1),
                       ("cluster.ws.upstream_rq_101", 1), ("cluster.ws.upstream_rq_completed", 1),
                       ("cluster.ws.upstream_cx_destroy_with_active_rq", 1),
                       ("http.ws.downstream_cx_rx_bytes_total", 1235),
                       ("http.ws.downstream_cx_tx_bytes_total", 1156)]:
        assert st.get(name, 0) == want, (proxy.kind, name, st.get(name))
    # Envoy also counts the end of the tunnel as a reset both ways (README, differences).
    resets = 1 if proxy.kind == "envoy" else 0
    assert st.get("http.ws.downstream_rq_rx_reset", 0) == resets
    assert st.get("http.ws.downstream_rq_tx_reset", 0) == resets
    assert st["http.ws.downstream_cx_upgrades_total"] == 1
    assert st["http.ws.downstream_rq_ws_on_non_ws_route"] == 0
    # The upstream saw the upgrade headers, plus the ones the proxy adds.
    seen = ws.headers[0]
    assert seen["upgrade"] == "websocket" and seen["connection"] == "Upgrade"
    assert seen["x-forwarded-proto"] == "http" and "x-request-id" in seen


def test_upstream_closes_the_tunnel(proxy: Proxy) -> None:
    with connect(f"ws://127.0.0.1:{proxy.port}/ws/close", open_timeout=5) as c:
        c.send("last")
        assert c.recv(5) == "last"
        with pytest.raises(Exception):  # noqa: B017  (ConnectionClosedOK)
            c.recv(5)
        assert c.close_code == 1000 and c.close_reason == "bye"
    proxy.wait_stat("http.ws.downstream_cx_upgrades_active", 0)
    proxy.wait_stat("http.ws.downstream_cx_active", 0)
    # Closed by the upstream, with the upgrade still active on it: never pooled.
    proxy.wait_stat("cluster.ws.upstream_cx_destroy_remote_with_active_rq", 1)
    assert proxy.stats().get("cluster.ws.upstream_cx_close_notify", 0) == 0


@pytest.mark.parametrize(("listener", "path", "ok"), [
    ("ws", "/ws/x", True),  # HCM-level upgrade_configs
    ("ws", "/off", False),  # route says enabled: false
    ("plain", "/on", True),  # route says enabled: true, HCM has none
    ("plain", "/x", False),  # neither
])
def test_upgrade_configs_hcm_and_route(proxy: Proxy, listener: str, path: str, ok: bool) -> None:
    port = proxy.port if listener == "ws" else proxy.ports["port2"]
    if ok:
        with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5) as c:
            c.send("hi")
            assert c.recv(5) == "hi"
    else:
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5)
        resp = info.value.response
        assert resp.status_code == 403 and resp.body == b""
        assert resp.headers["connection"] == "close"
    st = proxy.stats()
    assert st[f"http.{listener}.downstream_rq_ws_on_non_ws_route"] == (0 if ok else 1)
    assert st[f"http.{listener}.downstream_cx_upgrades_total"] == (1 if ok else 0)
    if not ok:
        assert st[f"http.{listener}.downstream_rq_4xx"] == 1


def test_other_upgrade_tokens(proxy: Proxy, peers: tuple[WsEcho, RawUpgradeEcho]) -> None:
    _, raw = peers
    # A token the HCM does not list: 403, counted as a WebSocket on a non-WebSocket route.
    out, closed = raw_exchange(proxy.port, b"GET /raw/1 HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\n"
                                           b"Connection: upgrade\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n") and closed
    assert b"connection: close\r\n" in out
    # h2c: served as HTTP/1.1, the upgrade headers (and HTTP2-Settings) dropped.
    out, _ = raw_exchange(proxy.port, b"GET /raw/2 HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
                                      b"Connection: Upgrade, HTTP2-Settings\r\n"
                                      b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
                          until=b"15000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    # Upgrade without Connection: upgrade (and the reverse) is no upgrade: plain HTTP.
    out3, _ = raw_exchange(proxy.port, b"GET /raw/3 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket"
                                       b"\r\n\r\n", until=b"15000\r\n\r\n")
    out4, _ = raw_exchange(proxy.port, b"GET /raw/4 HTTP/1.1\r\nHost: h\r\n"
                                       b"Connection: upgrade\r\n\r\n", until=b"15000\r\n\r\n")
    assert out3.startswith(b"HTTP/1.1 200 OK\r\n") and out4.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(raw.heads) == 3
    for head in raw.heads:
        low = head.lower()
        assert b"upgrade" not in low and b"http2-settings" not in low, head
    st = proxy.stats()
    assert st["http.ws.downstream_rq_ws_on_non_ws_route"] == 1
    assert st["http.ws.downstream_cx_upgrades_total"] == 0


def test_early_bytes_and_no_pool_reuse(proxy: Proxy, peers: tuple[WsEcho, RawUpgradeEcho],
                                       ) -> None:
    """Bytes sent right behind the upgrade head reach the upstream after its 101; the upstream
    connection of the tunnel is not reused for the next request."""
    _, raw = peers
    out, _ = raw_exchange(proxy.port, b"GET /raw/t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                      b"Connection: upgrade\r\n\r\nEARLY", until=b"EARLY")
    head, _, rest = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols" and rest == b"EARLY"
    names = [ln.split(b":", 1)[0].lower() for ln in lines[1:]]
    assert names == [b"upgrade", b"connection", b"date", b"server"]
    assert b"connection: upgrade" in raw.heads[0] and b"upgrade: websocket" in raw.heads[0]
    proxy.wait_stat("http.ws.downstream_cx_upgrades_active", 0)
    out, _ = raw_exchange(proxy.port, b"GET /raw/after HTTP/1.1\r\nHost: h\r\n\r\n",
                          until=b"15000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    st = proxy.stats()
    assert st["cluster.raw.upstream_cx_total"] == 2
    assert st["http.ws.downstream_cx_upgrades_total"] == 1
