"""mongo_proxy config: Envoy's proto turned into the frozen runtime config, and the factory."""

from __future__ import annotations

import pytest
from envoi.network.filter import Filter
from envoi.stats import Store
from envoi.tap import TapHub, TapPoint
from envoi_mongo.config import DEFAULT_COMMANDS, FaultDelay, from_proto
from envoi_mongo.plugin import MongoProxyFactory, envoi_network_filters
from envoy.extensions.filters.network.mongo_proxy.v3.mongo_proxy_pb2 import MongoProxy
from google.protobuf import json_format


def proto(**fields: object) -> MongoProxy:
    return json_format.ParseDict(fields, MongoProxy())


def test_defaults_are_envoys() -> None:
    cfg = from_proto(proto(stat_prefix="x"))
    assert cfg.commands == frozenset(DEFAULT_COMMANDS) == {"delete", "insert", "update"}
    assert cfg.access_log == "" and cfg.delay is None and not cfg.emit_dynamic_metadata


def test_fields() -> None:
    cfg = from_proto(proto(stat_prefix="x", access_log="/tmp/m.log", emit_dynamic_metadata=True,
                           commands=["find", "hello"],
                           delay={"fixed_delay": "0.2s",
                                  "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}}))
    assert cfg.commands == {"find", "hello"}
    assert cfg.delay == FaultDelay(200, 50, 10_000)
    assert cfg.emit_dynamic_metadata and cfg.access_log == "/tmp/m.log"


@pytest.mark.parametrize("fields,field", [
    ({}, "stat_prefix"),
    ({"stat_prefix": "x", "delay": {"percentage": {"numerator": 1}}}, "delay.fixed_delay"),
    ({"stat_prefix": "x", "delay": {"header_delay": {}}}, "delay.header_delay"),
])
def test_errors_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        from_proto(proto(**fields))


class _Builder:
    def __init__(self) -> None:
        self.filters: list[Filter] = []

    def add_filter(self, f: Filter) -> None:
        self.filters.append(f)


class _Ctx:
    def __init__(self) -> None:
        self.stats = Store()
        self.scope = self.stats.root
        self.server = None
        self.tap_hub = TapHub.create(self.stats.root)

    def tap_point(self, name: str) -> TapPoint:
        return self.tap_hub.point("test", name)


def test_factory_registers_and_builds_filters() -> None:
    (factory,) = envoi_network_filters()
    assert isinstance(factory, MongoProxyFactory)
    assert factory.name == "envoy.filters.network.mongo_proxy"
    assert factory.type_urls == ("envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",)
    ctx = _Ctx()
    cb = factory.create_filter_factory(proto(stat_prefix="edge"), ctx)  # type: ignore[arg-type]
    b1, b2 = _Builder(), _Builder()
    cb(b1)  # type: ignore[arg-type]
    cb(b2)  # type: ignore[arg-type]
    assert len(b1.filters) == 1 and b1.filters[0] is not b2.filters[0]
    names = {s.name for s in ctx.stats}
    assert "mongo.edge.decoding_error" in names and "mongo.edge.op_query_active" in names
