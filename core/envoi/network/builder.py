"""Build listeners from ``static_resources.listeners`` (Envoy's Listener protos)."""

from __future__ import annotations

import ipaddress
from typing import Any

from envoi.config import ConfigError, ConfigIssue
from envoi.extensions import NetworkFilterFactory
from envoi.factory_context import FactoryContextImpl
from envoi.network.listener import (
    DEFAULT_BUFFER_LIMIT,
    ActiveListener,
    ChainMatch,
    FilterChain,
    ListenerOwner,
)


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
    if chain.HasField("transport_socket"):
        issues.append(
            ConfigIssue(path + ".transport_socket", "TLS transport sockets are not supported yet")
        )
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
                                                path + ".filter_chain_match"), factories)


def build_listener(context: FactoryContextImpl, owner: ListenerOwner, cfg: Any, path: str, *,
                   reuse_port: bool = False) -> ActiveListener:
    """An ``envoy.config.listener.v3.Listener`` -> an unbound listener; ``owner`` is told of
    its connections. Raises ConfigError with every problem found."""
    issues: list[ConfigIssue] = []
    if not cfg.address.HasField("socket_address"):
        raise ConfigError([ConfigIssue(path + ".address", "only socket_address is supported")])
    sa = cfg.address.socket_address
    if sa.protocol != 0:
        issues.append(ConfigIssue(path + ".address.socket_address.protocol",
                                  "only TCP listeners are supported"))
    try:
        ipaddress.ip_address(sa.address)
    except ValueError:
        issues.append(ConfigIssue(path + ".address.socket_address.address",
                                  f"malformed IP address: {sa.address}"))
    if cfg.listener_filters:
        for k, lf in enumerate(cfg.listener_filters):
            issues.append(ConfigIssue(f"{path}.listener_filters[{k}]",
                                      f"listener filter {lf.name} is not supported yet"))
    chains: list[FilterChain] = []
    ctx = context.with_path(path, listener_name=cfg.name)
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
    if not cfg.filter_chains and not cfg.HasField("default_filter_chain"):
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
    )
