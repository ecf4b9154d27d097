"""``request_mirror_policies`` at config time and its small rules: the fields envoi refuses
(Envoy acts on them), the ``-shadow`` Host, and the sampling of ``runtime_fraction``. The
shadow requests themselves are compared with Envoy's in test_mirror_oracle.py."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoi.config import ConfigError
from envoi.server import Options, Server
from envoi.stats import Store
from envoi.testing import envoy_validate
from envoi_http.router.mirror import MirrorPolicy
from envoi_http.router.shadow import shadow_host

HCM_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
           "HttpConnectionManager")
ROUTE0 = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config."
          "virtual_hosts[0].routes[0].route")
BASE: dict[str, Any] = {"static_resources": {
    "listeners": [{
        "name": "in",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM_URL, "stat_prefix": "in",
                "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}],
            }}]}]}],
    "clusters": [{"name": "web", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "web", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": 8080}}}}]}]}}]}}


@pytest.mark.parametrize("field,value", [
    ("trace_sampled", False),
    ("request_headers_mutations", [{"append": {"header": {"key": "x-m", "value": "1"}}}]),
    ("host_rewrite_literal", "other.test"),
])
def test_fields_envoi_lacks_are_refused(tmp_path: Path, field: str, value: Any) -> None:
    cfg = copy.deepcopy(BASE)
    route = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    route["request_mirror_policies"] = [{"cluster": "web", field: value}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert envoy_validate(path)[0]  # Envoy acts on it
    with pytest.raises(ConfigError) as exc:
        Server(Options(config_path=str(path))).load()
    assert [str(e) for e in exc.value.errors] == [
        f"{ROUTE0}.request_mirror_policies[0].{field}: not implemented by envoi"]


@pytest.mark.parametrize("host,shadow", [
    (b"svc", b"svc-shadow"), (b"svc.test:8080", b"svc.test-shadow:8080"),
    (b"10.0.0.1:80", b"10.0.0.1-shadow:80"), (b"[::1]:80", b"[::1]-shadow:80"),
    (b"[::1]", b"[::1]-shadow"),
])
def test_shadow_host(host: bytes, shadow: bytes) -> None:
    assert shadow_host(host) == shadow


class _Runtime:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str) -> Any:
        return self.values.get(key)


def _policy(num: int, den: int, key: str = "", runtime: Any = None) -> MirrorPolicy:
    return MirrorPolicy(cluster="c", cluster_header=None, numerator=num, denominator=den,
                        runtime_key=key, runtime=runtime, suffix=True,
                        async_rq_total=Store().root.counter("x"))


def _share(p: MirrorPolicy, n: int = 20_000) -> float:
    random.seed(7)
    return sum(p.sampled() for _ in range(n)) / n


def test_sampling_default_and_runtime_values() -> None:
    assert _share(_policy(100, 100)) == 1.0
    assert _share(_policy(0, 100)) == 0.0
    assert 0.23 < _share(_policy(25, 100)) < 0.27
    assert 0.045 < _share(_policy(500, 10_000)) < 0.055
    rt = _Runtime({"k.int": 10, "k.frac": {"numerator": 50, "denominator": "TEN_THOUSAND"},
                   "k.big": 1000, "k.text": "half"})
    # A whole number is a numerator over the default's denominator; over 100: always.
    assert 0.08 < _share(_policy(100, 100, "k.int", rt)) < 0.12
    assert 0.003 < _share(_policy(100, 100, "k.frac", rt)) < 0.007
    assert _share(_policy(0, 100, "k.big", rt)) == 1.0
    # Not a number: the default.
    assert _share(_policy(0, 100, "k.text", rt)) == 0.0
    assert _share(_policy(100, 100, "k.missing", rt)) == 1.0
