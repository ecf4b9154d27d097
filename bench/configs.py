"""The configs of a benchmark run. Envoy and envoi get the very same rendered YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: What the backend answers on ``GET /``: exactly 100 bytes.
SMALL_BODY = (b"envoi benchmark backend: a fixed body of exactly one hundred bytes, "
              b"padded to length...............\n")
assert len(SMALL_BODY) == 100
LARGE_SIZE = 64 * 1024
HCM_TYPE = ("envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")


def _admin(admin: int) -> str:
    return f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
"""


def _cluster(name: str, port: int, extra: str = "") -> str:
    return f"""  - name: {name}
    type: STATIC
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
{extra}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""


def _listener(name: str, listen: int) -> str:
    """``static_resources`` with the start of one listener: a config follows it with the
    listener's filters (items at 6 spaces)."""
    return f"""static_resources:
  listeners:
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
"""


def http_proxy(admin: int, listen: int, backend: int) -> str:
    """One listener with the http_connection_manager (HTTP/1.1 and h2c: codec_type AUTO) and the
    router to one STATIC cluster, everything else at its default."""
    return _admin(admin) + _listener("ingress", listen) + f"""\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/{HCM_TYPE}
          stat_prefix: ingress_http
          codec_type: AUTO
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
""" + _cluster("backend", backend)


def _refused_port() -> int:
    """A loopback port nothing listens on (bound once, then closed): a collector that refuses
    every connection, so an exporter's cost is its attempts, the same for both proxies."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_traced(pct: float) -> Callable[[int, int, int], str]:
    """:func:`http_proxy` with the connection manager's ``tracing`` (OpenTelemetry, OTLP/gRPC
    to a collector cluster that refuses connections: the spans of each report are dropped and
    counted) at ``random_sampling`` ``pct``; reports of at most 100 spans
    (``tracing.opentelemetry.min_flush_spans``, in both proxies' runtime)."""
    def config(admin: int, listen: int, backend: int) -> str:
        text = http_proxy(admin, listen, backend)
        text = text.replace("          http_filters:\n", f"""\
          tracing:
            random_sampling: {{value: {pct}}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{envoy_grpc: {{cluster_name: otel_collector}}}}
                service_name: bench
          http_filters:
""", 1)
        runtime = """layered_runtime:
  layers:
  - name: static
    static_layer: {tracing.opentelemetry.min_flush_spans: 100}
"""
        h2 = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"""
        return runtime + text + _cluster("otel_collector", _refused_port(), h2)
    return config


def tcp_proxy(admin: int, listen: int, backend: int) -> str:
    return _admin(admin) + _listener("tcp_in", listen) + """\
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench
          cluster: backend
  clusters:
""" + _cluster("backend", backend)


def mongo_proxy(admin: int, listen: int, backend: int) -> str:
    """mongo_proxy (decoding every message, per-command stats) in front of tcp_proxy."""
    return _admin(admin) + _listener("mongo_in", listen) + """\
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: bench
          commands: [insert, find, getMore, update, delete]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp
          cluster: backend
  clusters:
""" + _cluster("backend", backend)


def _dynamodb(admin: int, listen: int, backend: int, dynamo_filter: bool) -> str:
    dynamo = """          - name: envoy.filters.http.dynamo
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamo.v3.Dynamo
""" if dynamo_filter else ""
    return _admin(admin) + _listener("dynamodb", listen) + f"""\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/{HCM_TYPE}
          stat_prefix: ddb
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: dynamodb}}
          http_filters:
{dynamo}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
""" + _cluster("dynamodb", backend)


def dynamodb_filter(admin: int, listen: int, backend: int) -> str:
    """The http_connection_manager with envoy.filters.http.dynamo before the router, to a
    DynamoDB-compatible backend (the stock Envoy refuses this config: the filter is contrib)."""
    return _dynamodb(admin, listen, backend, True)


def dynamodb_route(admin: int, listen: int, backend: int) -> str:
    """The same without the dynamo filter: the plain HTTP route."""
    return _dynamodb(admin, listen, backend, False)


def nginx_backend(tmp: Path, port: int, h2_port: int) -> str:
    """The origin for the HTTP scenarios: one nginx worker; ``GET /`` answers SMALL_BODY,
    ``GET /64k`` a 64 KiB file; ``h2_port`` speaks h2c with prior knowledge."""
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "64k.bin").write_bytes(bytes(range(256)) * (LARGE_SIZE // 256))
    for path in (tmp, www, www / "64k.bin"):  # nginx's worker may run as another user
        path.chmod(0o755)
    body = SMALL_BODY.decode().rstrip("\n").replace('"', '\\"')
    temp = "\n".join(f"    {kind}_temp_path {tmp}/nginx-{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
{temp}
    sendfile on;
    tcp_nodelay on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{h2_port} http2 backlog=4096;
        http2_max_concurrent_streams 1024;
        root {www};
        location = / {{ default_type text/plain; return 200 "{body}\\n"; }}
        location = /64k {{ try_files /64k.bin =404; }}
    }}
}}
"""


#: The gRPC unary call the gRPC scenario makes: ``/envoi.bench.Greeter/SayHello`` with a framed
#: ``HelloRequest{name: "bench"}``, answered by a framed ``HelloReply{message: "hello bench"}``
#: and the trailer ``grpc-status: 0`` (protobuf coded by hand: field 1, a string).
GRPC_PATH = "/envoi.bench.Greeter/SayHello"
GRPC_REQUEST = b"\x00\x00\x00\x00\x07" + b"\x0a\x05bench"
GRPC_REPLY = b"\x00\x00\x00\x00\x0d" + b"\x0a\x0bhello bench"


def grpc_proxy(admin: int, listen: int, backend: int) -> str:
    """``http_proxy`` with an HTTP/2 (h2c) cluster: gRPC on both sides."""
    h2 = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"""
    head, _, _ = http_proxy(admin, listen, backend).partition("  clusters:\n")
    return head + "  clusters:\n" + _cluster("backend", backend, h2)


def grpc_backend(tmp: Path) -> Path:
    """The document root of the gRPC backend (nghttpd, h2c): the reply for ``GRPC_PATH``; the
    server adds the ``grpc-status: 0`` trailer to every answer (``--trailer``). A C server,
    so that it is never what limits the proxies (grpcio's Python server manages ~3k calls/s)."""
    root = tmp / "grpc-htdocs"
    (root / GRPC_PATH.strip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / GRPC_PATH.strip("/")).write_bytes(GRPC_REPLY)
    (tmp / "grpc-request.bin").write_bytes(GRPC_REQUEST)
    return root
