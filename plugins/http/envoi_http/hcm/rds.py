"""An HCM's ``rds``: its route table comes from the core's route configuration provider (RDS,
:mod:`envoi.xds.routes`) instead of ``route_config``. The provider compiles each configuration
that arrives for this HCM, in every process, and hands the table over with the HCM's ``use``,
which swaps it into the HCM's config: new streams (which read ``config.route_table``) route with
it at once, streams already routed keep theirs. (The HCM passes in how it builds and uses a
table, so this module stays below both the HCM and the router.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from envoi.context import FactoryContext, RouteConfigProvider

T = TypeVar("T")


def provider(config: Any, path: str, ctx: FactoryContext) -> RouteConfigProvider:
    return ctx.route_config_provider(config.rds, path + ".rds", config.stat_prefix)


def attach(rds: RouteConfigProvider, hcm_config: Any, build_table: Callable[[Any, str], T],
           use: Callable[[Any, T], None]) -> None:
    def build(rc: Any, path: str) -> T:
        if not rc.HasField("validate_clusters"):
            # Envoy's default for a route table from RDS: clusters are not checked (they may
            # arrive later over CDS); an inline route_config's default is to check them.
            rc = _unchecked(rc)
        return build_table(rc, path)

    rds.attach(hcm_config, build, use)


def _unchecked(rc: Any) -> Any:
    copy = type(rc)()
    copy.CopyFrom(rc)
    copy.validate_clusters.value = False
    return copy
