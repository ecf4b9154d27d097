"""What a plugin sees of the server: the contexts handed to factories and lifecycle hooks.

These are Protocols (Envoy's ``ServerFactoryContext`` / ``FactoryContext``), so plugins depend on
what they may use, never on the core's classes behind them:

* :class:`ServerContext` -- the lifecycle hooks' ``server`` argument, and the part of every factory
  context that lives as long as the server: runtime, the drain decision, the health-check-failed
  state, the cluster manager, the stats store, the plugins' command-line options, the node.
* :class:`FactoryContext` -- what a factory's ``create_*`` method gets at config time: the above
  plus the config path of the entry being built (for error messages), the listener, the stats
  scope and stat prefix, and the means to build nested extensions and access logs.

A filter may keep its factory context and read the live values (``draining``,
``healthcheck_failed``, ``runtime``) per event; they cost an attribute read.
``envoi.testing.factory_context()`` makes one without a server, for unit tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from envoi.runtime import Value
    from envoi.stats import Scope, Store
    from envoi.stream_info import AccessLogger, Formatter, OperatorFactory
    from envoi.tap import TapPoint
    from envoi.upstream.cluster import Cluster

F = TypeVar("F")  # an ExtensionFactory subclass (envoi.extensions imports this module)
T = TypeVar("T")


class Runtime(Protocol):
    """Envoy's runtime (``layered_runtime``): keys read at the moment a decision is made."""

    def get(self, key: str) -> Value | None: ...
    def get_integer(self, key: str, default: int) -> int: ...
    def get_bool(self, key: str, default: bool) -> bool: ...
    def feature_enabled(self, key: str, default_percent: int = 100) -> bool:
        """True in ``key``'s percentage of calls (``default_percent`` when the key is unset)."""


class ClusterManager(Protocol):
    """The upstream clusters by name."""

    def get(self, name: str) -> Cluster | None: ...
    def is_configured(self, name: str) -> bool:
        """A cluster of this name is in the config, built or refused with its own config error
        (a check naming it must not add "unknown cluster" to that error)."""
    @property
    def clusters(self) -> Mapping[str, Cluster]: ...
    @property
    def dynamic_clusters(self) -> bool:
        """True when clusters may still arrive (CDS); then an unknown name is not a config
        error."""


@dataclass(frozen=True)
class LocalInfo:
    """The bootstrap ``node`` (``--service-cluster/-node/-zone`` override it), as Envoy's
    ``LocalInfo``."""

    node_id: str = ""
    cluster: str = ""
    zone: str = ""


class ServerContext(Protocol):
    """The server, as the lifecycle hooks and every factory see it."""

    @property
    def runtime(self) -> Runtime: ...
    @property
    def draining(self) -> bool:
        """Envoy's drain decision: the server is shutting down (or draining listeners);
        a filter closes a connection at its next natural boundary."""
    @property
    def healthcheck_failed(self) -> bool:
        """``POST /healthcheck/fail`` was called (and not undone by ``/healthcheck/ok``)."""
    @property
    def cluster_manager(self) -> ClusterManager: ...
    @property
    def stats(self) -> Store:
        """The server's stats store; ``stats.root`` is the root scope."""
    @property
    def plugin_options(self) -> argparse.Namespace:
        """Values of the command-line options plugins added with ``envoi_addoption``."""
    @property
    def local_info(self) -> LocalInfo: ...


class RouteConfigProvider(Protocol):
    """RDS: one named route configuration (an HCM's ``rds``), as its config source has it. The
    same provider serves every HCM naming the same route configuration and source."""

    @property
    def name(self) -> str:
        """``route_config_name``."""

    def attach(self, owner: object, build: Callable[[Any, str], T],
               use: Callable[[Any, T], None]) -> None:
        """Keep ``owner`` (held weakly) on the current route configuration: each one that
        arrives is compiled with ``build(RouteConfiguration, path)`` (a ``ConfigError`` there
        refuses the update, in every process) and handed over with ``use(owner, built)`` in
        every process at once, so new requests see it at once. When a configuration is held
        already, it is built and handed over now (a ``ConfigError`` then refuses ``owner``)."""


