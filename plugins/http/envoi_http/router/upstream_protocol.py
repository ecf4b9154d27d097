"""Which HTTP a cluster speaks upstream: its ``envoy.extensions.upstreams.http.v3.
HttpProtocolOptions`` (in ``typed_extension_protocol_options``), or the deprecated cluster-level
fields Envoy 1.39.3 still accepts (``http2_protocol_options``, ``protocol_selection``, ...).

- ``explicit_http_config``: ``http_protocol_options`` (HTTP/1.1) or ``http2_protocol_options``;
- ``use_downstream_protocol_config``: the downstream request's protocol picks the upstream's
  (HTTP/1.1 or HTTP/2, with the options given for each);
- ``auto_config``: HTTP/2 or HTTP/1.1 by ALPN, which needs a TLS ``transport_socket``, as Envoy
  requires;
- no options at all: HTTP/1.1.

``common_http_protocol_options.max_requests_per_connection``, ``.max_headers_count`` and
``.max_stream_duration`` (each upstream request's limit, the router's timer) apply to both; any
other field that is set is a config error naming its path (nothing is silently ignored). HTTP/3
is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from envoi.config import implements

from envoi_http.codec import h2_options
from envoi_http.codec.h2_options import DEFAULT_OPTIONS, Http2Options
from envoi_http.codec.h2_options import from_proto as http2_from_proto

TYPE_NAME = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
Kind = Literal["http1", "http2", "downstream", "auto"]
Issue = tuple[str, str]

_COMMON_OK = ("max_requests_per_connection", "max_headers_count", "max_stream_duration")
_HTTP1_OK = ("enable_trailers",)

# Declarations for envoi.config.implemented, from the same lists the checks here use. The
# core/HTTP/1 option messages are shared with the HCM: each consumer refuses what it does not
# act on in its own place (here, in _common and _http1).
implements("envoy.config.cluster.v3.Cluster",
           "typed_extension_protocol_options", "common_http_protocol_options",
           "http_protocol_options", "http2_protocol_options", "protocol_selection")
implements(TYPE_NAME, "common_http_protocol_options", "explicit_http_config",
           "use_downstream_protocol_config", "auto_config")
for _config in ("ExplicitHttpConfig", "UseDownstreamHttpConfig", "AutoHttpConfig"):
    implements(f"{TYPE_NAME}.{_config}", "http_protocol_options", "http2_protocol_options")
implements("envoy.config.core.v3.HttpProtocolOptions", *_COMMON_OK)
implements("envoy.config.core.v3.Http1ProtocolOptions", *_HTTP1_OK)
implements("envoy.config.core.v3.Http2ProtocolOptions", *h2_options.implemented_fields())
implements("envoy.config.core.v3.KeepaliveSettings", *h2_options.KEEPALIVE_FIELDS)


@dataclass(frozen=True)
class UpstreamProtocol:
    """What the router needs to pick and build a pool for a cluster."""

    kind: Kind = "http1"
    http2: Http2Options = DEFAULT_OPTIONS
    http1_enable_trailers: bool = False
    max_requests_per_connection: int = 0
    max_headers_count: int = 100
    # common_http_protocol_options.max_stream_duration in seconds, whole milliseconds as Envoy
    # reads it (0: none): an upstream request's limit, from its connection on (router/filter.py)
    max_stream_duration: float = 0.0
    # with ``use_downstream_protocol_config``/``auto_config``: which protocols were configured
    allowed: tuple[str, ...] = field(default=("http1",))


HTTP1 = UpstreamProtocol()


def _http1(msg: Any, path: str, issues: list[Issue]) -> bool:
    trailers = False
    for f, value in msg.ListFields():
        if f.name in _HTTP1_OK:
            trailers = bool(value)
        else:
            issues.append((f"{path}.{f.name}", "is not implemented by envoi"))
    return trailers


def _common(msg: Any, path: str, issues: list[Issue], out: dict[str, Any]) -> None:
    for f, value in msg.ListFields():
        if f.name == "max_stream_duration":
            out[f.name] = (int(value.seconds) * 1000 + int(value.nanos) // 1_000_000) / 1000
            if out[f.name] < 0:
                issues.append((f"{path}.{f.name}", "must not be negative"))
        elif f.name in _COMMON_OK:
            out[f.name] = int(value.value)
        else:
            issues.append((f"{path}.{f.name}", "is not implemented by envoi"))


def _versions(msg: Any, path: str, issues: list[Issue], out: dict[str, Any]) -> list[str]:
    """The ``http_protocol_options``/``http2_protocol_options``/``http3_protocol_options`` of
    one of the three configs; returns which were set."""
    got = []
    if msg.HasField("http_protocol_options"):
        got.append("http1")
        out["http1_enable_trailers"] = _http1(msg.http_protocol_options,
                                              path + ".http_protocol_options", issues)
    if msg.HasField("http2_protocol_options"):
        got.append("http2")
        opts, more = http2_from_proto(msg.http2_protocol_options, path + ".http2_protocol_options")
        issues.extend(more)
        out["http2"] = opts
    if msg.HasField("http3_protocol_options"):
        issues.append((path + ".http3_protocol_options", "HTTP/3 is not implemented by envoi"))
    return got


def from_cluster(cluster: Any, path: str) -> tuple[UpstreamProtocol, list[Issue]]:
    """``(protocol, issues)`` for an ``envoy.config.cluster.v3.Cluster``; ``path`` is the
    cluster's config path (``static_resources.clusters[0]``)."""
    issues: list[Issue] = []
    out: dict[str, Any] = {}
    key = TYPE_NAME
    opts_map = cluster.typed_extension_protocol_options
    for name in opts_map:
        if name != key:
            issues.append((f"{path}.typed_extension_protocol_options.{name}",
                           "no HTTP protocol options extension of that name "
                           f"(envoi knows {key})"))
    if key in opts_map:
        from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

        msg = http_protocol_options_pb2.HttpProtocolOptions()
        any_msg = opts_map[key]
        base = f"{path}.typed_extension_protocol_options[{key}]"
        if not any_msg.Unpack(msg):
            issues.append((base, f"expected @type {key}, got {any_msg.type_url}"))
            return HTTP1, issues
        kind = _from_options(msg, base, issues, out)
        if kind == "auto" and not cluster.HasField("transport_socket"):
            issues.append((base + ".auto_config",
                           "ALPN configured for a cluster without a TLS transport_socket"))
    else:
        kind = _deprecated(cluster, path, issues, out)
    return UpstreamProtocol(kind=kind, **out), issues


