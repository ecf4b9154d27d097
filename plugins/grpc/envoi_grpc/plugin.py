"""envoi-grpc's plugin module (entry point ``grpc`` in group ``envoi``): registers the gRPC HTTP
filters (``grpc_stats``, ``grpc_web``) and the gRPC health checker."""

from __future__ import annotations

from collections.abc import Sequence

from envoi import hookimpl
from envoi.extensions import HealthCheckerFactory, HttpFilterFactory

from envoi_grpc.grpc_stats import GrpcStatsFactory
from envoi_grpc.grpc_web import GrpcWebFactory
from envoi_grpc.health_check import GrpcHealthChecker


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [GrpcStatsFactory(), GrpcWebFactory()]


@hookimpl
def envoi_health_checkers() -> Sequence[HealthCheckerFactory]:
    return [GrpcHealthChecker()]
