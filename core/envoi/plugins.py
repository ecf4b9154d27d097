"""Loading plugins and resolving config names to factories.

Plugins come from three places, as pytest's do: the core's built-ins (registered first, through
the same hooks), the entry-point group ``envoi`` (skipped when ``ENVOI_DISABLE_PLUGIN_AUTOLOAD`` is
set), and modules named explicitly (``-p module`` / ``ENVOI_PLUGINS=a,b``). ``-p no:NAME`` blocks
a plugin by its registration name (the entry-point name, or ``builtin.<x>`` for built-ins).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pluggy

from envoi import hookspecs
from envoi.config import ConfigError, ConfigIssue
from envoi.extensions import (
    AccessLoggerFactory,
    ClusterTypeFactory,
    ConfigSchema,
    ExtensionFactory,
    HealthCheckerFactory,
    HttpFilterFactory,
    ListenerFilterFactory,
    LoadBalancerFactory,
    NetworkFilterFactory,
    StatsSinkFactory,
    strip_type_url,
)

ENTRY_POINT_GROUP = "envoi"

#: The core's own plugins: registration name -> module (block one with ``-p no:NAME``).
BUILTIN_PLUGINS = {
    "builtin.tcp_proxy": "envoi.filters.tcp_proxy",
    "builtin.upstream": "envoi.upstream.builtin",
    "builtin.access_log": "envoi.access_log",
}

#: Names we know but which live in a plugin distribution: said in the error when it is missing.
KNOWN_PROVIDERS = {
    "envoy.filters.network.http_connection_manager": "envoi-http",
    "envoy.filters.http.router": "envoi-http",
    "envoy.filters.http.health_check": "envoi-http",
    "envoy.filters.http.fault": "envoi-http",
    "envoy.filters.http.buffer": "envoi-http",
    "envoy.filters.network.mongo_proxy": "envoi-mongo",
    "envoy.filters.http.dynamo": "envoi-dynamodb",
    "envoy.filters.http.grpc_stats": "envoi-grpc",
    "envoy.filters.http.grpc_web": "envoi-grpc",
    "envoy.filters.http.grpc_http1_bridge": "envoi-grpc",
}

F = TypeVar("F", bound=ExtensionFactory)


class PluginError(Exception):
    """A plugin could not be loaded or is invalid; the message names the plugin."""


@dataclass(frozen=True)
class ExtensionInfo:
    name: str
    category: str
    type_urls: tuple[str, ...]
    plugin: str
    distribution: str


class Plugins:
    """The loaded plugins and every extension they provide, by category."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        blocked: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> None:
        self.pm = pluggy.PluginManager("envoi")
        self.pm.add_hookspecs(hookspecs)
        for name in blocked:
            self.pm.set_blocked(name)
        for name, modname in BUILTIN_PLUGINS.items():
            if not self.pm.is_blocked(name):
                self.pm.register(importlib.import_module(modname), name=name)
        if autoload is None:
            autoload = not os.environ.get("ENVOI_DISABLE_PLUGIN_AUTOLOAD")
        self._dists: dict[str, str] = {}
        if autoload:
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            except Exception as exc:  # a plugin that fails to import
                raise PluginError(f"could not load an '{ENTRY_POINT_GROUP}' plugin: {exc}") from exc
            for plugin, dist in self.pm.list_plugin_distinfo():
                name = self.pm.get_name(plugin) or "?"
                self._dists[name] = f"{dist.project_name} {dist.version}"
        env_extra = [m for m in os.environ.get("ENVOI_PLUGINS", "").split(",") if m]
        for modname in [*extra, *env_extra]:
            if self.pm.is_blocked(modname) or self.pm.has_plugin(modname):
                continue
            try:
                self.pm.register(importlib.import_module(modname), name=modname)
            except ImportError as exc:
                raise PluginError(
                    f"plugin module {modname!r} could not be imported: {exc}"
                ) from exc
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
        self._by_category: dict[str, dict[str, ExtensionFactory]] = {}
        self._by_type_url: dict[tuple[str, str], ExtensionFactory] = {}
        self._info: list[ExtensionInfo] = []
        self._owner: dict[int, str] = {}  # id(factory) -> the plugin that registered it
        self.schemas: dict[str, ConfigSchema] = {}
        self._collect()

    # -- collection ------------------------------------------------------------------------

    def _collect(self) -> None:
        hook = self.pm.hook
        calls: list[tuple[Any, type[ExtensionFactory]]] = [
            (hook.envoi_network_filters, NetworkFilterFactory),
            (hook.envoi_http_filters, HttpFilterFactory),
            (hook.envoi_listener_filters, ListenerFilterFactory),
            (hook.envoi_cluster_types, ClusterTypeFactory),
            (hook.envoi_load_balancers, LoadBalancerFactory),
            (hook.envoi_health_checkers, HealthCheckerFactory),
            (hook.envoi_access_loggers, AccessLoggerFactory),
            (hook.envoi_stats_sinks, StatsSinkFactory),
        ]
        for caller, base in calls:
            # Each implementation is called on its own (registration hooks take no arguments)
            # so every factory is attributed to its plugin: for duplicate-name errors, for
            # "installed:" lists and for /server_info's distributions.
            for impl in caller.get_hookimpls():
                plugin_name = impl.plugin_name
                result = cast(Iterable[Any], impl.function() or ())
                for factory in result:
                    self._add(factory, base, plugin_name)
        for impl in hook.envoi_config_schemas.get_hookimpls():
            schemas = cast(Iterable[ConfigSchema], impl.function() or ())
            for schema in schemas:
                self.schemas[strip_type_url(schema.type_url)] = schema

    def _add(self, factory: Any, base: type[ExtensionFactory], plugin_name: str) -> None:
        if isinstance(factory, type):
            factory = factory()
        if not isinstance(factory, base):
            raise PluginError(
                f"plugin {plugin_name!r} returned {factory!r} from the {base.category} hook; "
                f"expected a {base.__name__}"
            )
        table = self._by_category.setdefault(base.category, {})
        for key in (factory.name, *factory.aliases):
            if key in table and table[key] is not factory:
                other = self._owner.get(id(table[key]), "?")
                raise PluginError(
                    f"plugin {plugin_name!r} registers {base.category} {key!r}, "
                    f"already registered by {other!r}"
                )
            table[key] = factory
        for url in factory.type_urls:
            self._by_type_url[(base.category, strip_type_url(url))] = factory
        self._owner[id(factory)] = plugin_name
        self._info.append(
            ExtensionInfo(
                factory.name,
                base.category,
                tuple(strip_type_url(u) for u in factory.type_urls),
                plugin_name,
                self.distribution_of(plugin_name),
            )
        )

    def distribution_of(self, plugin_name: str) -> str:
        if plugin_name.startswith("builtin."):
            from envoi import __version__

            return f"envoi {__version__}"
        return self._dists.get(plugin_name, plugin_name)

    # -- lookup ----------------------------------------------------------------------------

    @property
    def extensions(self) -> list[ExtensionInfo]:
        return list(self._info)

    @property
    def plugin_type_urls(self) -> set[str]:
        """Every type URL a plugin knows that the protobuf pool may not (for the config loader)."""
        urls = set(self.schemas)
        for info in self._info:
            urls.update(info.type_urls)
        return urls

    def factories(self, category: str) -> Iterable[ExtensionFactory]:
        return self._by_category.get(category, {}).values()

    def lookup(
        self, base: type[F], name: str, type_url: str | None, path: str
    ) -> F:
        """Envoy's rule: by ``@type`` first; by name only without a ``typed_config``."""
        category = base.category
        if type_url:
            found = self._by_type_url.get((category, strip_type_url(type_url)))
            if found is not None:
                assert isinstance(found, base)
                return found
        table = self._by_category.get(category, {})
        if not type_url and name in table:
            factory = table[name]
            assert isinstance(factory, base)
            return factory
        raise ConfigError([ConfigIssue(path, self._unknown_message(category, name, type_url))])

    def _unknown_message(self, category: str, name: str, type_url: str | None) -> str:
        what = f"@type '{type_url}'" if type_url else f"name '{name}'"
        msg = f"no {category} extension is registered for {what}"
        provider = KNOWN_PROVIDERS.get(name)
        if provider:
            msg += (
                f" ('{name}' is provided by the '{provider}' distribution: "
                f"pip install {provider})"
            )
        installed = sorted(
            f"{i.name} ({i.distribution})" for i in self._info if i.category == category
        )
        msg += "; installed: " + (", ".join(installed) if installed else "none")
        return msg
