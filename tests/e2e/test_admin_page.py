"""The admin home page (``/``) in a real headless Chromium: it loads with no console error, no
uncaught exception and no failed load; it shows every listener and cluster of the config, a
failed host as failed, the plugins' distributions; its charts move while a load loop runs; its
tap view streams the MongoDB commands pymongo sends. The screenshot is kept as a test artifact
(``$ENVOI_TEST_ARTIFACTS``, else ``test-artifacts/`` in the checkout)."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from headless_chromium import Chromium
from http_peers import ALL_ROUTES, EchoServer
from mongo_peers import secantusdb
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parents[2]
MONGO = "envoy.filters.network.mongo_proxy"

CONFIG = """
node: {{id: page-test}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 127.0.0.1, port_value: {web}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: web
""" + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: db
    address: {{socket_address: {{address: 127.0.0.1, port_value: {db}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: db
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db_tcp
          cluster: mongo
  - name: raw
    address: {{socket_address: {{address: 127.0.0.1, port_value: {raw}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: raw
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 1s
    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {{path: /health}}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {dead}}}}}}}
  - name: mongo
    connect_timeout: 2s
    load_assignment:
      cluster_name: mongo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {mongo}}}}}}}
"""


def artifact_dir() -> Path:
    return Path(os.environ.get("ENVOI_TEST_ARTIFACTS") or ROOT / "test-artifacts")


class LoadLoop(threading.Thread):
    """HTTP requests through the proxy until stopped, one in eight answered 503."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopping.is_set():
            path = "/flaky" if self.sent % 8 == 7 else f"/item/{self.sent}"
            conn.request("GET", path)
            conn.getresponse().read()
            self.sent += 1
            if self.sent % 50 == 0:  # new connections now and then
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.stopping.wait(0.005)
        conn.close()


@pytest.fixture
def peers() -> Iterator[tuple[int, int]]:
    with EchoServer() as echo, secantusdb() as mongo:
        yield echo.port, mongo


def test_admin_home_page_in_chromium(peers: tuple[int, int],
                                     envoi_process: Callable[..., Any]) -> None:
    echo, mongo = peers
    ports = {k: free_port() for k in ("admin", "web", "db", "raw", "dead")}
    proc = envoi_process(CONFIG.format(echo=echo, mongo=mongo, **ports), ports["admin"],
                         concurrency=2)
    admin = f"http://127.0.0.1:{ports['admin']}"
    with Chromium() as browser:
        page = browser.new_page()
        page.goto(admin + "/")
        assert page.eval("document.title") == "envoi admin"

        # Every listener and cluster of the config, the failed host as failed.
        def shown(selector: str, attr: str) -> list[str]:
            return sorted(page.eval(
                f"[...document.querySelectorAll('{selector}')].map(e => e.dataset.{attr})"))

        wait_for(lambda: shown("#listeners tr[data-listener]", "listener") == ["db", "raw", "web"],
                 10, what="the listeners")
        wait_for(lambda: shown("#clusters [data-cluster]", "cluster") == ["backend", "mongo"],
                 10, what="the clusters")
        wait_for(lambda: page.eval(
            "document.querySelector('[data-cluster=backend] tr[data-host$=\":"
            f"{ports['dead']}\"] .badge.bad')?.textContent") == "failed active hc", 20,
            what="the dead host shown failed (after the next /clusters refresh)")
        assert page.eval("document.querySelector('[data-cluster=backend] "
                         f"tr[data-host$=\":{echo}\"] .badge.ok')?.textContent") == "healthy"
        dists = shown("#plugins tr[data-distribution]", "distribution")
        assert any(d.startswith("envoi-http") for d in dists)
        assert any(d.startswith("envoi-mongo") for d in dists)
        assert page.eval("document.getElementById('node').textContent") == "page-test"

        # The charts move under load.
        load = LoadLoop(ports["web"])
        load.start()
        try:
            def moving() -> bool:
                series = page.eval("window.__envoi.series")
                return all(max(series[k], default=0) > 0
                           for k in ("requests", "errors5xx", "bytes", "connections"))

            wait_for(moving, 30, what="the charts to move")
            before = page.eval("window.__envoi.series.requests.length")
            wait_for(lambda: page.eval("window.__envoi.series.requests.length") > before, 30,
                     what="a new point on the requests chart")
            # The page's figures are the admin's: requests per second near what we sent.
            assert page.eval("document.getElementById('val-requests').textContent").endswith("/s")

            # The tap view: MongoDB commands as pymongo sends them.
            page.eval("[...document.getElementById('tap-point').options].find("
                      f"o => o.textContent === 'db · {MONGO}').selected = true")
            page.eval("document.getElementById('tap-match').value = 'collection=pets'")
            page.eval("document.getElementById('tap-toggle').click()")
            wait_for(lambda: proc.stats().get("envoi.tap.sessions") == 1, 30,
                     what="the page's tap session")
            with MongoClient(f"mongodb://127.0.0.1:{ports['db']}/?directConnection=true") as c:
                for i in range(3):
                    c.pagetest.pets.insert_one({"i": i})
                    c.pagetest.other.insert_one({"i": i})
            wait_for(lambda: page.eval("document.getElementById('tap-log').textContent")
                     .count("collection=pets") == 3, 30, what="the commands in the tap view")
            log = page.eval("document.getElementById('tap-log').textContent")
            assert "mongo.command" in log and "command=insert" in log
            assert "collection=other" not in log
            # A chart with some history, and the hosts' counters refreshed, for the picture.
            wait_for(lambda: page.eval("window.__envoi.series.requests.length") >= 12, 60,
                     what="a minute's worth of the chart, nearly")
            wait_for(lambda: page.eval(
                "document.querySelector('[data-cluster=backend] tr[data-host$=\":"
                f"{echo}\"] td:nth-child(4)').textContent") not in ("0", None), 30,
                what="the healthy host's request count")
            shot = page.screenshot(artifact_dir() / "admin-home.png")
            assert shot.stat().st_size > 20_000
            page.eval("document.getElementById('tap-toggle').click()")
            wait_for(lambda: proc.stats().get("envoi.tap.sessions") == 0, 30,
                     what="the tap session closed by the page")
        finally:
            load.stopping.set()
            load.join(10)
        assert load.sent > 0
        assert page.eval("window.__envoi.errors") == 0
        assert page.problems == [], page.problems
