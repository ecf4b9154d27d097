"""Build listeners from ``static_resources.listeners`` (Envoy's Listener protos)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, PluginTypedConfig, unpack_typed_config
from envoi.extensions import FactoryContext, NetworkFilterFactory, strip_type_url
from envoi.network.listener import DEFAULT_BUFFER_LIMIT, ActiveListener, ChainMatch, FilterChain

if TYPE_CHECKING:
    from envoi.server import Server


def resolve_typed_config(server: Server, entry: Any, path: str) -> tuple[str | None, Any]:
    """The type URL to look a factory up by, and the config object it gets."""
    if not entry.HasField("typed_config"):
        return None, None
    cfg = unpack_typed_config(entry.typed_config, path + ".typed_config")
    if isinstance(cfg, PluginTypedConfig):
        url = strip_type_url(cfg.type_url)
        schema = server.plugins.schemas.get(url)
        if schema is not None:
            try:
                return url, schema.parse(cfg.value)
            except ConfigError:
                raise
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError([ConfigIssue(path + ".typed_config", str(exc))]) from exc
        return url, cfg
    return cfg.DESCRIPTOR.full_name, cfg


def default_config(factory: Any) -> Any:
    """The empty config of a factory named without ``typed_config``."""
    from google.protobuf import symbol_database

    for url in factory.type_urls:
        try:
            return symbol_database.Default().GetSymbol(strip_type_url(url))()
        except KeyError:
            continue
    return None


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


def build_filter_chain(server: Server, chain: Any, path: str, listener_name: str) -> FilterChain:
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
            url, cfg = resolve_typed_config(server, f, fpath)
            factory = server.plugins.lookup(
                NetworkFilterFactory,  # type: ignore[type-abstract]
                f.name, url, fpath
            )
            if cfg is None:
                cfg = default_config(factory)
            if factory.terminal and j != n - 1:
                issues.append(
                    ConfigIssue(fpath, f"terminal filter named {f.name} must be the last filter")
                )
            elif not factory.terminal and j == n - 1:
                issues.append(
                    ConfigIssue(fpath, f"non-terminal filter named {f.name} is the last filter "
                                "in a filter chain")
                )
            ctx = FactoryContext(
                server=server,
                stats=server.stats,
                scope=server.stats.root,
                cluster_manager=server.cluster_manager,
                loop=None,
                listener_name=listener_name,
                path=fpath + ".typed_config",
            )
            factories.append(factory.create_filter_factory(cfg, ctx))
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues:
        raise ConfigError(issues)
    return FilterChain(chain.name, _chain_match(chain.filter_chain_match,
                                                path + ".filter_chain_match"), factories)


def build_listener(server: Server, cfg: Any, path: str) -> ActiveListener:
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
    for i, ch in enumerate(cfg.filter_chains):
        try:
            chains.append(build_filter_chain(server, ch, f"{path}.filter_chains[{i}]", cfg.name))
        except ConfigError as exc:
            issues.extend(exc.errors)
    default = None
    if cfg.HasField("default_filter_chain"):
        try:
            default = build_filter_chain(server, cfg.default_filter_chain,
                                         path + ".default_filter_chain", cfg.name)
        except ConfigError as exc:
            issues.extend(exc.errors)
    if not chains and default is None:
        issues.append(ConfigIssue(path + ".filter_chains", "no filter chains specified"))
    if issues:
        raise ConfigError(issues)
    limit = (cfg.per_connection_buffer_limit_bytes.value
             if cfg.HasField("per_connection_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT)
    backlog = cfg.tcp_backlog_size.value if cfg.HasField("tcp_backlog_size") else 1024
    return ActiveListener(
        server,
        cfg.name or f"{sa.address}:{sa.port_value}",
        sa.address,
        sa.port_value,
        chains,
        default,
        server.stats.root,
        buffer_limit=limit,
        backlog=backlog,
        reuse_port=server.options.concurrency > 1,
        traffic_direction=_enum_name(cfg, "traffic_direction"),
        stat_name=cfg.stat_prefix,
    )
