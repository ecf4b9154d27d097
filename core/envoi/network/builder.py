"""Build listeners from ``static_resources.listeners`` (Envoy's Listener protos)."""

from __future__ import annotations

import ipaddress
from typing import Any

from envoi.config import ConfigError, ConfigIssue, address_issue, duration_seconds, implements
from envoi.extensions import ListenerFilterFactory, NetworkFilterFactory
from envoi.factory_context import FactoryContextImpl
from envoi.network.listener import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_LISTENER_FILTERS_TIMEOUT,
    ActiveListener,
    ChainMatch,
    FilterChain,
    ListenerOwner,
)
from envoi.network.listener_filter import ListenerFilterFactoryCb
from envoi.tls import context as _tls_context  # its TLS declarations, before any config check

# What of a Listener envoi acts on (envoi.config.implemented refuses every other set field).
implements("envoy.config.listener.v3.Listener",
           "name", "address", "stat_prefix", "filter_chains", "default_filter_chain",
           "per_connection_buffer_limit_bytes", "tcp_backlog_size", "listener_filters",
           "listener_filters_timeout", "traffic_direction")
implements("envoy.config.listener.v3.ListenerFilter", "name", "typed_config")
implements("envoy.config.listener.v3.FilterChain",
           "name", "filter_chain_match", "filters", "transport_socket",
           "transport_socket_connect_timeout")
# server_names, transport_protocol and application_protocols are matched against what the
# listener filters (tls_inspector) and TLS report, as in Envoy.
implements("envoy.config.listener.v3.FilterChainMatch",
           "destination_port", "prefix_ranges", "direct_source_prefix_ranges", "source_type",
           "source_prefix_ranges", "source_ports", "server_names", "transport_protocol",
           "application_protocols")
implements("envoy.config.listener.v3.Filter", "name", "typed_config")
implements("envoy.config.core.v3.CidrRange", "address_prefix", "prefix_len")
# Listeners, the admin and cluster endpoints: an IP (or, for DNS clusters, a name) and a port.
# protocol: listeners refuse UDP below.
implements("envoy.config.core.v3.Address", "socket_address")
implements("envoy.config.core.v3.SocketAddress", "address", "port_value", "protocol")
del _tls_context


def _enum_name(msg: Any, field: str) -> str:
    fd = msg.DESCRIPTOR.fields_by_name[field]
    return str(fd.enum_type.values_by_number[getattr(msg, field)].name)


def _networks(ranges: Any, path: str) -> list[Any]:
    out = []
    for i, r in enumerate(ranges):
        try:
            plen = r.prefix_len.value if r.HasField("prefix_len") else None
            text = r.address_prefix if plen is None else f"{r.address_prefix}/{plen}"
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError([ConfigIssue(f"{path}[{i}]", str(exc))]) from exc
    return out


def _chain_match(m: Any, path: str) -> ChainMatch:
    return ChainMatch(
        destination_port=m.destination_port.value if m.HasField("destination_port") else None,
        prefix_ranges=_networks(m.prefix_ranges, path + ".prefix_ranges"),
        server_names=[s.lower() for s in m.server_names],
        transport_protocol=m.transport_protocol,
        application_protocols=list(m.application_protocols),
        direct_source_prefix_ranges=_networks(
            m.direct_source_prefix_ranges, path + ".direct_source_prefix_ranges"
        ),
        source_type=_enum_name(m, "source_type"),
        source_prefix_ranges=_networks(m.source_prefix_ranges, path + ".source_prefix_ranges"),
        source_ports=list(m.source_ports),
    )


def build_filter_chain(context: FactoryContextImpl, chain: Any, path: str) -> FilterChain:
    issues: list[ConfigIssue] = []
    tls = None
    if chain.HasField("transport_socket"):
        from envoi.tls.context import DOWNSTREAM_TYPE, build_server_context, unpack_transport_socket

        try:
            tls_cfg = unpack_transport_socket(chain.transport_socket, path + ".transport_socket",
                                              DOWNSTREAM_TYPE)
            if tls_cfg is not None:
                tls = build_server_context(tls_cfg, path + ".transport_socket.typed_config")
        except ConfigError as exc:
            issues.extend(exc.errors)
    handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT
    if chain.HasField("transport_socket_connect_timeout"):
        handshake_timeout = duration_seconds(chain.transport_socket_connect_timeout) or \
            DEFAULT_HANDSHAKE_TIMEOUT
    factories = []
    n = len(chain.filters)
    if n == 0:
        issues.append(ConfigIssue(path + ".filters", "a filter chain needs at least one filter"))
    for j, f in enumerate(chain.filters):
        fpath = f"{path}.filters[{j}]"
        try:
            factory, cfg = context.resolve_extension(
                NetworkFilterFactory, f, fpath)  # type: ignore[type-abstract]
            if factory.terminal and j != n - 1:
                issues.append(
                    ConfigIssue(fpath, f"terminal filter named {f.name} must be the last filter")
                )
            elif not factory.terminal and j == n - 1:
                issues.append(
                    ConfigIssue(fpath, f"non-terminal filter named {f.name} is the last filter "
                                "in a filter chain")
                )
            factories.append(context.create_filter_factory(
                factory, cfg, context.with_path(fpath + ".typed_config")))
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues:
        raise ConfigError(issues)
    return FilterChain(chain.name, _chain_match(chain.filter_chain_match,
                                                path + ".filter_chain_match"), factories,
                       tls=tls, handshake_timeout=handshake_timeout)


