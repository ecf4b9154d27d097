"""What a plugin hands to the core: one factory object per extension it provides.

Every extension has Envoy's name (``envoy.filters.network.tcp_proxy``), the config type URLs it
accepts (``envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy``, without the
``type.googleapis.com/`` prefix) and a category. The core resolves a config entry by its
``typed_config`` ``@type`` first and by ``name`` only when there is no ``typed_config``, as Envoy
does. A factory turns its validated config into a fast runtime callable once, at config time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import asyncio

    from envoi.access_log import AccessLogger
    from envoi.network.filter import NetworkFilterFactoryCb
    from envoi.server import Server
    from envoi.stats import Scope, Store
    from envoi.upstream.cluster_manager import ClusterManager

TYPE_URL_PREFIX = "type.googleapis.com/"


def strip_type_url(url: str) -> str:
    return url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ConfigSchema:
    """A config type that ``xds-protos`` does not have (a third-party filter's own config).

    ``parse`` gets the ``typed_config`` fields as plain JSON data and returns the factory's config
    object; it raises :class:`ValueError` (or :class:`envoi.config.ConfigError`) with a message
    naming the field, which the core reports under the entry's config path.
    """

    type_url: str
    parse: Callable[[Mapping[str, Any]], object]


@dataclass
class FactoryContext:
    """What a factory may use while it builds its runtime object (Envoy's FactoryContext)."""

    server: Server
    stats: Store
    scope: Scope  # the listener's (or the server's) scope
    cluster_manager: ClusterManager
    loop: asyncio.AbstractEventLoop | None
    listener_name: str = ""
    path: str = ""  # config path of the entry being built, for error messages
    extra: dict[str, Any] = field(default_factory=dict)

    def access_loggers(self, entries: Any, path: str) -> list[AccessLogger]:
        """Build the ``access_log`` list of a filter's config."""
        from envoi.access_log import build_access_loggers

        return build_access_loggers(self, entries, path)


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

    @abc.abstractmethod
    def create_filter_factory(self, config: Any, context: FactoryContext) -> Any:
        """Return ``Callable[[HttpFilterChainBuilder], None]`` (see :mod:`envoi.http.filter`)."""


class ListenerFilterFactory(ExtensionFactory):
    category = "envoy.filters.listener"

    @abc.abstractmethod
    def create_filter_factory(self, config: Any, context: FactoryContext) -> Any: ...


class AccessLoggerFactory(ExtensionFactory):
    category = "envoy.access_loggers"

    @abc.abstractmethod
    def create_logger(self, config: Any, context: FactoryContext, path: str) -> AccessLogger: ...


class ClusterTypeFactory(ExtensionFactory):
    """``envoy.clusters.*``: discovery types. ``cluster_types`` names the built-in enum values
    (``STATIC``, ``STRICT_DNS``...) a factory serves when a cluster uses ``type:``.

    ``create_cluster`` returns the hosts (a list), or a discovery object with
    ``resolve_now(cluster) -> list[Host]`` (the first hosts, at config time) and
    ``async run(cluster)`` (keeps ``cluster`` up to date with ``cluster.set_hosts``; the server
    runs it as a task in every process that serves traffic)."""

    category = "envoy.clusters"
    cluster_types: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> Any: ...


class LoadBalancerFactory(ExtensionFactory):
    """``envoy.load_balancing_policies.*``; ``lb_policies`` names the ``lb_policy`` enum values."""

    category = "envoy.load_balancing_policies"
    lb_policies: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def create_load_balancer(self, cluster: Any, config: Any) -> Any: ...


class HealthCheckerFactory(ExtensionFactory):
    category = "envoy.health_checkers"

    @abc.abstractmethod
    def create_health_checker(self, cluster: Any, config: Any, context: FactoryContext) -> Any: ...


class StatsSinkFactory(ExtensionFactory):
    category = "envoy.stats_sinks"

    @abc.abstractmethod
    def create_sink(self, config: Any, context: FactoryContext) -> Any: ...
