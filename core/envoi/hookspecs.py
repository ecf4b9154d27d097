"""The plugin contract: every hook a plugin may implement, on one page.

A plugin is a module (or any object) registered under the entry-point group ``envoi``::

    [project.entry-points.envoi]
    acme = "acme_envoi.plugin"

whose functions are marked with :data:`envoi.hookimpl` and named like the specs below. The core's
own built-ins (tcp_proxy, the STATIC cluster, ROUND_ROBIN, the file and stdout access loggers)
register through these same hooks.

Hooks run at load, config and lifecycle time only. Per-connection and per-request work goes to the
filter objects that the factories returned here build; nothing dispatches a hook per byte.

An implementation may accept a subset of a spec's arguments (pluggy's rule), so specs can grow
without breaking plugins. At start, an implementation whose name matches no spec (a typo) is an
error that names the plugin and the closest spec name; so is a module-level ``envoi_*`` function
of a plugin module that lacks ``@hookimpl`` (pytest would pick it up; envoi asks for the marker).

Each spec says whether the core acts on it yet ("Used: ..." or "Not used yet: ...").
What a plugin gets (``server``, ``context``) are the Protocols in :mod:`envoi.context`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from envoi.context import ServerContext
    from envoi.extensions import (
        AccessLoggerFactory,
        ClusterTypeFactory,
        ConfigSchema,
        HealthCheckerFactory,
        HttpFilterFactory,
        ListenerFilterFactory,
        LoadBalancerFactory,
        NetworkFilterFactory,
        StatsSinkFactory,
        TracerFactory,
    )
    from envoi.stream_info import OperatorFactory

hookspec = pluggy.HookspecMarker("envoi")

# --------------------------------------------------------------------------------------------
# Registration hooks: called once when the plugin manager is set up. Each returns the factories
# the plugin provides (an empty sequence or None when it provides none of that kind).
# --------------------------------------------------------------------------------------------


@hookspec
def envoi_network_filters() -> Sequence[NetworkFilterFactory] | None:
    """Network (L4) filter factories, e.g. ``envoy.filters.network.mongo_proxy``.

    A factory's ``create_filter_factory(config, context)`` runs once per filter chain at config
    time and returns a callback that adds fresh filter objects to every new connection.
    Used: listeners' ``filter_chains[].filters``.
    """


@hookspec
def envoi_http_filters() -> Sequence[HttpFilterFactory] | None:
    """HTTP filter factories, e.g. ``envoy.filters.http.router``. The filter types (header map,
    statuses, callbacks) are in :mod:`envoi.http.filter`, so plugins need not import each other.
    Used: by envoi-http's ``http_connection_manager`` (``http_filters``)."""


@hookspec
def envoi_listener_filters() -> Sequence[ListenerFilterFactory] | None:
    """Listener filter factories (``envoy.filters.listener.*``), run on an accepted socket before
    the filter chain is chosen (e.g. TLS inspection). Not used yet: ``listener_filters`` are a
    config error."""


@hookspec
def envoi_cluster_types() -> Sequence[ClusterTypeFactory] | None:
    """Cluster discovery types: ``STATIC``, ``STRICT_DNS``, ``EDS``, or an extension
    ``cluster_type``. Used: ``static_resources.clusters`` (``type`` or ``cluster_type``)."""


@hookspec
def envoi_load_balancers() -> Sequence[LoadBalancerFactory] | None:
    """Load-balancing policies: ``ROUND_ROBIN``, ``LEAST_REQUEST``, ... by ``lb_policy`` name.
    Used: every cluster's ``lb_policy``."""


@hookspec
def envoi_health_checkers() -> Sequence[HealthCheckerFactory] | None:
    """Active health checkers (HTTP, TCP, gRPC, custom), by the ``HealthCheck`` oneof field
    they serve (``HealthCheckerFactory.health_check_fields``; a ``custom_health_check`` by its
    name or ``@type``). A factory returns a probe factory; the core runs the timers, timeouts,
    thresholds, stats and health flags. The contract: :mod:`envoi.upstream.health_check`."""


