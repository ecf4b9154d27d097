"""envoi-grpc's plugin module (entry point ``grpc`` in group ``envoi``): registers the gRPC HTTP
filters (``grpc_stats``, ``grpc_web``, ``grpc_http1_bridge``) and the gRPC health checker."""

from __future__ import annotations

from collections.abc import Sequence

from envoi import hookimpl
from envoi.extensions import HealthCheckerFactory, HttpFilterFactory

from envoi_grpc.grpc_stats import GrpcStatsFactory
from envoi_grpc.grpc_web import GrpcWebFactory
from envoi_grpc.health_check import GrpcHealthChecker
from envoi_grpc.http1_bridge import Http1BridgeFactory


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [GrpcStatsFactory(), GrpcWebFactory(), Http1BridgeFactory()]


@hookimpl
def envoi_health_checkers() -> Sequence[HealthCheckerFactory]:
    return [GrpcHealthChecker()]
