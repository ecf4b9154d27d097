"""Loading plugins and resolving config names to factories.

Plugins come from three places, as pytest's do: the core's built-ins (registered first, through
the same hooks), the entry-point group ``envoi`` (skipped when ``ENVOI_DISABLE_PLUGIN_AUTOLOAD`` is
set), and modules named explicitly (``-p module`` / ``ENVOI_PLUGINS=a,b``). ``-p no:NAME`` blocks
a plugin by its registration name (the entry-point name, or ``builtin.<x>`` for built-ins).

Every way a plugin can be wrong is a :class:`PluginError` whose message names the plugin (and
its distribution) and says what to do: an entry point that fails to import, a hook name that
matches no spec (with the closest spec name), a factory of the wrong kind, a name registered
twice.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, cast

import pluggy

from envoi import hookspecs
from envoi.config import ConfigError, ConfigIssue
from envoi.extensions import (
    TYPE_URL_PREFIX,
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
    TracerFactory,
    strip_type_url,
)
from envoi.stream_info import OperatorFactory

ENTRY_POINT_GROUP = "envoi"

#: The core's own plugins: registration name -> module (block one with ``-p no:NAME``).
BUILTIN_PLUGINS = {
    "builtin.tcp_proxy": "envoi.filters.tcp_proxy",
    "builtin.upstream": "envoi.upstream.builtin",
    "builtin.access_log": "envoi.access_log",
    "builtin.tls_inspector": "envoi.filters.tls_inspector",
    "builtin.http_inspector": "envoi.filters.http_inspector",
    "builtin.stats_sinks": "envoi.stats.statsd",
    "builtin.tracers": "envoi.tracing.builtin",
    "builtin.xds": "envoi.xds.builtin",
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


def _distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class PluginError(Exception):
    """A plugin could not be loaded or is invalid; the message names the plugin."""


def _proto_message_names() -> list[str]:
    """Every top-level message of the Envoy/xds config protos (to suggest a type)."""
    from envoi.config.protos import ensure_protos_loaded

    # A config imports only the protos it names; a suggestion is looked for among all of them
    # (an error path: the ~0.3 s do not matter).
    ensure_protos_loaded()
    names: list[str] = []
    for modname, module in list(sys.modules.items()):
        if not modname.endswith("_pb2") or not modname.startswith(("envoy.", "xds.", "udpa.")):
            continue
        fd = getattr(module, "DESCRIPTOR", None)
        if fd is not None:
            names.extend(f"{fd.package}.{m}" for m in fd.message_types_by_name)
    return names


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, taking module-level ``envoi_*`` functions as hook implementations
    without ``@hookimpl``, as pytest takes ``pytest_*`` functions."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("envoi_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


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
        self.pm = _PluginManager("envoi")
        self.pm.add_hookspecs(hookspecs)
        for name in blocked:
            self.pm.set_blocked(name)
        for name, modname in BUILTIN_PLUGINS.items():
            if not self.pm.is_blocked(name):
                self._register(importlib.import_module(modname), name)
        if autoload is None:
            autoload = not os.environ.get("ENVOI_DISABLE_PLUGIN_AUTOLOAD")
        self._dists: dict[str, str] = {}
        if autoload:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._load_entry_point(ep)
        env_extra = [m for m in os.environ.get("ENVOI_PLUGINS", "").split(",") if m]
        for modname in [*extra, *env_extra]:
            if self.pm.is_blocked(modname) or self.pm.has_plugin(modname):
                continue
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                raise PluginError(
                    f"plugin module {modname!r} (from -p or ENVOI_PLUGINS) could not be "
                    f"imported: {type(exc).__name__}: {exc}"
                ) from exc
            self._register(module, modname)
        self._check_hook_names()
        self._by_category: dict[str, dict[str, ExtensionFactory]] = {}
        self._by_type_url: dict[tuple[str, str], ExtensionFactory] = {}
        self._info: list[ExtensionInfo] = []
        self._owner: dict[int, str] = {}  # id(factory) -> the plugin that registered it
        self.schemas: dict[str, ConfigSchema] = {}
        self._schema_owner: dict[str, str] = {}
        self.access_log_operators: dict[str, OperatorFactory] = {}
        self._collect()

    # -- loading --------------------------------------------------------------------------------

    def _load_entry_point(self, ep: EntryPoint) -> None:
        if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
            return
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
        try:
            plugin = ep.load()
        except Exception as exc:  # a plugin that fails to import must not look like our bug
            raise PluginError(
                f"plugin {ep.name!r} (distribution {dist}, entry point {ep.value!r}) could not "
                f"be imported: {type(exc).__name__}: {exc}. Fix or uninstall it, or start "
                f"with '-p no:{ep.name}' to skip it."
            ) from exc
        self._dists[ep.name] = dist
        self._register(plugin, ep.name)

    def _register(self, plugin: object, name: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy: the same object under two names
            raise PluginError(f"plugin {name!r}: {exc}") from exc

    def _check_hook_names(self) -> None:
        """Every ``envoi_*`` implementation must match a spec: a typo is named with its plugin
        (once) and the closest spec name."""
        specs = sorted(n for n in dir(hookspecs) if n.startswith("envoi_"))
        problems: list[str] = []
        for name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, name)
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            close = difflib.get_close_matches(name, specs, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; hooks are: {', '.join(specs)}"
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                problems.append(f"plugin {self._describe(impl.plugin_name)} implements "
                                f"{name!r}, which is not an envoi hook{hint}")
        if problems:
            raise PluginError("\n".join(problems))

    def _describe(self, plugin_name: str) -> str:
        dist = self._dists.get(plugin_name)
        return f"{plugin_name!r} ({dist})" if dist else repr(plugin_name)

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
            (hook.envoi_tracers, TracerFactory),
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
                if not isinstance(schema, ConfigSchema):
                    raise PluginError(f"plugin {self._describe(impl.plugin_name)} returned "
                                      f"{schema!r} from envoi_config_schemas; expected a "
                                      "ConfigSchema")
                if schema.fields is None:
                    # envoi.config.implemented: no config key may be silently ignored.
                    raise PluginError(
                        f"plugin {self._describe(impl.plugin_name)}: ConfigSchema for "
                        f"{schema.type_url!r} must declare the keys it implements "
                        "(ConfigSchema(..., fields=[...]), or envoi.schema.config_schema)")
                url = strip_type_url(schema.type_url)
                self.schemas[url] = schema
                self._schema_owner[url] = impl.plugin_name
        operator_owner: dict[str, str] = {}
        for impl in hook.envoi_access_log_operators.get_hookimpls():
            operators = cast(Mapping[str, OperatorFactory], impl.function() or {})
            for op_name, factory in operators.items():
                if op_name in operator_owner:
                    raise PluginError(
                        f"plugin {self._describe(impl.plugin_name)} registers access-log "
                        f"operator %{op_name}%, already registered by "
                        f"{self._describe(operator_owner[op_name])}")
                operator_owner[op_name] = impl.plugin_name
                self.access_log_operators[op_name] = factory

    def _add(self, factory: Any, base: type[ExtensionFactory], plugin_name: str) -> None:
        if isinstance(factory, type):
            factory = factory()
        if not isinstance(factory, base):
            raise PluginError(
                f"plugin {self._describe(plugin_name)} returned {factory!r} from the "
                f"{base.category} hook; expected a {base.__name__}"
            )
        table = self._by_category.setdefault(base.category, {})
        for key in (factory.name, *factory.aliases):
            if key in table and table[key] is not factory:
                other = self._owner.get(id(table[key]), "?")
                raise PluginError(
                    f"plugin {self._describe(plugin_name)} registers {base.category} {key!r}, "
                    f"already registered by {self._describe(other)}"
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

    def schema_owner(self, type_url: str) -> str:
        """The plugin (and distribution) that registered a config schema, for messages."""
        return self._describe(self._schema_owner.get(strip_type_url(type_url), "?"))

    def owner_of(self, factory: ExtensionFactory) -> str:
        """The plugin (and distribution) that registered ``factory``, for messages."""
        return self._describe(self._owner.get(id(factory), "?"))

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

    @property
    def config_type_urls(self) -> set[str]:
        """Every config type some factory serves, per-route ones included (the types whose
        fields envoi.config.implemented checks inside an ``Any``)."""
        urls = self.plugin_type_urls
        for factories in self._by_category.values():
            for factory in factories.values():
                urls.update(getattr(factory, "route_type_urls", ()))
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
            installed_version = _distribution_version(provider)
            if installed_version is None:
                msg += (
                    f" ('{name}' is provided by the '{provider}' distribution: "
                    f"pip install {provider})"
                )
            elif any(d.split(" ", 1)[0] == provider for d in self._dists.values()):
                msg += (
                    f" ('{name}' belongs to the '{provider}' distribution; the installed "
                    f"version {installed_version} does not provide it)"
                )
            else:
                msg += (
                    f" ('{name}' is provided by the '{provider}' distribution, which is "
                    f"installed ({installed_version}) but not loaded: plugin autoload is off "
                    "or the plugin is blocked with -p no:NAME)"
                )
        same = [i for i in self._info if i.category == category]
        if type_url:
            known = sorted({u for i in same for u in i.type_urls})
            close = difflib.get_close_matches(strip_type_url(type_url), known, n=1)
            if close:
                msg += f"; did you mean '{TYPE_URL_PREFIX}{close[0]}'?"
            installed = sorted(f"{u} ({i.distribution})" for i in same for u in i.type_urls)
            return msg + "; installed types: " + (", ".join(installed) or "none")
        close = difflib.get_close_matches(name, sorted({i.name for i in same}), n=1)
        if close and not provider:
            msg += f"; did you mean '{close[0]}'?"
        installed = sorted(f"{i.name} ({i.distribution})" for i in same)
        msg += "; installed: " + (", ".join(installed) if installed else "none")
        return msg

    def unknown_type_hint(self, type_url: str) -> str:
        """For the config loader's "could not find @type": the closest type a plugin or
        xds-protos knows, and the types plugins registered, with their distributions."""
        name = strip_type_url(type_url)
        plugin_types = {u: i.distribution for i in self._info for u in i.type_urls
                        if not i.plugin.startswith("builtin.")}
        for url, owner in self._schema_owner.items():
            plugin_types.setdefault(url, self.distribution_of(owner))
        candidates = [*plugin_types, *_proto_message_names()]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
        hint = f"did you mean '{TYPE_URL_PREFIX}{close[0]}'? " if close else ""
        listed = ", ".join(f"{u} ({d})" for u, d in sorted(plugin_types.items())) or "none"
        return f"{hint}types registered by plugins: {listed}"
