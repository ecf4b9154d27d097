"""HTTP heads on the live tap, end to end: curl -> envoi (HCM, codec AUTO) -> an echo server,
over HTTP/1.1 and HTTP/2 (h2c prior knowledge), while a client streams ``GET /tap`` from the
admin, in one process and with two workers. Every request appears once as ``http.request`` then
``http.response`` (in order per connection and stream) with its method, path, authority,
status, header names and values, protocol, duration, stream id and listener; a field match keeps
only what matches; the point is listed by ``/tap/points``; nothing is published while nobody
listens."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER, EchoServer

HCM = "envoy.filters.network.http_connection_manager"

CONFIG = HCM_LISTENER + """\
          stat_prefix: tapped
          codec_type: AUTO
""" + ROUTER_ONLY + """\
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    with EchoServer() as server:
        yield server.port


def tap_stat(proc: Any, name: str) -> int:
    return int(proc.stats().get(f"envoi.tap.{name}", 0))


class TapReader(threading.Thread):
    """Streams ``/tap`` with http.client and keeps every JSON line."""

    def __init__(self, admin: int, query: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        self.conn.request("GET", "/tap?" + query)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.events: list[dict[str, Any]] = []

    def run(self) -> None:
        for line in self.response:
            self.events.append(json.loads(line))


def curl(port: int, path: str, *extra: str) -> str:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
         "-H", "x-tap-test: yes", *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


@pytest.mark.parametrize("concurrency", [1, 2])
def test_http_heads_on_the_tap(envoi_process: Callable[..., Any], echo: int,
                               concurrency: int) -> None:
    admin, port = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=port, up=echo), admin,
                         concurrency=concurrency)
    # Nothing is published while nobody listens.
    assert curl(port, "/before") == "200 1.1"
    # The point is listed.
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    conn.request("GET", "/tap/points")
    assert {"listener": "http_in", "filter": HCM} in json.loads(
        conn.getresponse().read())["tap_points"]
    n = 3  # requests per protocol; each makes a request and a response event
    reader = TapReader(admin, f"filter={HCM}&path=/tapped/*&limit={4 * n}")
    reader.start()
    wait_for(lambda: tap_stat(proc, "sessions") == 1, 10, what="the tap session")
    assert tap_stat(proc, "published") == 0
    for i in range(n):
        assert curl(port, f"/tapped/h1/{i}", "--http1.1") == "200 1.1"
        assert curl(port, "/other") == "200 1.1"  # not matched
        assert curl(port, f"/tapped/h2/{i}", "--http2-prior-knowledge") == "200 2"
    reader.join(30)
    assert not reader.is_alive(), f"the stream did not end: {reader.events}"
    events = reader.events
    assert len(events) == 4 * n
    # Each curl is one connection: its request event, then its response event.
    for req, resp in zip(events[::2], events[1::2], strict=True):
        assert req["type"] == "http.request" and resp["type"] == "http.response"
        assert req["connection"] == resp["connection"] and req["stream"] == resp["stream"]
        assert req.get("worker") == resp.get("worker")
        for e in (req, resp):
            assert e["listener"] == "http_in" and e["filter"] == HCM
            assert e["method"] == "GET" and e["authority"] == f"127.0.0.1:{port}"
        assert req["path"] == resp["path"]
        h2 = "/h2/" in req["path"]
        assert req["protocol"] == resp["protocol"] == ("HTTP/2" if h2 else "HTTP/1.1")
        if h2:
            assert req["stream"] == 1  # (curl's one stream on its connection)
        assert req["scheme"] == "http"
        names = [k for k, _ in req["headers"]]
        assert ["x-tap-test", "yes"] in req["headers"] and "user-agent" in names
        assert "x-request-id" not in names  # as it came: before the connection manager adds it
        assert resp["status"] == 200 and resp["duration_ms"] >= 0 and "reset" not in resp
        rnames = [k for k, _ in resp["headers"]]
        assert "date" in rnames and ["server", "envoy"] in resp["headers"]
    assert [e["path"] for e in events[::2]] == [
        p for i in range(n) for p in (f"/tapped/h1/{i}", f"/tapped/h2/{i}")]
    if concurrency == 2:
        assert all(e["worker"] in (0, 1) for e in events)
    wait_for(lambda: tap_stat(proc, "sessions") == 0, 10, what="the session closed")
