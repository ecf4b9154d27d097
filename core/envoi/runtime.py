"""Envoy's layered runtime: feature flags and numbers that change without a restart.

``layered_runtime.layers`` stack; a later layer overrides an earlier one. ``static_layer``
values come from the bootstrap (nested maps flatten to dotted keys, ``health_check:
{min_interval: 5}`` is ``health_check.min_interval``); ``admin_layer`` values are set with
``POST /runtime_modify?key=value`` (an empty value removes the override). Without
``layered_runtime`` there are no layers and ``/runtime_modify`` is refused, as in Envoy.

Filters read it at request time through ``server.runtime`` (one dict lookup):
``feature_enabled("mongo.proxy_enabled", 100)`` is true for that percentage of calls.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from envoi.config import NOT_IMPLEMENTED, ConfigError, ConfigIssue, implements
from envoi.stats import Counter, Gauge, Scope, StatsGroup

Value = str | int | float | bool | dict[str, Any]

_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}

# disk_layer and rtds_layer are not implemented.
implements("envoy.config.bootstrap.v3.LayeredRuntime", "layers")
implements("envoy.config.bootstrap.v3.RuntimeLayer", "name", "static_layer", "admin_layer")


class RuntimeStats(StatsGroup):
    admin_overrides_active: Gauge
    deprecated_feature_seen_since_process_start: Gauge
    deprecated_feature_use: Counter
    load_error: Counter
    load_success: Counter
    num_keys: Gauge
    num_layers: Gauge
    override_dir_exists: Counter
    override_dir_not_exists: Counter


@dataclass
class Layer:
    name: str
    kind: str  # "static" or "admin"
    values: dict[str, Value] = field(default_factory=dict)


def _flatten(prefix: str, data: dict[str, Any], out: dict[str, Value]) -> None:
    for key, value in data.items():
        full = f"{prefix}{key}"
        # A map with a numerator is a FractionalPercent value, not a subtree (Envoy's rule).
        if isinstance(value, dict) and "numerator" not in value:
            _flatten(full + ".", value, out)
        else:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            out[full] = value


def _parse_admin_value(text: str) -> Value:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def _render(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


class Runtime:
    def __init__(self, layered_runtime: Any, scope: Scope, path: str = "layered_runtime") -> None:
        self.stats = RuntimeStats(scope.scope("runtime"))
        self.layers: list[Layer] = []
        issues: list[ConfigIssue] = []
        for i, layer in enumerate(layered_runtime.layers if layered_runtime else ()):
            kind = layer.WhichOneof("layer_specifier")
            if kind == "static_layer":
                values: dict[str, Value] = {}
                _flatten("", json_format.MessageToDict(layer.static_layer), values)
                self.layers.append(Layer(layer.name, "static", values))
            elif kind == "admin_layer":
                self.layers.append(Layer(layer.name, "admin"))
            else:
                issues.append(ConfigIssue(f"{path}.layers[{i}].{kind}", NOT_IMPLEMENTED))
        if issues:
            raise ConfigError(issues)
        self._admin = next((lay for lay in reversed(self.layers) if lay.kind == "admin"), None)
        self._rebuild()

    def _rebuild(self) -> None:
        merged: dict[str, Value] = {}
        for layer in self.layers:
            merged.update(layer.values)
        self.snapshot = merged
        self.stats.load_success.inc()
        self.stats.num_keys.set(len(merged))
        self.stats.num_layers.set(len(self.layers))
        self.stats.admin_overrides_active.set(1 if self._admin and self._admin.values else 0)

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str) -> Value | None:
        return self.snapshot.get(key)

    def get_integer(self, key: str, default: int) -> int:
        """Envoy's getInteger: only a non-negative whole number counts; else ``default``."""
        v = self.snapshot.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return default
        return v

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.snapshot.get(key)
        return v if isinstance(v, bool) else default

    def feature_enabled(self, key: str, default_percent: int = 100) -> bool:
        """True for ``percent`` of calls: the key's value (0-100, or a FractionalPercent map),
        else ``default_percent``."""
        v = self.snapshot.get(key)
        percent: float
        if isinstance(v, dict):
            denom = _DENOMINATORS.get(str(v.get("denominator", "HUNDRED")), 100)
            percent = 100.0 * float(v.get("numerator", 0)) / denom
        else:
            # As Envoy: a value that is not a non-negative whole number means the default.
            percent = self.get_integer(key, default_percent)
        if percent >= 100:
            return True
        if percent <= 0:
            return False
        return random.random() * 100 < percent

    # -- the admin ---------------------------------------------------------------------------

    def modify(self, updates: dict[str, str]) -> str | None:
        """``/runtime_modify``: set (or with an empty value, remove) admin-layer keys. Returns
        an error message, or None."""
        if self._admin is None:
            return "No admin layer specified"
        for key, text in updates.items():
            if text == "":
                self._admin.values.pop(key, None)
            else:
                self._admin.values[key] = _parse_admin_value(text)
        self._rebuild()
        return None

    def to_json(self) -> str:
        entries: dict[str, Any] = {}
        for key in self.snapshot:
            entries[key] = {
                "layer_values": [
                    _render(lay.values[key]) if key in lay.values else "" for lay in self.layers
                ],
                "final_value": _render(self.snapshot[key]),
            }
        doc = {"layers": [lay.name for lay in self.layers], "entries": entries}
        return json.dumps(doc, indent=1) + "\n"
