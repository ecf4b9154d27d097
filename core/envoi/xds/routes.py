"""RDS: route configurations by name, from a file or a control plane, current in every process.

An HCM with ``rds`` asks its factory context for the :class:`RouteConfigProvider` of its
``route_config_name`` and ``config_source`` (one provider per pair, shared, as Envoy shares its
``RdsRouteConfigSubscription``) and attaches itself: each route configuration that arrives is
compiled by every attached HCM (its own ``build``) in every process, and handed over in every
process at once (:mod:`envoi.workers.updates`), so new requests use it at once. The main
process's :class:`~envoi.xds.manager.XdsManager` runs the subscriptions of the providers that
listeners use; only it counts their stats (``http.<stat_prefix>.rds.<name>.*``).

A listener built while one of its providers holds no configuration yet *warms* (see
:mod:`envoi.xds.listeners`) until the configuration arrives or the source's
``initial_fetch_timeout`` passes (then it serves with no routes: 404, as Envoy).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.stats import Counter, Gauge, Scope
from envoi.workers.updates import UpdateRejected, WorkerUpdate, register_update
from envoi.xds.resources import ROUTE, SubscriptionStats, message_class
from envoi.xds.sources import Source, config_source

_RDS = "envoy.extensions.filters.network.http_connection_manager.v3.Rds"
implements(_RDS, "config_source", "route_config_name")

#: (route_config_name, source): a provider's identity, the same in every process.
Key = tuple[str, Source]
L = TypeVar("L")


class RdsStats(SubscriptionStats):
    """Envoy's ``http.<stat_prefix>.rds.<route_config_name>.*``."""

    update_empty: Counter
    config_reload: Counter
    config_reload_time_ms: Gauge


@dataclass
class _Target:
    owner: weakref.ref[Any]
    build: Callable[[Any, str], Any]
    use: Callable[[Any, Any], None]


class RouteConfigProvider:
    """One route configuration by name and source (``envoi.context.RouteConfigProvider``)."""

    def __init__(self, key: Key, scope: Scope) -> None:
        self.key = key
        self.source = key[1]
        self.stats = RdsStats(scope)
        #: The RouteConfiguration in force (None before the first one), its version and when.
        self.message: Any = None
        self.version_info = ""
        self.last_updated = 0.0
        #: A configuration arrived, or initial_fetch_timeout passed: listeners may serve.
        self.ready = False
        self._targets: list[_Target] = []

    @property
    def name(self) -> str:
        return self.key[0]

    @property
    def path(self) -> str:
        return f"route_config '{self.name}'"

    def attach(self, owner: object, build: Callable[[Any, str], Any],
               use: Callable[[Any, Any], None]) -> None:
        if self.message is not None:
            use(owner, build(self.message, self.path))
        self._targets = [t for t in self._targets if t.owner() is not None]
        self._targets.append(_Target(weakref.ref(owner), build, use))

    def prepare(self, message: Any) -> list[tuple[_Target, Any]]:
        """Compile ``message`` for every attached HCM; raises ConfigError."""
        return [(t, t.build(message, self.path)) for t in self._targets
                if t.owner() is not None]

    def commit(self, message: Any, built: list[tuple[_Target, Any]], version: str,
               when: float) -> None:
        self.message, self.version_info, self.last_updated = message, version, when
        self.ready = True
        for target, table in built:
            owner = target.owner()
            if owner is not None:
                target.use(owner, table)