class FactoryContext(ServerContext, Protocol):
    """What a factory gets while it builds its runtime object, once, at config time."""

    @property
    def path(self) -> str:
        """Config path of the entry being built: prefix your ``ConfigIssue`` paths with it."""
    @property
    def listener_name(self) -> str:
        """The listener this filter chain belongs to ('' outside a listener)."""
    @property
    def traffic_direction(self) -> str:
        """That listener's ``traffic_direction`` (``UNSPECIFIED``, ``INBOUND``, ``OUTBOUND``):
        an HTTP connection manager on an OUTBOUND listener traces egress operations."""
    @property
    def scope(self) -> Scope:
        """The stats scope of what encloses this entry (the root scope for filters; the
        cluster's scope for cluster extensions)."""
    @property
    def stat_prefix(self) -> str:
        """For HTTP filters, the enclosing ``http_connection_manager``'s ``stat_prefix``: Envoy
        names an HTTP filter's stats ``http.<stat_prefix>.<filter>.<name>``."""

    def with_path(self, path: str, *, scope: Scope | None = None,
                  stat_prefix: str | None = None) -> FactoryContext:
        """The same context for a nested entry (another path, maybe another scope/prefix)."""

    def resolve_extension(self, base: type[F], entry: Any, path: str) -> tuple[F, Any]:
        """The registered factory of kind ``base`` for a config entry with ``name`` and
        ``typed_config`` (Envoy's rule: by ``@type`` first, by name without a typed_config),
        and its config: the proto message, the object a plugin's schema parsed, or the empty
        default config when the entry has no ``typed_config``. Raises ``ConfigError`` naming
        ``path``, and the installed alternatives when nothing matches."""

    def per_filter_configs(self, configs: Mapping[str, Any], path: str) -> dict[str, object]:
        """A ``typed_per_filter_config`` map (filter name -> ``Any``) -> the per-route config
        objects, each made by that HTTP filter's factory (``create_route_config``); a filter
        that has no per-route config, or a type it does not take, is a config error."""

    def run_factory(self, factory: object, create: Callable[[], T]) -> T:
        """``create()`` (a nested factory's ``create_*`` call): an exception other than
        ``ConfigError`` becomes a config error at this context's path that names the plugin of
        ``factory`` and the exception, instead of a traceback."""

    def access_loggers(self, entries: Sequence[Any], path: str) -> list[AccessLogger]:
        """Build an ``access_log`` list (``envoy.config.accesslog.v3.AccessLog`` messages)."""

    @property
    def access_log_operators(self) -> Mapping[str, OperatorFactory]:
        """Every ``%COMMAND%`` operator, the core's and those plugins registered with
        ``envoi_access_log_operators``, by name."""

    def tap_point(self, filter_name: str) -> TapPoint:
        """The live tap's publishing point of filter ``filter_name`` on this listener (one per
        listener and filter): ``if point.active: point.publish(type, connection_id, fields)``
        publishes a decoded event to whoever streams ``/tap`` (see :mod:`envoi.tap`)."""

    def route_config_provider(self, rds: Any, path: str,
                              stat_prefix: str) -> RouteConfigProvider:
        """The provider of an HCM's ``rds`` (``envoy...http_connection_manager.v3.Rds``) at
        ``path``; its stats are ``http.<stat_prefix>.rds.<route_config_name>.*``. A listener
        whose route configurations have not arrived yet warms (serves nothing) until they do,
        or until the config source's ``initial_fetch_timeout``. Raises ``ConfigError``."""

    def format_string(self, fmt: str, path: str) -> Formatter:
        """Compile an Envoy format string (``%REQ(x)% %RESPONSE_CODE%``...) with every command
        operator the core and the plugins register; raises ``ConfigError`` on an unknown one. As
        in Envoy's header values, an absent value is written as nothing (not ``-``)."""