def _create_listener_filter(ctx: FactoryContextImpl, factory: ListenerFilterFactory,
                            config: Any) -> ListenerFilterFactoryCb:
    return ctx.run_factory(factory, lambda: factory.create_filter_factory(config, ctx))


def build_listener_filters(context: FactoryContextImpl, cfg: Any, path: str
                           ) -> tuple[list[ListenerFilterFactoryCb], list[ConfigIssue]]:
    """``listener_filters``: each resolved like a network filter (by ``@type``, else name)."""
    out: list[ListenerFilterFactoryCb] = []
    issues: list[ConfigIssue] = []
    for k, lf in enumerate(cfg.listener_filters):
        lpath = f"{path}.listener_filters[{k}]"
        for unsupported in ("config_discovery", "filter_disabled"):
            if lf.HasField(unsupported):
                issues.append(ConfigIssue(f"{lpath}.{unsupported}", "not implemented by envoi"))
        try:
            factory, lcfg = context.resolve_extension(
                ListenerFilterFactory, lf, lpath)  # type: ignore[type-abstract]
            ctx = context.with_path(lpath + ".typed_config")
            out.append(_create_listener_filter(ctx, factory, lcfg))
        except ConfigError as exc:
            issues.extend(exc.errors)
    return out, issues


def build_listener(context: FactoryContextImpl, owner: ListenerOwner, cfg: Any, path: str, *,
                   reuse_port: bool = False) -> ActiveListener:
    """An ``envoy.config.listener.v3.Listener`` -> an unbound listener; ``owner`` is told of
    its connections. Raises ConfigError with every problem found."""
    issues: list[ConfigIssue] = []
    if not cfg.address.HasField("socket_address"):
        raise ConfigError([address_issue(cfg.address, path + ".address")])
    sa = cfg.address.socket_address
    if sa.protocol != 0:
        issues.append(ConfigIssue(path + ".address.socket_address.protocol",
                                  "only TCP listeners are supported"))
    try:
        ipaddress.ip_address(sa.address)
    except ValueError:
        issues.append(ConfigIssue(path + ".address.socket_address.address",
                                  f"malformed IP address: {sa.address}"))
    chains: list[FilterChain] = []
    ctx = context.with_path(path, listener_name=cfg.name,
                            traffic_direction=_enum_name(cfg, "traffic_direction"))
    listener_filters, lf_issues = build_listener_filters(ctx, cfg, path)
    issues.extend(lf_issues)
    lf_timeout = DEFAULT_LISTENER_FILTERS_TIMEOUT
    if cfg.HasField("listener_filters_timeout"):
        lf_timeout = duration_seconds(cfg.listener_filters_timeout)  # 0: no timeout
    for i, ch in enumerate(cfg.filter_chains):
        try:
            chains.append(build_filter_chain(ctx, ch, f"{path}.filter_chains[{i}]"))
        except ConfigError as exc:
            issues.extend(exc.errors)
    default = None
    if cfg.HasField("default_filter_chain"):
        try:
            default = build_filter_chain(ctx, cfg.default_filter_chain,
                                         path + ".default_filter_chain")
        except ConfigError as exc:
            issues.extend(exc.errors)
    if not cfg.filter_chains and not cfg.HasField("default_filter_chain") and sa.protocol == 0:
        # A UDP listener (refused above) has listener filters instead of filter chains.
        issues.append(ConfigIssue(path + ".filter_chains", "no filter chains specified"))
    if issues:
        raise ConfigError(issues)
    limit = (cfg.per_connection_buffer_limit_bytes.value
             if cfg.HasField("per_connection_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT)
    backlog = cfg.tcp_backlog_size.value if cfg.HasField("tcp_backlog_size") else 1024
    return ActiveListener(
        owner,
        cfg.name or f"{sa.address}:{sa.port_value}",
        sa.address,
        sa.port_value,
        chains,
        default,
        context.stats.root,
        buffer_limit=limit,
        backlog=backlog,
        reuse_port=reuse_port,
        traffic_direction=_enum_name(cfg, "traffic_direction"),
        stat_name=cfg.stat_prefix,
        listener_filters=listener_filters,
        listener_filters_timeout=lf_timeout,
        continue_on_listener_filters_timeout=cfg.continue_on_listener_filters_timeout,
    )
