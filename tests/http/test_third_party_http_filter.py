"""The example third-party HTTP filter package (examples/third_party_http_filter), enabled from
YAML in a real envoi process: the sync filter adds a response header; the async one asks a real
HTTP auth service before the request reaches a real upstream."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from envoi.testing import EnvoiProcess, free_port
from http_peers import HCM_LISTENER, EchoServer

CONFIG = HCM_LISTENER + """\
          stat_prefix: ex
          http_filters:
          - name: example.filters.http.add_header
            typed_config:
              "@type": type.googleapis.com/example.filters.http.add_header.v1.AddHeader
              header: x-example
              value: added-by-plugin
          - name: example.filters.http.ext_auth
            typed_config:
              "@type": type.googleapis.com/example.filters.http.ext_auth.v1.ExtAuth
              auth_url: http://127.0.0.1:{auth}/check
              timeout_ms: 2000
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: echo}}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
"""


class _Auth(http.server.BaseHTTPRequestHandler):
    """Allows ``authorization: Bearer good``; slow (0.3 s) for ``Bearer slow``."""

    seen: list[str] = []
    gate = threading.Event()

    def do_GET(self) -> None:
        auth = self.headers.get("authorization", "")
        _Auth.seen.append(self.headers.get("x-original-path", ""))
        if auth == "Bearer slow":
            _Auth.gate.wait(10)  # held until the test has seen another stream answered
            auth = "Bearer good"
        ok = auth == "Bearer good"
        self.send_response(200 if ok else 401)
        if ok:
            self.send_header("x-auth-user", "alice")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def setup(envoi_process: Callable[..., EnvoiProcess]) -> Iterator[tuple[EnvoiProcess, int]]:
    auth = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Auth)
    auth.daemon_threads = True
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    _Auth.seen = []
    _Auth.gate.clear()
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        proc = envoi_process(CONFIG.format(admin=admin, port=port, echo=echo.port,
                                           auth=auth.server_address[1]), admin)
        yield proc, port
    auth.shutdown()
    auth.server_close()


def test_both_filters_from_yaml(setup: tuple[EnvoiProcess, int]) -> None:
    proc, port = setup
    base = f"http://127.0.0.1:{port}"
    r = httpx.get(base + "/api", headers={"authorization": "Bearer good"})
    assert r.status_code == 200 and r.headers["x-example"] == "added-by-plugin"
    assert r.json()["headers"]["x-auth-user"] == "alice"  # set by the async filter
    r = httpx.get(base + "/api", headers={"authorization": "Bearer bad"})
    assert r.status_code == 403 and r.text == "denied\n"
    assert r.headers["x-example"] == "added-by-plugin"  # the local reply is encoded too
    assert _Auth.seen == ["/api", "/api"]
    st = proc.stats()
    assert st["example.ext_auth.ok"] == 1 and st["example.ext_auth.denied"] == 1


def test_async_filter_does_not_block_other_streams(setup: tuple[EnvoiProcess, int]) -> None:
    _, port = setup
    base = f"http://127.0.0.1:{port}"
    result: list[httpx.Response] = []
    t = threading.Thread(target=lambda: result.append(httpx.get(
        base + "/slow", headers={"authorization": "Bearer slow"}, timeout=20)))
    t.start()
    try:
        # While the slow stream's auth call is pending, other streams are served.
        for _ in range(3):
            assert httpx.get(base + "/fast", headers={"authorization": "Bearer good"},
                             timeout=5).status_code == 200
        assert not result
    finally:
        _Auth.gate.set()
        t.join(20)
    assert result[0].status_code == 200 and result[0].json()["path"] == "/slow"


def test_auth_service_down_is_403(envoi_process: Callable[..., EnvoiProcess]) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        proc = envoi_process(CONFIG.format(admin=admin, port=port, echo=echo.port,
                                           auth=free_port()), admin)
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"authorization": "Bearer good"})
        assert r.status_code == 403
        assert proc.stats()["example.ext_auth.error"] == 1
