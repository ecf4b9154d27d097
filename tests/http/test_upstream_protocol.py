"""A cluster's upstream HTTP protocol from its config: every form Envoy 1.39.3 accepts, and an
error naming the path for every field envoi does not implement."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoi_http.codec.h2_options import Http2Options
from envoi_http.router.upstream_protocol import HTTP1, choose, from_cluster
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401  (registers the type)
from google.protobuf import json_format

TYPED = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
AT = "type.googleapis.com/" + TYPED


def cluster(extra: str) -> Any:
    doc = yaml.safe_load("name: c\n" + extra)
    return json_format.ParseDict(doc, cluster_pb2.Cluster())


def typed(body: str) -> str:
    return (f"typed_extension_protocol_options:\n  {TYPED}:\n    '@type': {AT}\n" +
            "".join(f"    {line}\n" for line in body.strip().splitlines()))


def test_default_is_http1() -> None:
    assert from_cluster(cluster(""), "c") == (HTTP1, [])


def test_explicit_http2_with_options() -> None:
    proto, issues = from_cluster(cluster(typed("""
explicit_http_config:
  http2_protocol_options: {max_concurrent_streams: 7, initial_stream_window_size: 65536}
common_http_protocol_options: {max_requests_per_connection: 3}
""")), "clusters[0]")
    assert issues == []
    assert proto.kind == "http2" and proto.max_requests_per_connection == 3
    assert proto.http2 == Http2Options(max_concurrent_streams=7,
                                       initial_stream_window_size=65536)


def test_explicit_http1() -> None:
    proto, issues = from_cluster(cluster(typed("""
explicit_http_config: {http_protocol_options: {enable_trailers: true}}
""")), "c")
    assert issues == [] and proto.kind == "http1" and proto.http1_enable_trailers


def test_use_downstream_and_choose() -> None:
    proto, issues = from_cluster(cluster(typed("use_downstream_protocol_config: {}")), "c")
    assert issues == [] and proto.kind == "downstream"
    assert choose(proto, downstream_http2=True) == "http2"
    assert choose(proto, downstream_http2=False) == "http1"


def test_auto_config_needs_tls() -> None:
    _, issues = from_cluster(cluster(typed("auto_config: {http2_protocol_options: {}}")), "c")
    assert issues == [(f"c.typed_extension_protocol_options[{TYPED}].auto_config",
                       "ALPN configured for a cluster without a TLS transport_socket")]


def test_deprecated_cluster_field() -> None:
    proto, issues = from_cluster(cluster("http2_protocol_options: {}"), "c")
    assert issues == [] and proto.kind == "http2"


@pytest.mark.parametrize(("body", "field"), [
    ("explicit_http_config: {http2_protocol_options: {allow_metadata: true}}",
     ".explicit_http_config.http2_protocol_options.allow_metadata"),
    ("explicit_http_config: {http2_protocol_options: {connection_keepalive: {interval: 1s, "
     "timeout: 1s, connection_idle_interval: 1s}}}",
     ".explicit_http_config.http2_protocol_options.connection_keepalive."
     "connection_idle_interval"),
    ("explicit_http_config: {http3_protocol_options: {}}",
     ".explicit_http_config.http3_protocol_options"),
    ("explicit_http_config: {http_protocol_options: {allow_absolute_url: true}}",
     ".explicit_http_config.http_protocol_options.allow_absolute_url"),
    ("common_http_protocol_options: {idle_timeout: 1s}\nexplicit_http_config: "
     "{http2_protocol_options: {}}", ".common_http_protocol_options.idle_timeout"),
    ("explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 0}}",
     ".explicit_http_config.http2_protocol_options.max_concurrent_streams"),
])
def test_unimplemented_fields_are_errors(body: str, field: str) -> None:
    _, issues = from_cluster(cluster(typed(body)), "c")
    assert [p for p, _ in issues] == [f"c.typed_extension_protocol_options[{TYPED}]{field}"]
