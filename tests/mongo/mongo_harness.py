"""Drive a MongoProxyFilter directly: a fake connection and read callbacks (ours to mock)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoi.network.filter import ConnectionCloseType, ConnectionEvent, FilterStatus
from envoi.runtime import Runtime
from envoi.stats import Counter, Gauge, Histogram, Store
from envoi_mongo.access_log import AccessLog
from envoi_mongo.config import FaultDelay, MongoProxyConfig
from envoi_mongo.proxy import MongoProxyFilter, MongoProxyShared


class FakeStreamInfo:
    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}


class FakeConnection:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[ConnectionEvent], Any]] = []
        self.stream_info = FakeStreamInfo()
        self.closed_with: ConnectionCloseType | None = None

    def add_connection_callbacks(self, cb: Callable[[ConnectionEvent], Any]) -> None:
        self.callbacks.append(cb)

    def close(self, close_type: ConnectionCloseType = ConnectionCloseType.FLUSH_WRITE) -> None:
        self.closed_with = close_type

    def raise_event(self, event: ConnectionEvent) -> None:
        for cb in self.callbacks:
            cb(event)


class FakeCallbacks:
    def __init__(self, upstream_host: str | None = "127.0.0.1:27017") -> None:
        self.connection = FakeConnection()
        self.upstream_host = upstream_host
        self.continued = 0

    def continue_reading(self) -> None:
        self.continued += 1


def make_runtime(static: dict[str, Any] | None = None) -> Runtime:
    """A real layered runtime: a static layer with ``static``, then an admin layer."""
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from google.protobuf import json_format

    layers = [{"name": "static", "static_layer": static or {}},
              {"name": "admin", "admin_layer": {}}]
    proto = json_format.ParseDict({"layers": layers}, bootstrap_pb2.LayeredRuntime())
    return Runtime(proto, Store().root)


class FakeServer:
    """What the filter reads from the core Server: ``draining`` and a real ``runtime``."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.draining = False
        self.runtime = runtime if runtime is not None else make_runtime()

    def runtime_modify(self, **updates: object) -> None:
        """``/runtime_modify``; keys without their ``mongo.`` prefix (``proxy_enabled=0``), dots
        as ``__`` (``fault__fixed_delay__percent=50``); ``""`` removes the override."""
        text = {"mongo." + k.replace("__", "."): str(v) for k, v in updates.items()}
        assert self.runtime.modify(text) is None


class Proxy:
    """One filter config (stats, access log) from which connections are made."""

    def __init__(self, prefix: str = "p", *, commands: tuple[str, ...] = (),
                 access_log: Path | None = None, delay: FaultDelay | None = None,
                 metadata: bool = False, runtime: Runtime | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if commands:
            kwargs["commands"] = frozenset(commands)
        self.config = MongoProxyConfig(
            stat_prefix=prefix, access_log=str(access_log or ""), delay=delay,
            emit_dynamic_metadata=metadata, **kwargs)
        self.store = Store()
        self.server = FakeServer(runtime)
        self.log = AccessLog(str(access_log)) if access_log else None
        self.shared = MongoProxyShared(self.config, self.store.root, self.server, self.log)
        self.prefix = f"mongo.{prefix}."

    def connect(self) -> Conn:
        return Conn(self)

    def stat(self, name: str) -> int:
        s = self.store.get(self.prefix + name)
        assert isinstance(s, Counter | Gauge), f"no counter/gauge {self.prefix + name}"
        return s.value

    def hist(self, name: str) -> Histogram:
        s = self.store.get(self.prefix + name)
        assert isinstance(s, Histogram), f"no histogram {self.prefix + name}"
        return s

    def names(self) -> set[str]:
        return {s.name[len(self.prefix):] for s in self.store if s.name.startswith(self.prefix)}

    def nonzero(self) -> dict[str, int]:
        out = {}
        for s in self.store:
            if s.name.startswith(self.prefix) and isinstance(s, Counter | Gauge) and s.value:
                out[s.name[len(self.prefix):]] = s.value
        return out


class Conn:
    def __init__(self, proxy: Proxy) -> None:
        self.filter = MongoProxyFilter(proxy.shared)
        self.cb = FakeCallbacks()
        self.filter.initialize_read_filter_callbacks(self.cb)  # type: ignore[arg-type]
        assert self.filter.on_new_connection() is FilterStatus.CONTINUE

    def client(self, data: bytes) -> FilterStatus:
        return self.filter.on_data(data, False)

    def server(self, data: bytes) -> FilterStatus:
        return self.filter.on_write(data, False)

    def close(self, event: ConnectionEvent = ConnectionEvent.REMOTE_CLOSE) -> None:
        self.cb.connection.raise_event(event)
