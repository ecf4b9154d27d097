"""Which pool a request's attempt uses: HTTP/1.1 or HTTP/2, as the cluster's
``HttpProtocolOptions`` say (``router/upstream_protocol.py``), per (cluster, host, protocol).

Every cluster's options are read and checked once, when the server is configured
(``check_clusters``, from the ``envoi_configured`` hook): a field envoi does not implement is a
config error naming its path, as for every other part of the config. A cluster added later (CDS)
is read on its first request.
"""

from __future__ import annotations

from typing import Any

from envoi.config import ConfigError, ConfigIssue
from envoi.upstream.cluster import Cluster, Host

from envoi_http.codec import Backend
from envoi_http.router.auto_pool import AutoPool, auto_pool_for
from envoi_http.router.h2_pool import H2Pool, h2_pool_for
from envoi_http.router.pool import Http1Pool, pool_for
from envoi_http.router.upstream_protocol import UpstreamProtocol, choose, from_cluster

_KEY = "envoi_http_protocol"


def upstream_protocol(cluster: Cluster, path: str = "") -> UpstreamProtocol:
    """The cluster's upstream protocol, read once (ConfigError when its options are wrong)."""
    proto: UpstreamProtocol | None = cluster.extra.get(_KEY)
    if proto is None:
        cfg = cluster.config
        if cfg is None:
            proto = UpstreamProtocol()
        else:
            proto, issues = from_cluster(cfg, path or f"cluster '{cluster.name}'")
            if issues:
                raise ConfigError([ConfigIssue(p, m) for p, m in issues])
        cluster.extra[_KEY] = proto
    return proto


def check_clusters(clusters: Any) -> None:
    """Read every static cluster's protocol options now; all problems in one ConfigError."""
    issues: list[ConfigIssue] = []
    for i, cluster in enumerate(clusters.values()):
        try:
            upstream_protocol(cluster, f"static_resources.clusters[{i}]")
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues:
        raise ConfigError(issues)


def select_pool(cluster: Cluster, host: Host, backend: Backend, downstream_http2: bool,
                priority: str = "DEFAULT") -> Http1Pool | H2Pool | AutoPool:
    """The pool for one request's attempt (HTTP/1.1 with no protocol options: the usual case
    costs a dict lookup more than ``pool_for``)."""
    proto: UpstreamProtocol | None = cluster.extra.get(_KEY)
    if proto is None:
        proto = upstream_protocol(cluster)
    kind = proto.kind
    mr = proto.max_requests_per_connection or None  # (None: the cluster's deprecated field)
    if kind == "http1" or (kind == "downstream" and not downstream_http2):
        return pool_for(cluster, host, backend, mr, priority)
    if kind == "auto":
        return auto_pool_for(cluster, host, backend, proto.http2, mr, priority)
    if choose(proto, downstream_http2) == "http2":
        return h2_pool_for(cluster, host, proto.http2, mr, priority)
    return pool_for(cluster, host, backend, mr, priority)
