"""The EDS cluster type: a cluster whose hosts the xDS manager feeds (``envoi.xds.clusters``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue
from envoi.extensions import ClusterTypeFactory, FactoryContext
from envoi.upstream.host import Host


class EdsDiscovery:
    """No hosts until the first ``ClusterLoadAssignment``; nothing to poll (updates arrive)."""

    def resolve_now(self, cluster: Any) -> list[Host]:
        return []

    async def run(self, cluster: Any) -> None:
        return None


class EdsCluster(ClusterTypeFactory):
    name = "envoy.cluster.eds"
    cluster_types = ("EDS",)

    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> EdsDiscovery:
        ecc = cluster_config.eds_cluster_config
        path = context.path + ".eds_cluster_config"
        if not ecc.HasField("eds_config"):
            raise ConfigError([ConfigIssue(path + ".eds_config", "required for an EDS cluster")])
        if cluster_config.HasField("load_assignment"):
            raise ConfigError([ConfigIssue(context.path + ".load_assignment",
                                           "an EDS cluster takes its endpoints from EDS")])
        from envoi.xds.sources import config_source

        config_source(ecc.eds_config, path + ".eds_config")
        return EdsDiscovery()


@hookimpl
def envoi_cluster_types() -> Sequence[ClusterTypeFactory]:
    return [EdsCluster()]
