"""The proxy config the gRPC end-to-end tests give the real Envoy and envoi (the shape of
``reference/envoy-configs/grpc.yaml``: ``grpc_web`` + ``grpc_stats`` + router, ``codec_type:
AUTO``, an h2c cluster), and a raw HTTP/2 client (the ``h2`` library on a socket) for what grpcio
hides: the ``:status``, the headers of a trailers-only answer, the exact trailers."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from http_peers import hcm_listener

_WEB = """\
          - name: envoy.filters.http.grpc_web
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
"""
_H2_OPTIONS = """\
          http2_protocol_options:
            initial_stream_window_size: 65536
            initial_connection_window_size: 1048576
            max_concurrent_streams: 100
"""
_STATS = """\
          - name: envoy.filters.http.grpc_stats
            typed_config:
              "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.\\
                FilterConfig"
              stats_for_all_methods: true
              enable_upstream_stats: true
"""


def grpc_yaml(port: int, admin: int, upstream: int, *, listener_tls: str = "",
              route_extra: str = "", cluster_extra: str = "", stats_first: bool = False,
              h2_options: bool = True) -> str:
    """Calls to ``/envoi.e2e.Echo/...`` go to the cluster ``greeter`` (h2c to ``upstream``);
    any other path has no route (a 404 local reply). ``listener_tls``: the filter chain's
    ``transport_socket`` (indented 6); ``route_extra``: more fields of the route action
    (indented 18) or more routes (indented 14); ``cluster_extra``: more of the cluster
    (indented 4); ``stats_first``: ``grpc_stats`` before ``grpc_web`` in the chain (it then
    sees grpc-web calls as they came);
    ``h2_options``: the downstream ``http2_protocol_options`` of ``grpc.yaml``."""
    filters = _STATS + _WEB if stats_first else _WEB + _STATS
    h2 = _H2_OPTIONS if h2_options else ""
    return hcm_listener("grpc_in").format(admin=admin, port=port) + f"""\
          codec_type: AUTO
          stat_prefix: grpc_in
{h2}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: grpc
              domains: ["*"]
              routes:
              - match: {{prefix: "/envoi.e2e.Echo/"}}
                route:
                  cluster: greeter
                  timeout: 0s
{route_extra}
{listener_tls}  clusters:
  - name: greeter
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: greeter
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
{cluster_extra}"""


@dataclass
class RawAnswer:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None  # an RST_STREAM error code


def raw_call(port: int, path: str, body: bytes, *, headers: dict[str, str] | None = None,
             tls_ca: str | None = None, timeout: float = 15.0) -> RawAnswer:
    """One gRPC-shaped POST over h2c (or TLS with ALPN h2), read to the end of its stream."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls_ca is not None:
        ctx = ssl.create_default_context(cafile=tls_ca)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname="a.local")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    hdrs = {":method": "POST", ":scheme": "https" if tls_ca else "http", ":path": path,
            ":authority": f"127.0.0.1:{port}", "content-type": "application/grpc",
            "te": "trailers", **(headers or {})}
    conn.send_headers(1, list(hdrs.items()))
    conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    out = RawAnswer()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed before the stream ended")
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    out.headers = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.TrailersReceived):
                    out.trailers = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.DataReceived):
                    out.data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.StreamReset):
                    out.reset = int(ev.error_code)
                    return out
                if isinstance(ev, h2.events.StreamEnded):
                    return out
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
