"""Peers for the HTTP tests: a threaded echo upstream and the router config used by the
end-to-end and Envoy-oracle tests."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from pathlib import Path

from envoi.testing import free_port

# The reference Envoy config of the HTTP router tests (kept in the repo: tests read no file
# outside it).
ROUTER_YAML = (Path(__file__).parent / "http_router.yaml").read_text()


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body_in = self.rfile.read(n) if n else b""
        if self.path.startswith("/flaky"):
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = json.dumps({"path": self.path, "method": self.command,
                           "port": self.server.server_address[1],
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "body_len": len(body_in)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


class EchoServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        socketserver.TCPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Echo)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hcm_listener_item(name: str = "http_in", port_field: str = "port") -> str:
    """One listener (an item of ``static_resources.listeners``, at 2 spaces) ``name`` on format
    field ``port_field``, with the http_connection_manager: a test appends the HCM's own fields
    (stat_prefix, route_config, ...) at 10 spaces."""
    return """\
  - name: NAME
    address: {{socket_address: {{address: 127.0.0.1, port_value: {PORT}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
""".replace("NAME", name).replace("{PORT}", "{" + port_field + "}")


def hcm_listener(name: str = "http_in", port_field: str = "port") -> str:
    """The start of a config template: the admin (format field ``admin``) and
    :func:`hcm_listener_item`; a test appends the HCM's own fields, then its clusters."""
    return """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
""" + hcm_listener_item(name, port_field)


# The start of an envoi config with one HCM listener (format fields ``admin`` and ``port``).
HCM_LISTENER = hcm_listener()


def router_config(listen: int, admin: int, echo_a: int, echo_b: int) -> str:
    """http_router.yaml on our ports; echo_b made STATIC (envoi has no STRICT_DNS yet)."""
    s = ROUTER_YAML.replace("18200", str(listen)).replace("18002", str(admin))
    s = s.replace("18081", str(echo_a)).replace("18082", str(echo_b))
    s = s.replace("type: STRICT_DNS\n    dns_lookup_family: V4_ONLY", "type: STATIC")
    s = s.replace("lb_policy: LEAST_REQUEST", "lb_policy: ROUND_ROBIN")
    return s.replace("address: localhost,", "address: 127.0.0.1,")


# The HCM's filter list with only the router (10-space indent, the HCM_LISTENER's fields): a test
# follows it with its route_config.
ROUTER_ONLY = """\
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

# One STATIC cluster ``up`` at 127.0.0.1:{up}, an item of ``static_resources.clusters``.
UP_CLUSTER = """\
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}
"""

# The admin and the cluster ``up`` (format fields ``admin`` and ``up``), then ``listeners:``: a
# test appends its listeners (items at 2 spaces).
UP_THEN_LISTENERS = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  clusters:
""" + UP_CLUSTER + """\
  listeners:
"""

# The HCM's route_config with one virtual host ``all`` for every domain, up to its ``routes:``
# (10-space indent, as ROUTER_ONLY): a test follows it with its routes (items at 14 spaces).
ALL_ROUTES = """\
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
"""
