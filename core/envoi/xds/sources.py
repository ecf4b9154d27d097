"""``ConfigSource`` (where a resource type comes from) and ``ApiConfigSource``, as envoi reads
them: a file (``path_config_source`` or the older ``path``), ``ads``, or a gRPC stream of its own
(``api_config_source`` with ``api_type`` GRPC or DELTA_GRPC). Everything else is refused with its
path, never ignored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from envoi.config import ConfigError, ConfigIssue, duration_seconds

#: Envoy's default ``initial_fetch_timeout``.
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0
_CONFIG_SOURCE_FIELDS = frozenset({"path", "path_config_source", "ads", "api_config_source",
                                   "initial_fetch_timeout", "resource_api_version"})
_API_FIELDS = frozenset({"api_type", "transport_api_version", "grpc_services",
                         "set_node_on_first_message_only"})
# envoy.config.core.v3.ApiConfigSource.ApiType
GRPC, DELTA_GRPC, AGGREGATED_GRPC, AGGREGATED_DELTA_GRPC = 2, 3, 5, 6


@dataclass(frozen=True)
class GrpcSource:
    cluster_name: str
    delta: bool
    node_on_first_only: bool = False


@dataclass(frozen=True)
class Source:
    kind: str  # "path", "ads" or "grpc"
    path: str = ""
    watched_directory: str = ""
    grpc: GrpcSource | None = None
    initial_fetch_timeout: float = DEFAULT_INITIAL_FETCH_TIMEOUT


def _unsupported(msg: Any, allowed: frozenset[str], path: str) -> list[ConfigIssue]:
    return [ConfigIssue(f"{path}.{fd.name}", "is not implemented by envoi")
            for fd, _ in msg.ListFields() if fd.name not in allowed]


def api_source(api: Any, path: str, *, aggregated: bool) -> GrpcSource:
    issues = _unsupported(api, _API_FIELDS, path)
    name = api.DESCRIPTOR.fields_by_name["api_type"].enum_type.values_by_number[
        api.api_type].name
    wanted = (AGGREGATED_GRPC, AGGREGATED_DELTA_GRPC, GRPC, DELTA_GRPC) if aggregated \
        else (GRPC, DELTA_GRPC)
    if api.api_type not in wanted:
        issues.append(ConfigIssue(path + ".api_type", f"{name} is not supported by envoi "
                                  "(GRPC and DELTA_GRPC are)"))
    if len(api.grpc_services) != 1:
        issues.append(ConfigIssue(path + ".grpc_services", "exactly one gRPC service is needed"))
    cluster = ""
    for i, svc in enumerate(api.grpc_services):
        spath = f"{path}.grpc_services[{i}]"
        issues += _unsupported(svc, frozenset({"envoy_grpc"}), spath)
        if svc.HasField("envoy_grpc"):
            issues += _unsupported(svc.envoy_grpc, frozenset({"cluster_name"}),
                                   spath + ".envoy_grpc")
            cluster = svc.envoy_grpc.cluster_name
    if issues:
        raise ConfigError(issues)
    return GrpcSource(cluster, api.api_type in (DELTA_GRPC, AGGREGATED_DELTA_GRPC),
                      api.set_node_on_first_message_only)


def _missing_path(file: str, path: str) -> list[ConfigIssue]:
    # Envoy refuses a file subscription whose file is not there at start (validate mode too),
    # rather than waiting for it to appear.
    if os.path.exists(file):
        return []
    return [ConfigIssue(path, "paths must refer to an existing path in the system: "
                              f"'{file}' does not exist")]


def config_source(cs: Any, path: str) -> Source:
    issues = _unsupported(cs, _CONFIG_SOURCE_FIELDS, path)
    timeout = DEFAULT_INITIAL_FETCH_TIMEOUT
    if cs.HasField("initial_fetch_timeout"):
        timeout = duration_seconds(cs.initial_fetch_timeout)
    kind = cs.WhichOneof("config_source_specifier")
    src: Source | None = None
    if kind == "path":
        issues += _missing_path(cs.path, path + ".path")
        src = Source("path", path=cs.path, initial_fetch_timeout=timeout)
    elif kind == "path_config_source":
        pcs = cs.path_config_source
        issues += _unsupported(pcs, frozenset({"path", "watched_directory"}),
                               path + ".path_config_source")
        issues += _missing_path(pcs.path, path + ".path_config_source.path")
        src = Source("path", path=pcs.path, watched_directory=pcs.watched_directory.path,
                     initial_fetch_timeout=timeout)
    elif kind == "ads":
        src = Source("ads", initial_fetch_timeout=timeout)
    elif kind == "api_config_source":
        try:
            src = Source("grpc", grpc=api_source(cs.api_config_source,
                                                 path + ".api_config_source", aggregated=False),
                         initial_fetch_timeout=timeout)
        except ConfigError as exc:
            issues += exc.errors
    else:
        issues.append(ConfigIssue(path, "one of path, path_config_source, ads, "
                                  "api_config_source is required"))
    if issues or src is None:
        raise ConfigError(issues)
    return src
