"""Tracing config on the HTTP path: what loads, and what is refused with its path (nothing is
accepted that envoi would not act on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from envoi.config import ConfigError
from envoi.server import Options, Server

F0 = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
OTEL = {"name": "envoy.tracers.opentelemetry", "typed_config": {
    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
    "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}}}}


def config(tracing: dict[str, Any] | None, route: dict[str, Any] | None = None,
           router: dict[str, Any] | None = None, **listener: Any) -> str:
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ing",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            **(router or {})}}],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "up"}, **(route or {})}]}]},
    }
    if tracing is not None:
        hcm["tracing"] = tracing

    def cluster(name: str) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}

    return yaml.safe_dump({"static_resources": {
        "listeners": [{"name": "l", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
            **listener}],
        "clusters": [cluster("up"), cluster("otlp")]}})


def load(tmp_path: Path, text: str) -> Server:
    path = tmp_path / "envoi.yaml"
    path.write_text(text)
    server = Server(Options(config_path=str(path), mode="validate"))
    server.load()
    return server


def issues(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [str(i) for i in info.value.errors]


def test_a_full_tracing_config_loads(tmp_path: Path) -> None:
    load(tmp_path, config(
        {"provider": OTEL, "random_sampling": {"value": 1}, "client_sampling": {"value": 50},
         "overall_sampling": {"value": 99.5}, "max_path_tag_length": 64,
         "spawn_upstream_span": True, "verbose": False,
         "custom_tags": [{"tag": "a", "literal": {"value": "v"}},
                         {"tag": "b", "environment": {"name": "HOME"}},
                         {"tag": "c", "request_header": {"name": "x-c"}}]},
        route={"decorator": {"operation": "op", "propagate": False},
               "tracing": {"random_sampling": {"numerator": 5, "denominator": "TEN_THOUSAND"},
                           "custom_tags": [{"tag": "r", "literal": {"value": "1"}}]}},
        router={"start_child_span": True}, traffic_direction="OUTBOUND"))


@pytest.mark.parametrize(("tracing", "path", "says"), [
    ({}, ".tracing.provider", "required"),
    ({"provider": OTEL, "verbose": True}, ".tracing.verbose", "not implemented"),
    ({"provider": OTEL, "custom_tags": [{"tag": "m", "metadata": {"kind": {"request": {}}}}]},
     ".tracing.custom_tags[0]", "metadata"),
    ({"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": "nope"}}}}},
     ".tracing.provider.typed_config.grpc_service.envoy_grpc.cluster_name", "unknown cluster"),
    ({"provider": {"name": "envoy.tracers.datadog", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig",
        "collector_cluster": "otlp", "service_name": "s"}}},
     ".tracing.provider", "DatadogConfig"),
])
def test_refused_with_its_path(tmp_path: Path, tracing: dict[str, Any], path: str,
                               says: str) -> None:
    found = issues(tmp_path, config(tracing))
    assert any(line.startswith(F0 + path + ":") and says in line for line in found), found
