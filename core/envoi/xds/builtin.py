"""The EDS cluster type: a cluster whose hosts the xDS manager feeds (``envoi.xds.clusters``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import ClusterTypeFactory, FactoryContext
from envoi.upstream.host import Host

# What envoi's xDS acts on (envoi.xds.sources, envoi.xds.manager); every other field of these
# messages is refused with its path.
implements("envoy.config.bootstrap.v3.Bootstrap", "dynamic_resources")
implements("envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
           "lds_config", "cds_config", "ads_config")
implements("envoy.config.core.v3.ConfigSource", "path", "path_config_source", "ads",
           "api_config_source", "initial_fetch_timeout", "resource_api_version")
implements("envoy.config.core.v3.PathConfigSource", "path", "watched_directory")
implements("envoy.config.core.v3.WatchedDirectory", "path")
implements("envoy.config.core.v3.ApiConfigSource", "api_type", "transport_api_version",
           "grpc_services", "set_node_on_first_message_only")
implements("envoy.config.core.v3.GrpcService", "envoy_grpc")
implements("envoy.config.core.v3.GrpcService.EnvoyGrpc", "cluster_name")
implements("envoy.config.cluster.v3.Cluster", "eds_cluster_config")
implements("envoy.config.cluster.v3.Cluster.EdsClusterConfig", "eds_config", "service_name")


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
