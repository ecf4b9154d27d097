"""envoi-http's registration: the HCM network filter and the built-in HTTP filters."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from envoi import hookimpl
from envoi.extensions import HttpFilterFactory, NetworkFilterFactory, ServerContext
from envoi.stream_info import OperatorFactory

from envoi_http.access_log import OPERATORS
from envoi_http.hcm.config import HttpConnectionManagerFactory
from envoi_http.options import add_options

# Its field declarations (clusters' HTTP protocol options) must exist before any config is
# checked, also when no listener speaks HTTP (a gRPC xDS cluster, say).
from envoi_http.router import upstream_protocol  # noqa: F401
from envoi_http.router.factory import RouterFactory


@hookimpl
def envoi_addoption(parser: argparse.ArgumentParser) -> None:
    add_options(parser)  # --http1-codec h11|httptools|auto


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [HttpConnectionManagerFactory()]


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    from envoi_http.filters.buffer import BufferFactory
    from envoi_http.filters.fault import FaultFactory
    from envoi_http.filters.health_check import HealthCheckFactory

    return [RouterFactory(), HealthCheckFactory(), FaultFactory(), BufferFactory()]


@hookimpl
def envoi_configured(server: ServerContext) -> None:
    """Every cluster's HTTP protocol options, checked once (router/pools.py)."""
    from envoi_http.router.pools import check_clusters

    check_clusters(server.cluster_manager.clusters)


@hookimpl
def envoi_access_log_operators() -> Mapping[str, OperatorFactory]:
    return OPERATORS  # %RESPONSE_CODE_DETAILS%, %ROUTE_NAME%, ...


@hookimpl
def envoi_draining(server: ServerContext) -> None:
    """Envoy's drain close: idle HTTP connections close at once, busy ones after their current
    response (which says ``connection: close``)."""
    from envoi_http.hcm.connection_manager import drain_all

    drain_all()


@hookimpl
def envoi_runtime_info(server: ServerContext) -> Mapping[str, str]:
    """The HTTP/1.1 codec back-end ``--http1-codec`` resolves to."""
    from envoi_http.codec import describe_backend
    from envoi_http.options import http1_codec

    return {"http1_codec": describe_backend(http1_codec(server))}
