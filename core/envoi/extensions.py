"""What a plugin hands to the core: one factory object per extension it provides.

Every extension has Envoy's name (``envoy.filters.network.tcp_proxy``), the config type URLs it
accepts (``envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy``, without the
``type.googleapis.com/`` prefix) and a category. The core resolves a config entry by its
``typed_config`` ``@type`` first and by ``name`` only when there is no ``typed_config``, as Envoy
does. A factory turns its validated config into a fast runtime callable once, at config time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from envoi.context import ClusterManager, FactoryContext, LocalInfo, Runtime, ServerContext
from envoi.http.filter import HttpFilterFactoryCb
from envoi.network.filter import NetworkFilterFactoryCb
from envoi.network.listener_filter import ListenerFilterFactoryCb
from envoi.stream_info import AccessLogger

if TYPE_CHECKING:
    from envoi.stats.sink import StatsSink
    from envoi.tracing.span import Tracer
    from envoi.upstream.assignment import LoadAssignment
    from envoi.upstream.cluster import Cluster, Host

__all__ = [
    "AccessLogger",
    "AccessLoggerFactory",
    "ClusterDiscovery",
    "ClusterManager",
    "ClusterTypeFactory",
    "ConfigSchema",
    "ExtensionFactory",
    "FactoryContext",
    "HealthCheckerFactory",
    "HttpFilterFactory",
    "ListenerFilterFactory",
    "LoadBalancer",
    "LoadBalancerFactory",
    "LocalInfo",
    "NetworkFilterFactory",
    "Runtime",
    "ServerContext",
    "StatsSinkFactory",
    "TracerFactory",
    "strip_type_url",
]

TYPE_URL_PREFIX = "type.googleapis.com/"


def strip_type_url(url: str) -> str:
    return url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ConfigSchema:
    """A config type that ``xds-protos`` does not have (a third-party filter's own config).

    ``parse`` gets the ``typed_config`` fields as plain JSON data and returns the factory's config
    object; it raises :class:`envoi.config.ConfigError` (paths relative to the entry) or
    :class:`ValueError` with a message naming the field, which the core reports under the
    entry's config path. :func:`envoi.schema.config_schema` builds one from a dataclass.

    ``fields`` declares the keys the filter implements (required: a schema without it is a
    plugin error; ``config_schema`` takes them from the dataclass). Before ``parse`` runs, the
    core refuses every other key with its path, so a config never sets something the filter
    silently ignores. Keys inside an object are written ``"outer.inner"``; an object whose keys
    no entry names is left to ``parse`` to check (see :func:`envoi.config.check_schema_keys`).
    """

    type_url: str
    parse: Callable[[Mapping[str, Any]], object]
    fields: Collection[str] | None = None


class ClusterDiscovery(Protocol):
    """What a cluster type returns for a dynamic cluster (DNS, EDS...)."""

    def resolve_now(self, cluster: Cluster) -> list[Host]:
        """The first hosts, at config time."""

    async def run(self, cluster: Cluster) -> None:
        """Keep ``cluster`` up to date with ``cluster.set_hosts``; the server runs it as a task
        in every process that serves traffic."""


class LoadBalancer(Protocol):
    def hosts_changed(self, hosts: list[Host]) -> None: ...
    def choose_host(self, context: Any = None) -> Host | None: ...


class ExtensionFactory(abc.ABC):  # noqa: B024 - a common base, abstract in its subclasses
    """Base of every extension factory."""

    category: ClassVar[str] = ""
    name: ClassVar[str] = ""
    type_urls: ClassVar[tuple[str, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()


class NetworkFilterFactory(ExtensionFactory):
    """``envoy.filters.network.*``: builds a callback that adds filters to each new connection."""

    category = "envoy.filters.network"
    #: A terminal filter (tcp_proxy, http_connection_manager) must be last in its chain.
    terminal: ClassVar[bool] = False

    @abc.abstractmethod
    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        """Validate ``config`` (a protobuf message or a plugin config object) and return the
        per-connection callback. Raise :class:`envoi.config.ConfigError` or ValueError on bad
        config."""


class HttpFilterFactory(ExtensionFactory):
    """``envoy.filters.http.*``: builds a callback that adds filters to each new HTTP stream."""

    category = "envoy.filters.http"
    terminal: ClassVar[bool] = False

    #: Config types of the filter's per-route config (a route's ``typed_per_filter_config``
    #: under the filter's name); empty when it has none.
    route_type_urls: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        """Validate ``config`` (a protobuf message, or what the plugin's ``ConfigSchema``
        parsed) once, and return the per-stream callback that adds fresh filter objects to an
        :class:`envoi.http.filter.HttpFilterChainBuilder`. Raise ``ConfigError`` on bad config."""

    def create_route_config(self, config: Any, context: FactoryContext) -> object:
        """A route's (virtual host's, route config's) ``typed_per_filter_config`` for this
        filter, once at config time (Envoy's ``createRouteSpecificFilterConfig``): return the
        object filters get from ``callbacks.route().per_filter_config(<filter name>)``. Only
        called for a type in ``route_type_urls``; the default returns ``config`` as parsed."""
        return config


class ListenerFilterFactory(ExtensionFactory):
    """``envoy.filters.listener.*`` (``tls_inspector``, ``http_inspector``): filters that look
    at an accepted socket's first bytes before its filter chain is chosen. The contract is
    :mod:`envoi.network.listener_filter`."""

    category = "envoy.filters.listener"

    @abc.abstractmethod
    def create_filter_factory(self, config: Any,
                              context: FactoryContext) -> ListenerFilterFactoryCb:
        """Validate ``config`` once; return a callable that makes a fresh
        :class:`~envoi.network.listener_filter.ListenerFilter` per accepted socket."""


class AccessLoggerFactory(ExtensionFactory):
    category = "envoy.access_loggers"

    @abc.abstractmethod
    def create_logger(self, config: Any, context: FactoryContext, path: str) -> AccessLogger: ...


class ClusterTypeFactory(ExtensionFactory):
    """``envoy.clusters.*``: discovery types. ``cluster_types`` names the built-in enum values
    (``STATIC``, ``STRICT_DNS``...) a factory serves when a cluster uses ``type:``.

    ``create_cluster`` returns the hosts (a list, or an ``envoi.upstream.assignment.
    LoadAssignment`` with priorities and locality weights), or a discovery object with
    ``resolve_now(cluster) -> list[Host]`` (the first hosts, at config time) and
    ``async run(cluster)`` (keeps ``cluster`` up to date with ``cluster.set_hosts``; the server
    runs it as a task in every process that serves traffic)."""

    category = "envoy.clusters"
    cluster_types: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_cluster(self, cluster_config: Any, context: FactoryContext
                       ) -> Sequence[Host] | LoadAssignment | ClusterDiscovery: ...


class LoadBalancerFactory(ExtensionFactory):
    """``envoy.load_balancing_policies.*``; ``lb_policies`` names the ``lb_policy`` enum values."""

    category = "envoy.load_balancing_policies"
    lb_policies: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_load_balancer(self, cluster: Cluster, config: Any) -> LoadBalancer: ...


class HealthCheckerFactory(ExtensionFactory):
    """``envoy.health_checkers.*``: active health checks. ``health_check_fields`` names the
    ``HealthCheck`` oneof fields a factory serves (``http_health_check``,
    ``grpc_health_check``...); a ``custom_health_check`` is found by its name or ``@type``.

    ``create_health_checker(cluster, config, context)`` gets the ``HealthCheck`` message and
    returns a probe factory, ``factory(host) -> probe``, where ``await probe.check()`` does one
    check and returns one of ``envoi.upstream.health_check.RESULT_*`` and ``probe.close()`` drops
    any connection it keeps. The core runs the timers, the timeout, the thresholds, the stats
    and the host's health flags (see :mod:`envoi.upstream.health_check` for the contract)."""

    category = "envoy.health_checkers"
    health_check_fields: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_health_checker(self, cluster: Cluster, config: Any,
                              context: FactoryContext) -> object: ...


class TracerFactory(ExtensionFactory):
    """``envoy.tracers.*``: an HTTP connection manager's ``tracing.provider``.
    ``create_tracer`` runs once per provider at config time and returns an
    :class:`envoi.tracing.span.Tracer` (start spans, spawn children, inject context); finished
    spans go to the tracer's own exporter (:mod:`envoi.tracing.export`)."""

    category = "envoy.tracers"

    @abc.abstractmethod
    def create_tracer(self, config: Any, context: FactoryContext) -> Tracer: ...


class StatsSinkFactory(ExtensionFactory):
    """``envoy.stat_sinks.*``: the bootstrap's ``stats_sinks``. ``create_sink`` runs once, in
    the main process, and returns a :class:`envoi.stats.sink.StatsSink`: ``flush(snapshot)``
    every ``stats_flush_interval`` with the server's stats (summed over the workers) and
    ``on_histogram_values(histogram, values)`` with recorded values, in the process that
    recorded them (see :mod:`envoi.stats.sink`)."""

    category = "envoy.stats_sinks"

    @abc.abstractmethod
    def create_sink(self, config: Any, context: FactoryContext) -> StatsSink: ...
