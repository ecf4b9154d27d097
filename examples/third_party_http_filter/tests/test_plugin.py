"""Tests of the template's two filters, using only envoi's public test helpers: the socket-free
``HttpFilterDriver`` for the filters' logic, and the ``envoi_process`` fixture for the package
installed and enabled from YAML in a real envoi. Copy them with the template."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from envoi.config import ConfigError
from envoi.http import FilterHeadersStatus
from envoi.testing import EnvoiProcess, HttpFilterDriver, free_port
from envoi_example_http_filter.plugin import AddHeaderFactory, ExtAuthFactory

# -- without a server ---------------------------------------------------------------------------


def test_add_header_adds_a_response_header() -> None:
    with HttpFilterDriver(AddHeaderFactory(), {"header": "X-Example", "value": "hi"}) as d:
        assert d.decode_headers(end_stream=True) is FilterHeadersStatus.CONTINUE
        assert d.encode_headers({"content-type": "text/plain"}, status=200) \
            is FilterHeadersStatus.CONTINUE
        assert d.response.headers is not None and d.response.headers["x-example"] == "hi"
        assert d.local_reply is None


def test_add_header_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="header"):
        HttpFilterDriver(AddHeaderFactory(), {"value": "no header"})
    with pytest.raises(ConfigError, match="unknown field"):
        HttpFilterDriver(AddHeaderFactory(), {"header": "x", "vlaue": "typo"})


class _Auth(http.server.BaseHTTPRequestHandler):
    """Allows ``authorization: Bearer good`` (as user alice); ``Bearer slow`` waits first."""

    gate = threading.Event()
    seen: list[str] = []

    def do_GET(self) -> None:
        auth = self.headers.get("authorization", "")
        _Auth.seen.append(self.headers.get("x-original-path", ""))
        if auth == "Bearer slow":
            _Auth.gate.wait(10)
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
def auth_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Auth)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Auth.seen = []
    _Auth.gate.clear()
    yield server.server_address[1]
    _Auth.gate.set()
    server.shutdown()
    server.server_close()


def test_ext_auth_allows_and_sets_the_user(auth_port: int) -> None:
    config = {"auth_url": f"http://127.0.0.1:{auth_port}/check"}
    with HttpFilterDriver(ExtAuthFactory(), config) as d:
        status = d.decode_headers({"authorization": "Bearer good"}, path="/api",
                                  end_stream=True)
        assert status is FilterHeadersStatus.CONTINUE
        assert d.request.headers is not None and d.request.headers["x-auth-user"] == "alice"
        assert d.stats.changed() == {"example.ext_auth.ok": 1}
    assert _Auth.seen == ["/api"]


def test_ext_auth_denies_with_a_local_reply(auth_port: int) -> None:
    config = {"auth_url": f"http://127.0.0.1:{auth_port}/check"}
    with HttpFilterDriver(ExtAuthFactory(), config) as d:
        status = d.decode_headers({"authorization": "Bearer bad"}, end_stream=True)
        assert status is FilterHeadersStatus.STOP_ITERATION
        assert d.local_reply is not None and d.local_reply.status == 403
        assert d.local_reply.details == "ext_auth_denied"
        assert d.request.headers is None  # nothing went on to the router
        assert d.stats["example.ext_auth.denied"] == 1


def test_ext_auth_service_down_is_403() -> None:
    with HttpFilterDriver(ExtAuthFactory(),
                          {"auth_url": f"http://127.0.0.1:{free_port()}/"}) as d:
        d.decode_headers(end_stream=True)
        assert d.local_reply is not None and d.local_reply.status == 403
        assert d.stats["example.ext_auth.error"] == 1


# -- installed, enabled from YAML, in a real envoi ----------------------------------------------

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
CONFIG = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: web
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
                direct_response: {{status: 200, body: {{inline_string: "hello\\n"}}}}
"""


def get(url: str, auth: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@pytest.fixture
def proxy(envoi_process: Callable[..., EnvoiProcess],
          auth_port: int) -> tuple[EnvoiProcess, str]:
    admin, port = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=port, auth=auth_port, hcm=HCM), admin)
    return proc, f"http://127.0.0.1:{port}"


def test_both_filters_from_yaml(proxy: tuple[EnvoiProcess, str]) -> None:
    proc, base = proxy
    status, headers, body = get(base + "/api", "Bearer good")
    assert (status, body, headers["x-example"]) == (200, b"hello\n", "added-by-plugin")
    status, headers, body = get(base + "/api", "Bearer bad")
    assert (status, body) == (403, b"denied\n")
    assert headers["x-example"] == "added-by-plugin"  # the local reply is encoded too
    stats = proc.stats()
    assert stats["example.ext_auth.ok"] == 1 and stats["example.ext_auth.denied"] == 1


def test_async_filter_does_not_block_other_streams(proxy: tuple[EnvoiProcess, str]) -> None:
    _, base = proxy
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(get(base + "/slow", "Bearer slow")[0]))
    t.start()
    try:
        for _ in range(3):  # while the slow stream's auth call is pending
            assert get(base + "/fast", "Bearer good")[0] == 200
        assert not result
    finally:
        _Auth.gate.set()
        t.join(20)
    assert result == [200]
