"""The core's implementation of :class:`envoi.context.FactoryContext` (internal).

One :class:`FactoryContextImpl` per config entry being built: it holds the server's
:class:`~envoi.context.ServerContext`, the loaded plugins (to resolve nested extensions and
access-log operators), the entry's config path, scope and stat prefix. Plugins only ever see it
through the Protocol.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from envoi.access_log import compile_format
from envoi.config import (
    ConfigError,
    ConfigIssue,
    PluginTypedConfig,
    check_schema_keys,
    unpack_typed_config,
)
from envoi.config.typed import unpack_any
from envoi.context import (
    ClusterManager,
    FactoryContext,
    LocalInfo,
    RouteConfigProvider,
    Runtime,
    ServerContext,
)
from envoi.extensions import (
    AccessLoggerFactory,
    ExtensionFactory,
    HttpFilterFactory,
    NetworkFilterFactory,
    strip_type_url,
)
from envoi.network.filter import NetworkFilterFactoryCb
from envoi.stream_info import AccessLogger, Formatter, OperatorFactory
from envoi.tap import TapHub, TapPoint

if TYPE_CHECKING:
    from envoi.plugins import Plugins
    from envoi.stats import Scope, Store

F = TypeVar("F")
T = TypeVar("T")


class FactoryContextImpl:
    """A :class:`~envoi.context.FactoryContext` over a server context and the plugins."""

    __slots__ = ("_plugins", "_server", "listener_name", "path", "scope", "stat_prefix",
                 "traffic_direction")

    def __init__(self, server: ServerContext, plugins: Plugins, *, scope: Scope | None = None,
                 path: str = "", listener_name: str = "", stat_prefix: str = "",
                 traffic_direction: str = "UNSPECIFIED") -> None:
        self._server = server
        self._plugins = plugins
        self.scope = scope if scope is not None else server.stats.root
        self.path = path
        self.listener_name = listener_name
        self.stat_prefix = stat_prefix
        self.traffic_direction = traffic_direction

    # -- ServerContext --------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        return self._server.runtime

    @property
    def draining(self) -> bool:
        return self._server.draining

    @property
    def healthcheck_failed(self) -> bool:
        return self._server.healthcheck_failed

    @property
    def cluster_manager(self) -> ClusterManager:
        return self._server.cluster_manager

    @property
    def stats(self) -> Store:
        return self._server.stats

    @property
    def plugin_options(self) -> argparse.Namespace:
        return self._server.plugin_options

    @property
    def local_info(self) -> LocalInfo:
        return self._server.local_info

    # -- FactoryContext --------------------------------------------------------------------------

    def with_path(self, path: str, *, scope: Scope | None = None, stat_prefix: str | None = None,
                  listener_name: str | None = None,
                  traffic_direction: str | None = None) -> FactoryContextImpl:
        return FactoryContextImpl(
            self._server, self._plugins, scope=scope if scope is not None else self.scope,
            path=path,
            listener_name=self.listener_name if listener_name is None else listener_name,
            stat_prefix=self.stat_prefix if stat_prefix is None else stat_prefix,
            traffic_direction=(self.traffic_direction if traffic_direction is None
                               else traffic_direction))

    def resolve_extension(self, base: type[F], entry: Any, path: str) -> tuple[F, Any]:
        if not entry.HasField("typed_config") and self._has_config_type(base, entry.name):
            # As Envoy 1.39 does: an extension with a config type is found by its config's
            # @type, a bare name is not enough. (A plugin's extension that has no config type
            # at all can only be named.)
            raise ConfigError([self._missing_typed_config(entry.name, path)])
        url, config = self._typed_config(entry, path)
        factory = self._plugins.lookup(cast(type[ExtensionFactory], base), entry.name, url, path)
        if isinstance(config, PluginTypedConfig):
            config = self._parse_plugin_config(config, path + ".typed_config")
        return cast(F, factory), config

    def _typed_config(self, entry: Any, path: str) -> tuple[str | None, Any]:
        if not entry.HasField("typed_config"):
            return None, None
        cfg = unpack_typed_config(entry.typed_config, path + ".typed_config")
        if isinstance(cfg, PluginTypedConfig):
            return strip_type_url(cfg.type_url), cfg
        return cfg.DESCRIPTOR.full_name, cfg

    def _has_config_type(self, base: type[F], name: str) -> bool:
        """A factory of this name is registered and has a config type (an unknown name is
        left to ``lookup``, whose error lists what is installed)."""
        category = cast(type[ExtensionFactory], base).category
        return any(i.name == name and i.category == category and i.type_urls
                   for i in self._plugins.extensions)

    def _missing_typed_config(self, name: str, path: str) -> ConfigIssue:
        msg = f"Didn't find a registered implementation for '{name}' with type URL: ''"
        known = [i for i in self._plugins.extensions if i.name == name and i.type_urls]
        if known:
            msg += (" (extensions are found by their typed_config; add typed_config with "
                    f"\"@type\": type.googleapis.com/{known[0].type_urls[0]})")
        return ConfigIssue(path, msg)

    def _parse_plugin_config(self, cfg: PluginTypedConfig, path: str) -> Any:
        url = strip_type_url(cfg.type_url)
        schema = self._plugins.schemas.get(url)
        if schema is None:
            return cfg  # a factory that takes the plain data itself
        # The keys the schema does not declare are refused before it parses (none ignored).
        check_schema_keys(cfg.value, schema.fields or (), path, url)
        try:
            return schema.parse(cfg.value)
        except ConfigError as exc:
            # Paths in a schema's errors are relative to its typed_config.
            raise ConfigError([ConfigIssue(_join(path, i.path), i.message)
                               for i in exc.errors]) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError([ConfigIssue(path, str(exc))]) from exc
        except Exception as exc:  # a bug in the plugin's parser: say whose, and what
            owner = self._plugins.schema_owner(cfg.type_url)
            raise ConfigError([ConfigIssue(path, (
                f"the config parser of plugin {owner} raised {type(exc).__name__}: {exc}"
                " (a bug in that plugin; the config may still be wrong)"))]) from exc

    def per_filter_configs(self, configs: Mapping[str, Any], path: str) -> dict[str, object]:
        out: dict[str, object] = {}
        issues: list[ConfigIssue] = []
        for name, any_msg in configs.items():
            p = f"{path}[{name}]"
            try:
                out[name] = self._route_config(name, any_msg, p)
            except ConfigError as exc:
                issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)
        return out

    def _route_config(self, name: str, any_msg: Any, path: str) -> object:
        factory = self._plugins.lookup(HttpFilterFactory, name, None,  # type: ignore[type-abstract]
                                       path)
        cfg, value_path = unpack_any(any_msg, path)
        url = strip_type_url(cfg.type_url) if isinstance(cfg, PluginTypedConfig) \
            else cfg.DESCRIPTOR.full_name
        accepted = {strip_type_url(u) for u in factory.route_type_urls}
        if not accepted:
            raise ConfigError([ConfigIssue(path, f"The filter {name} doesn't support virtual "
                                                 "host or route specific configurations")])
        if url not in accepted:
            raise ConfigError([ConfigIssue(path, f"the per-route config of {name} must be one "
                                                 f"of {', '.join(sorted(accepted))}, not {url}")])
        if isinstance(cfg, PluginTypedConfig):
            cfg = self._parse_plugin_config(cfg, value_path)
        ctx = self.with_path(value_path)
        return ctx.run_factory(factory, lambda: factory.create_route_config(cfg, ctx))

    def run_factory(self, factory: object, create: Callable[[], T]) -> T:
        try:
            return create()
        except ConfigError:
            raise
        except ValueError as exc:  # the documented way to refuse a config (extensions.py)
            name = getattr(factory, "name", "") or type(factory).__name__
            raise ConfigError([ConfigIssue(self.path, f"{name}: {exc}")]) from exc
        except Exception as exc:
            owner = (self._plugins.owner_of(factory) if isinstance(factory, ExtensionFactory)
                     else repr(factory))
            name = getattr(factory, "name", "") or type(factory).__name__
            raise ConfigError([ConfigIssue(self.path, (
                f"{name} (plugin {owner}) failed to build its config: "
                f"{type(exc).__name__}: {exc}"))]) from exc

    def create_filter_factory(self, factory: NetworkFilterFactory, config: Any,
                              context: FactoryContextImpl) -> NetworkFilterFactoryCb:
        return context.run_factory(factory,
                                   lambda: factory.create_filter_factory(config, context))

    def access_loggers(self, entries: Sequence[Any], path: str) -> list[AccessLogger]:
        loggers: list[AccessLogger] = []
        for i, entry in enumerate(entries):
            p = f"{path}[{i}]"
            factory, config = self.resolve_extension(
                AccessLoggerFactory, entry, p)  # type: ignore[type-abstract]
            ctx = self.with_path(p + ".typed_config")
            # Called at once, so the closure sees this iteration's values.
            loggers.append(ctx.run_factory(
                factory, lambda: factory.create_logger(config, ctx, ctx.path)))  # noqa: B023
        return loggers

    @property
    def access_log_operators(self) -> Mapping[str, OperatorFactory]:
        return self._plugins.access_log_operators

    def tap_point(self, filter_name: str) -> TapPoint:
        hub: TapHub | None = getattr(self._server, "tap_hub", None)
        if hub is None:  # a server context without a tap (a plugin's own test double)
            hub = TapHub.create(self.stats.root)
        return hub.point(self.listener_name, filter_name)

    def format_string(self, fmt: str, path: str) -> Formatter:
        return compile_format(fmt, path, self._plugins.access_log_operators, omit_empty=True)

    def route_config_provider(self, rds: Any, path: str,
                              stat_prefix: str) -> RouteConfigProvider:
        providers = getattr(self._server, "route_configs", None)
        if providers is None:  # a server context without xDS (a plugin's own test double)
            raise ConfigError([ConfigIssue(path, "RDS needs an envoi server (this context "
                                           "has no route configuration providers)")])
        return cast(RouteConfigProvider, providers.get(rds, path, stat_prefix))


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    return f"{base}{rel}" if rel.startswith("[") else f"{base}.{rel}"


def default_config(factory: ExtensionFactory) -> Any:
    """The empty config of a factory named without ``typed_config`` (its first proto type)."""
    from envoi.config.protos import find_message_type, message_class

    for url in factory.type_urls:
        descriptor = find_message_type(strip_type_url(url))
        if descriptor is not None:
            return message_class(descriptor)()
    return None


def _check(ctx: FactoryContextImpl) -> FactoryContext:
    return ctx  # mypy: the implementation satisfies the Protocol