@hookspec
def envoi_access_loggers() -> Sequence[AccessLoggerFactory] | None:
    """Access loggers: ``envoy.access_loggers.file``, ``...stdout``, ``...stderr``, ...
    Used: tcp_proxy's and the HCM's ``access_log`` lists (``context.access_loggers``)."""


@hookspec
def envoi_stats_sinks() -> Sequence[StatsSinkFactory] | None:
    """Stats sinks (``envoy.stat_sinks.statsd``...) that receive the stats at every flush.
    Used: the bootstrap's ``stats_sinks``; the contract is :mod:`envoi.stats.sink`."""


@hookspec
def envoi_tracers() -> Sequence[TracerFactory] | None:
    """Tracers (``envoy.tracers.opentelemetry``, ``envoy.tracers.zipkin``...) for an HTTP
    connection manager's ``tracing.provider``; the contract is :mod:`envoi.tracing`. Not used
    yet: the HTTP connection manager refuses ``tracing``."""


@hookspec
def envoi_config_schemas() -> Sequence[ConfigSchema] | None:
    """Schemas for ``typed_config`` types that ``xds-protos`` does not have.

    With a schema registered, a config may name the type directly (``"@type":
    type.googleapis.com/acme.filters.network.upcase.v1.Upcase``) or wrap it in Envoy's
    ``xds.type.v3.TypedStruct``/``udpa.type.v1.TypedStruct``. Its ``parse`` gets plain data.
    Used: every ``typed_config`` (``envoi.schema.config_schema`` makes one from a dataclass).
    Each schema must declare the keys its filter implements (``ConfigSchema(fields=...)``;
    ``config_schema`` takes them from the dataclass); the core refuses every other key before
    ``parse`` runs. A factory whose config is an Envoy proto declares its fields with
    :func:`envoi.config.implements` instead.
    """


@hookspec
def envoi_access_log_operators() -> Mapping[str, OperatorFactory] | None:
    """Access-log command operators by name (``RESPONSE_CODE_DETAILS`` for
    ``%RESPONSE_CODE_DETAILS%``): each makes an operator from the command's argument at config
    time. The core registers the TCP ones (``builtin.access_log``), envoi-http the HTTP ones.
    A name registered twice is an error naming both plugins. Used: every access-log format and
    ``context.format_string`` (e.g. header values with ``%...%``)."""


@hookspec
def envoi_addoption(parser: argparse.ArgumentParser) -> None:
    """Add command-line options (``parser.add_argument``), like pytest's ``pytest_addoption``.

    Called before the command line is parsed; plugins read their values at config time from
    ``context.plugin_options`` (an ``argparse.Namespace``). Name options after the plugin
    (``--http1-codec``) so they cannot collide. Used: by ``envoi`` (the CLI) at start.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle hooks: called in this order, each once per process.
# --------------------------------------------------------------------------------------------


@hookspec
def envoi_configured(server: ServerContext) -> None:
    """The config was loaded and every listener and cluster was built; nothing is bound yet.
    Used: once, in the main process."""


@hookspec
def envoi_runtime_info(server: ServerContext) -> Mapping[str, str] | None:
    """What a plugin runs on that an operator wants to know, as ``name: description`` (e.g.
    envoi-http's ``http1_codec: httptools 0.9.0``): logged at start and shown in
    ``/server_info``'s ``runtime`` next to the event loop. Used: at start (main process) and
    by ``/server_info``."""


@hookspec
def envoi_server_started(server: ServerContext) -> None:
    """Listeners are bound and serving; ``/ready`` answers ``LIVE`` from now on. Used: once,
    in the main process."""


@hookspec
def envoi_draining(server: ServerContext) -> None:
    """Shutdown began: listeners stopped accepting; open connections get ``--drain-time-s``.
    Used: in every process that serves."""


@hookspec
def envoi_stopped(server: ServerContext) -> None:
    """The server stopped; the event loop is still running. Last chance to flush. Used: once,
    in the main process."""
