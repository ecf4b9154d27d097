"""The layered runtime: layering, flattening, feature flags, admin overrides."""

from __future__ import annotations

import json

import pytest
from envoi.config import ConfigError
from envoi.runtime import Runtime
from envoi.stats import Store
from google.protobuf import json_format


def runtime(layers: list[dict[str, object]] | None) -> tuple[Runtime, Store]:
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    store = Store()
    proto = (json_format.ParseDict({"layers": layers}, bootstrap_pb2.LayeredRuntime())
             if layers is not None else None)
    return Runtime(proto, store.root), store


LAYERS = [
    {"name": "static_layer_0", "static_layer": {
        "health_check": {"min_interval": 5}, "mongo.proxy_enabled": 0, "flag": True,
        "fr": {"numerator": 20, "denominator": "HUNDRED"}}},
    {"name": "admin_layer_0", "admin_layer": {}},
]


def test_layers_flatten_and_override() -> None:
    rt, store = runtime(LAYERS)
    assert rt.get_integer("health_check.min_interval", 1) == 5
    assert rt.get_bool("flag", False) is True
    assert not rt.feature_enabled("mongo.proxy_enabled", 100)
    assert rt.feature_enabled("absent", 100)
    assert rt.modify({"mongo.proxy_enabled": "100", "newkey": "abc"}) is None
    assert rt.feature_enabled("mongo.proxy_enabled", 0)
    assert rt.get("newkey") == "abc"
    assert store.gauge("runtime.admin_overrides_active").value == 1
    assert store.gauge("runtime.num_keys").value == 5
    assert store.gauge("runtime.num_layers").value == 2
    assert rt.modify({"newkey": ""}) is None  # an empty value removes the override
    assert rt.get("newkey") is None


def test_runtime_json_matches_envoys_shape() -> None:
    rt, _ = runtime(LAYERS)
    rt.modify({"mongo.proxy_enabled": "100"})
    doc = json.loads(rt.to_json())
    # What Envoy 1.39.3 printed for the same layers and override.
    assert doc["layers"] == ["static_layer_0", "admin_layer_0"]
    assert doc["entries"]["health_check.min_interval"] == {"layer_values": ["5", ""],
                                                           "final_value": "5"}
    assert doc["entries"]["mongo.proxy_enabled"] == {"layer_values": ["0", "100"],
                                                     "final_value": "100"}
    assert doc["entries"]["flag"]["final_value"] == "true"


def test_fractional_percent_values() -> None:
    rt, _ = runtime([{"name": "s", "static_layer": {
        "never": {"numerator": 0}, "always": {"numerator": 1, "denominator": "HUNDRED"},
        "big": {"numerator": 1000000, "denominator": "MILLION"}}}])
    assert not any(rt.feature_enabled("never", 100) for _ in range(50))
    assert all(rt.feature_enabled("big", 0) for _ in range(50))
    hits = sum(rt.feature_enabled("always", 100) for _ in range(5000))
    assert 10 < hits < 120  # about 1 %


def test_without_layered_runtime_there_is_no_admin_layer() -> None:
    rt, store = runtime(None)
    assert rt.modify({"a": "1"}) == "No admin layer specified"
    assert json.loads(rt.to_json()) == {"layers": [], "entries": {}}
    assert store.gauge("runtime.num_layers").value == 0


def test_unsupported_layer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"layered_runtime\.layers\[0\]\.disk_layer"):
        runtime([{"name": "d", "disk_layer": {"symlink_root": "/srv"}}])


def test_only_whole_non_negative_numbers_count_as_envoy() -> None:
    rt, _ = runtime([{"name": "s", "static_layer": {"half": 50.5, "neg": -3, "whole": 7.0,
                                                     "zero": 0}}])
    assert rt.get_integer("half", 9) == 9
    assert rt.get_integer("neg", 9) == 9
    assert rt.get_integer("whole", 9) == 7
    assert rt.feature_enabled("neg", 100) is True  # default used
    assert rt.feature_enabled("zero", 100) is False
