"""Factory contexts without a server, for building filters in unit tests."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from envoi.context import LocalInfo
from envoi.factory_context import FactoryContextImpl
from envoi.plugins import Plugins
from envoi.runtime import Runtime
from envoi.stats import Store
from envoi.tap import TapHub
from envoi.upstream.cluster import Cluster


class StaticClusters:
    """A cluster manager over a fixed mapping of clusters. Without a mapping it knows of no
    cluster and, like a server whose clusters arrive over CDS, does not call the names a
    config uses unknown (``dynamic_clusters``): a route table compiled alone stays valid."""

    def __init__(self, clusters: Mapping[str, Cluster] | None = None) -> None:
        self.clusters: dict[str, Cluster] = dict(clusters or {})
        self.dynamic_clusters = clusters is None

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def is_configured(self, name: str) -> bool:
        return name in self.clusters


class StandaloneServer:
    """An :class:`envoi.context.ServerContext` with no server behind it. Its state is plain
    attributes a test may set: ``draining``, ``healthcheck_failed``; ``runtime`` is a real
    runtime with an admin layer, so ``runtime.modify({"key": "value"})`` works as
    ``POST /runtime_modify`` does."""

    def __init__(self, *, stats: Store | None = None, runtime: Runtime | None = None,
                 plugin_options: argparse.Namespace | None = None,
                 clusters: Mapping[str, Cluster] | None = None,
                 local_info: LocalInfo | None = None) -> None:
        self.stats = stats if stats is not None else Store()
        #: The live tap: ``tap_hub.open(...)`` listens to what filters publish.
        self.tap_hub = TapHub.create(self.stats.root)
        self.runtime = runtime if runtime is not None else _admin_runtime(self.stats)
        self.draining = False
        self.healthcheck_failed = False
        self.cluster_manager = StaticClusters(clusters)
        self.plugin_options = plugin_options if plugin_options is not None \
            else argparse.Namespace()
        self.local_info = local_info if local_info is not None else LocalInfo()


def _admin_runtime(stats: Store) -> Runtime:
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    layered = bootstrap_pb2.LayeredRuntime()
    layer = layered.layers.add()
    layer.name = "admin"
    layer.admin_layer.SetInParent()
    return Runtime(layered, stats.root)


_plugins: Plugins | None = None


def installed_plugins() -> Plugins:
    """The installed plugins (entry points), loaded once per process."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
    return _plugins


def factory_context(*, server: StandaloneServer | None = None, plugins: Plugins | None = None,
                    path: str = "typed_config", stat_prefix: str = "test",
                    listener_name: str = "test", **server_kw: Any) -> FactoryContextImpl:
    """A factory context for unit tests: a :class:`StandaloneServer` (made from
    ``server_kw`` -- ``stats``, ``runtime``, ``plugin_options``, ``clusters`` -- unless given)
    and the installed plugins. ``stat_prefix`` is what an HTTP filter would get from its
    ``http_connection_manager``."""
    server = server if server is not None else StandaloneServer(**server_kw)
    return FactoryContextImpl(server, plugins if plugins is not None else installed_plugins(),
                              path=path, listener_name=listener_name, stat_prefix=stat_prefix)