class RouteConfigProviders:
    """Every process's providers (``server.route_configs``), and which listener uses which."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.providers: dict[Key, RouteConfigProvider] = {}
        #: The providers each listener's HCMs attached to (listeners are forgotten with it).
        self.used_by: weakref.WeakKeyDictionary[Any, tuple[RouteConfigProvider, ...]] = \
            weakref.WeakKeyDictionary()
        self._collecting: list[RouteConfigProvider] | None = None

    def get(self, rds: Any, path: str, stat_prefix: str) -> RouteConfigProvider:
        issues: list[ConfigIssue] = []
        name = rds.route_config_name
        if not name:
            issues.append(ConfigIssue(path + ".route_config_name", "required"))
        src: Source | None = None
        if not rds.HasField("config_source"):
            issues.append(ConfigIssue(path + ".config_source", "required"))
        else:
            try:
                src = config_source(rds.config_source, path + ".config_source")
            except ConfigError as exc:
                issues += exc.errors
        bootstrap = self.server.bootstrap
        if src is not None and src.kind == "ads" and not (
                bootstrap is not None and bootstrap.dynamic_resources.HasField("ads_config")):
            issues.append(ConfigIssue(path + ".config_source.ads",
                                      "ads needs dynamic_resources.ads_config"))
        if src is not None and src.grpc is not None and \
                self.server.cluster_manager.get(src.grpc.cluster_name) is None:
            issues.append(ConfigIssue(path + ".config_source.api_config_source", (
                f"unknown gRPC cluster '{src.grpc.cluster_name}' (the control plane must be "
                "a static cluster)")))
        if issues or src is None:
            raise ConfigError(issues)
        key = (name, src)
        provider = self.providers.get(key)
        if provider is None:
            scope = self.server.stats.root.scope(f"http.{stat_prefix}.rds.{name}")
            provider = self.providers[key] = RouteConfigProvider(key, scope)
        if self._collecting is not None:
            self._collecting.append(provider)
        return provider

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[RouteConfigProvider]]:
        """The providers asked for while building (one listener)."""
        outer, self._collecting = self._collecting, []
        try:
            yield self._collecting
        finally:
            self._collecting = outer

    def build_listener(self, build: Callable[[], L]) -> L:
        """``build()`` a listener and note the providers its HCMs use."""
        with self.collecting() as used:
            lst = build()
        if used:
            self.used_by[lst] = tuple(dict.fromkeys(used))
        return lst

    def ready(self, lst: Any) -> bool:
        return all(p.ready for p in self.used_by.get(lst, ()))

    def in_use(self, listeners: Iterator[Any]) -> dict[Key, RouteConfigProvider]:
        return {p.key: p for lst in listeners for p in self.used_by.get(lst, ())}


# -- updates every process applies ------------------------------------------------------------


def routes_payload(provider: RouteConfigProvider, message: Any, version: str,
                   when: float) -> dict[str, Any]:
    return {"key": provider.key, "message": message.SerializeToString(), "version": version,
            "time": when}


def _routes_prepare(server: Any, payload: dict[str, Any]) -> Any:
    provider = server.route_configs.providers.get(payload["key"])
    if provider is None:  # no HCM of this process uses it
        return None
    msg = message_class(ROUTE).FromString(payload["message"])
    try:
        return provider, msg, provider.prepare(msg), payload["version"], payload["time"]
    except ConfigError as exc:
        raise UpdateRejected(str(exc)) from None


def _routes_commit(server: Any, prepared: Any) -> None:
    if prepared is not None:
        provider, msg, built, version, when = prepared
        provider.commit(msg, built, version, when)
    server.xds.activate_ready_listeners()


ROUTES_UPDATE = WorkerUpdate("xds_routes", _routes_prepare, _routes_commit)
register_update(ROUTES_UPDATE)


def _ready_prepare(server: Any, keys: list[Key]) -> list[Key]:
    return list(keys)


def _ready_commit(server: Any, keys: list[Key]) -> None:
    """``initial_fetch_timeout`` passed without a configuration: serve without routes."""
    for key in keys:
        provider = server.route_configs.providers.get(key)
        if provider is not None:
            provider.ready = True
    server.xds.activate_ready_listeners()


READY_UPDATE = WorkerUpdate("xds_routes_ready", _ready_prepare, _ready_commit)
register_update(READY_UPDATE)


def _forget_commit(server: Any, keys: list[Key]) -> None:
    """Providers no listener uses any more (the main process stopped their subscriptions)."""
    for key in keys:
        server.route_configs.providers.pop(key, None)


FORGET_UPDATE = WorkerUpdate("xds_routes_forget", _ready_prepare, _forget_commit)
register_update(FORGET_UPDATE)