def _from_options(msg: Any, base: str, issues: list[Issue], out: dict[str, Any]) -> Kind:
    for f, _ in msg.ListFields():
        if f.name not in ("common_http_protocol_options", "explicit_http_config",
                          "use_downstream_protocol_config", "auto_config"):
            issues.append((f"{base}.{f.name}", "is not implemented by envoi"))
    if msg.HasField("common_http_protocol_options"):
        _common(msg.common_http_protocol_options, base + ".common_http_protocol_options",
                issues, out)
    which = msg.WhichOneof("upstream_protocol_options")
    if which == "explicit_http_config":
        got = _versions(msg.explicit_http_config, base + ".explicit_http_config", issues, out)
        return "http2" if "http2" in got else "http1"
    if which in ("use_downstream_protocol_config", "auto_config"):
        sub = getattr(msg, which)
        got = _versions(sub, f"{base}.{which}", issues, out)
        if which == "auto_config" and sub.HasField("alternate_protocols_cache_options"):
            issues.append((f"{base}.auto_config.alternate_protocols_cache_options",
                           "is not implemented by envoi"))
        out["allowed"] = ("http1", "http2")
        return "downstream" if which == "use_downstream_protocol_config" else "auto"
    issues.append((base, "one of explicit_http_config, use_downstream_protocol_config or "
                         "auto_config is required"))
    return "http1"


def _deprecated(cluster: Any, path: str, issues: list[Issue], out: dict[str, Any]) -> Kind:
    """The cluster-level fields from before ``typed_extension_protocol_options``."""
    kind: Kind = "http1"
    if cluster.HasField("common_http_protocol_options"):
        _common(cluster.common_http_protocol_options, path + ".common_http_protocol_options",
                issues, out)
    if cluster.HasField("http_protocol_options"):
        out["http1_enable_trailers"] = _http1(cluster.http_protocol_options,
                                              path + ".http_protocol_options", issues)
    if cluster.HasField("http2_protocol_options"):
        opts, more = http2_from_proto(cluster.http2_protocol_options,
                                      path + ".http2_protocol_options")
        issues.extend(more)
        out["http2"] = opts
        kind = "http2"
    if cluster.protocol_selection == 1:  # USE_DOWNSTREAM_PROTOCOL
        out["allowed"] = ("http1", "http2")
        kind = "downstream"
    if cluster.HasField("upstream_http_protocol_options"):
        issues.append((path + ".upstream_http_protocol_options", "is not implemented by envoi"))
    return kind


def choose(protocol: UpstreamProtocol, downstream_http2: bool, alpn: str = "") -> str:
    """``"http1"`` or ``"http2"`` for one request: explicit configs say it, the downstream's
    protocol decides with ``use_downstream_protocol_config`` (when that protocol was
    configured), the negotiated ALPN with ``auto_config``."""
    kind = protocol.kind
    if kind == "http1" or kind == "http2":
        return kind
    if kind == "downstream":
        return "http2" if downstream_http2 and "http2" in protocol.allowed else "http1"
    return "http2" if alpn == "h2" else "http1"
