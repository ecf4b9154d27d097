"""An HCM's ``rds``: its route table comes from the core's route configuration provider (RDS,
:mod:`envoi.xds.routes`) instead of ``route_config``. The provider compiles each configuration
that arrives with :func:`build` for this HCM, in every process, and hands the table over with
:func:`use`, which swaps it into the HCM's config: new streams (which read
``config.route_table``) route with it at once, streams already routed keep theirs."""

from __future__ import annotations

from typing import Any

from envoi.context import FactoryContext, RouteConfigProvider

from envoi_http.router.config import RouteTable, build_route_table
from envoi_http.router.idle import route_idle_timeouts
from envoi_http.router.idle import shortest as shortest_route_idle


def provider(config: Any, path: str, ctx: FactoryContext) -> RouteConfigProvider:
    return ctx.route_config_provider(config.rds, path + ".rds", config.stat_prefix)


def attach(rds: RouteConfigProvider, hcm_config: Any, ctx: FactoryContext) -> None:
    def build(rc: Any, path: str) -> RouteTable:
        if not rc.HasField("validate_clusters"):
            # Envoy's default for a route table from RDS: clusters are not checked (they may
            # arrive later over CDS); an inline route_config's default is to check them.
            rc = _unchecked(rc)
        return build_route_table(rc, path, ctx)

    rds.attach(hcm_config, build, use)


def _unchecked(rc: Any) -> Any:
    copy = type(rc)()
    copy.CopyFrom(rc)
    copy.validate_clusters.value = False
    return copy


def use(hcm_config: Any, table: RouteTable) -> None:
    hcm_config.route_table = table
    hcm_config.route_idle = bool(route_idle_timeouts(table))
    hcm_config.route_idle_min = shortest_route_idle(table)
