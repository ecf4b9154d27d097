"""HttpConnectionManager proto -> a frozen runtime config, once, at config time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements, refuse_unlisted
from envoi.extensions import FactoryContext, HttpFilterFactory, NetworkFilterFactory
from envoi.http.filter import HttpFilterFactoryCb
from envoi.network.filter import FilterChainBuilder, NetworkFilterFactoryCb

from envoi_http.codec.h2_options import from_proto as http2_from_proto
from envoi_http.codec.h2_options import implemented_fields as http2_fields
from envoi_http.codec.h2_stats import codec_stats
from envoi_http.hcm import rds as hcm_rds
from envoi_http.hcm.connection_manager import ConnectionManager
from envoi_http.hcm.http1 import Http1Connection
from envoi_http.hcm.http2 import Http2Connection, auto_protocol
from envoi_http.hcm.internal import internal_networks
from envoi_http.hcm.local_reply import build_local_reply
from envoi_http.hcm.path_normalization import PathNormalization
from envoi_http.hcm.route_chain import RouteChains, terminal_disabled, toggled_names
from envoi_http.hcm.settings import HcmConfig
from envoi_http.hcm.stats import HcmStats, Http1CodecStats
from envoi_http.hcm.stream import ServerProtocol
from envoi_http.hcm.tap import TAP_POINT
from envoi_http.hcm.tracing import build_tracing
from envoi_http.hcm.upgrade import upgrade_map
from envoi_http.options import http1_codec
from envoi_http.router.config import RouteTable, build_route_table
from envoi_http.router.idle import route_idle_timeouts
from envoi_http.router.idle import shortest as shortest_route_idle
from envoi_http.router.route_policies import duration_ms

ROUTER_NAME = "envoy.filters.http.router"

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
# What of the HttpConnectionManager envoi acts on; codec_type HTTP3 is refused below. The
# route table's messages are declared in router/config.py.
implements(_HCM,
           "codec_type", "stat_prefix", "route_config", "rds", "http_filters",
           "common_http_protocol_options", "http_protocol_options", "server_name",
           "max_request_headers_kb", "stream_idle_timeout", "request_timeout",
           "request_headers_timeout", "drain_timeout", "delayed_close_timeout", "access_log",
           "use_remote_address",
           "xff_num_trusted_hops", "internal_address_config", "generate_request_id",
           "preserve_external_request_id", "upgrade_configs", "normalize_path",
           "merge_slashes", "path_with_escaped_slashes_action",
           "http2_protocol_options", "tracing", "local_reply_config")
implements(_HCM + ".UpgradeConfig", "upgrade_type", "enabled")
implements(_HCM + ".InternalAddressConfig", "cidr_ranges")
implements("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
           "name", "typed_config", "disabled")
# The HCM's (downstream) protocol options. Clusters use the same messages with other fields:
# each consumer refuses in its own place what it does not act on (refuse_unlisted below).
_COMMON_OPTIONS = ("idle_timeout", "max_headers_count", "headers_with_underscores_action",
                   "max_stream_duration")
_HTTP1_OPTIONS = ("accept_http_10", "enable_trailers")
implements("envoy.config.core.v3.HttpProtocolOptions", *_COMMON_OPTIONS)
implements("envoy.config.core.v3.Http1ProtocolOptions", *_HTTP1_OPTIONS)
implements("envoy.config.core.v3.Http2ProtocolOptions", *http2_fields())


# codec_type -> the protocol half of each connection (AUTO: ALPN h2, or the first bytes decide)
_PROTOCOLS: dict[str, Callable[[Any], ServerProtocol]] = {
    "HTTP1": Http1Connection, "HTTP2": Http2Connection}


def _dur(msg: Any, name: str, default: float) -> float:
    return duration_seconds(getattr(msg, name)) if msg.HasField(name) else default


def build_http_filters(config: Any, context: FactoryContext) -> list[HttpFilterFactoryCb]:
    path = context.path + ".http_filters"
    out: list[HttpFilterFactoryCb] = []
    issues: list[ConfigIssue] = []
    n = len(config.http_filters)
    for i, f in enumerate(config.http_filters):
        fpath = f"{path}[{i}]"
        try:
            factory, cfg = context.resolve_extension(
                HttpFilterFactory, f, fpath)  # type: ignore[type-abstract]
            if f.disabled and i == n - 1:
                issues.append(ConfigIssue(fpath + ".disabled", f"Error: the last (terminal) "
                                          f"filter ({f.name}) in the chain cannot be disabled "
                                          "by default."))
            if factory.terminal and i != n - 1:
                issues.append(ConfigIssue(fpath, f"terminal filter named {f.name} must be the "
                                                 "last filter in the http filter chain"))
            elif not factory.terminal and i == n - 1:
                issues.append(ConfigIssue(fpath, f"non-terminal filter named {f.name} is the "
                                                 "last filter in a http filter chain"))
            sub = context.with_path(fpath + ".typed_config", stat_prefix=config.stat_prefix)
            out.append(sub.run_factory(factory,
                                       lambda: factory.create_filter_factory(cfg, sub)))  # noqa: B023
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues:
        raise ConfigError(issues)
    return out


class HttpConnectionManagerFactory(NetworkFilterFactory):
    name = "envoy.filters.network.http_connection_manager"
    aliases = ("envoy.http_connection_manager",)
    type_urls = ("envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",)
    terminal = True

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        path = context.path
        issues: list[ConfigIssue] = []
        if not config.stat_prefix:
            issues.append(ConfigIssue(path + ".stat_prefix", "required"))
        codec_type = config.DESCRIPTOR.fields_by_name["codec_type"].enum_type.values_by_number[
            config.codec_type].name
        if codec_type not in ("AUTO", "HTTP1", "HTTP2"):
            issues.append(ConfigIssue(path + ".codec_type", f"{codec_type} is not supported yet"))
        h2_opts, h2_issues = http2_from_proto(config.http2_protocol_options,
                                              path + ".http2_protocol_options")
        issues.extend(ConfigIssue(p, msg) for p, msg in h2_issues)
        if h2_opts.allow_connect:
            issues.append(ConfigIssue(path + ".http2_protocol_options.allow_connect",
                                      "extended CONNECT is not implemented by envoi yet"))
        issues += refuse_unlisted(config.common_http_protocol_options, _COMMON_OPTIONS,
                                  path + ".common_http_protocol_options")
        issues += refuse_unlisted(config.http_protocol_options, _HTTP1_OPTIONS,
                                  path + ".http_protocol_options")
        # Make the context path point at this HCM's typed_config for nested errors.
        ctx = context
        cm = context.cluster_manager
        table = rds = None
        try:
            if config.HasField("route_config"):
                table = build_route_table(config.route_config, path + ".route_config", ctx)
            elif config.HasField("rds"):  # the table comes (and changes) over RDS: hcm/rds.py
                rds = hcm_rds.provider(config, path, ctx)
        except ConfigError as exc:
            issues.extend(exc.errors)
        try:
            filters = build_http_filters(config, ctx)
        except ConfigError as exc:
            issues.extend(exc.errors)
            filters = []
        tracing = None
        try:
            tracing = build_tracing(config, path, ctx, config.stat_prefix)
        except ConfigError as exc:
            issues.extend(exc.errors)
        names = tuple(f.name for f in config.http_filters)
        default_off = tuple(f.disabled for f in config.http_filters)
        chains = None
        if filters and (any(default_off) or toggled_names(table) & set(names)):
            issues += terminal_disabled(table, names[-1], path + ".route_config")
            chains = RouteChains(tuple(filters), names, default_off)
        local_reply = None
        try:
            local_reply = build_local_reply(config, path, ctx)
        except ConfigError as exc:
            issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)
        del cm
        root = context.stats.root
        http1_stats = Http1CodecStats(root.scope("http1"))
        hpo = config.http_protocol_options
        common = config.common_http_protocol_options
        backend = http1_codec(context)
        cfg = HcmConfig(
            stat_prefix=config.stat_prefix,
            stats=HcmStats(root.scope(f"http.{config.stat_prefix}")),
            root=root,
            codec_backend=backend,
            auto_codec=codec_type == "AUTO",
            use_remote_address=config.use_remote_address.value,
            xff_num_trusted_hops=config.xff_num_trusted_hops,
            generate_request_id=(config.generate_request_id.value
                                 if config.HasField("generate_request_id") else True),
            server_name=(config.server_name or "envoy").encode(),
            max_request_headers_kb=(config.max_request_headers_kb.value
                                    if config.HasField("max_request_headers_kb") else 60),
            max_headers_count=(common.max_headers_count.value
                               if common.HasField("max_headers_count") else 100),
            accept_http_10=hpo.accept_http_10,
            stream_idle_timeout=_dur(config, "stream_idle_timeout", 300.0),
            request_timeout=_dur(config, "request_timeout", 0.0),
            request_headers_timeout=_dur(config, "request_headers_timeout", 0.0),
            idle_timeout=_dur(common, "idle_timeout", 3600.0),
            filter_factories=tuple(filters),
            filter_names=names,
            route_chains=chains,
            route_table=table,
            access_logs=tuple(context.access_loggers(config.access_log, path + ".access_log")),
            context=context,
            enable_trailers=hpo.enable_trailers,
            preserve_external_request_id=config.preserve_external_request_id,
            drain_timeout=_dur(config, "drain_timeout", 5.0),
            delayed_close_timeout=_dur(config, "delayed_close_timeout", 1.0),
            upgrade_map=upgrade_map(config.upgrade_configs),
            underscores_action=common.headers_with_underscores_action,
            http1_stats=http1_stats,
            route_idle=bool(route_idle_timeouts(table)),
            route_idle_min=shortest_route_idle(table),
            internal_nets=internal_networks(config),
            path_normalization=PathNormalization.from_proto(config),
            # AUTO: ALPN h2, or the first bytes (the HTTP/2 preface or not), decide
            protocol=_PROTOCOLS.get(codec_type, auto_protocol),
            http2_options=h2_opts,
            http2_stats=codec_stats(root),
            tracing=tracing,
            local_reply=local_reply,
            max_stream_duration=(duration_ms(common.max_stream_duration)
                                 if common.HasField("max_stream_duration") else 0),
            tap=context.tap_point(TAP_POINT),
        )
        cfg.durations = bool(cfg.max_stream_duration) or route_durations(table)

        if rds is not None:
            hcm_rds.attach(rds, cfg, lambda rc, p: build_route_table(rc, p, ctx), _use_table)

        def add_filter(builder: FilterChainBuilder) -> None:
            builder.add_read_filter(ConnectionManager(cfg))

        return add_filter


def _use_table(cfg: HcmConfig, table: RouteTable) -> None:
    """A route table from RDS takes over: new streams route with it."""
    cfg.route_table = table
    cfg.route_idle = bool(route_idle_timeouts(table))
    cfg.route_idle_min = shortest_route_idle(table)
    cfg.durations = bool(cfg.max_stream_duration) or route_durations(table)


def route_durations(table: RouteTable | None) -> bool:
    """Some route of ``table`` sets max_stream_duration (hcm/duration.py)."""
    return table is not None and any(r.max_duration is not None for vh in table.virtual_hosts()
                                     for r in vh.routes)
