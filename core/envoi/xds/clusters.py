"""Clusters from CDS and their endpoints from EDS, in every process.

A new or changed cluster whose hosts come from EDS *warms*: it is built but not used until its
first ``ClusterLoadAssignment`` arrives (or its ``initial_fetch_timeout`` passes); until then
the cluster it replaces, if any, keeps serving. Other clusters take over at once. A removed or
replaced cluster is only forgotten by the cluster manager: requests already on it hold it and
finish there; its health checks and outlier detection stop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from envoi.config import ConfigError, ConfigIssue
from envoi.upstream.assignment import LoadAssignment, parse_load_assignment
from envoi.upstream.cluster import Cluster
from envoi.workers.updates import UpdateRejected, WorkerUpdate, register_update
from envoi.xds.resources import CLUSTER, ENDPOINT, Resource, message_class

log = logging.getLogger("envoi.xds")


def eds_service_name(cfg: Any) -> str:
    """The ``ClusterLoadAssignment`` an EDS cluster takes: ``service_name``, else its name."""
    return str(cfg.eds_cluster_config.service_name or cfg.name)


def is_eds(cfg: Any) -> bool:
    return bool(not cfg.HasField("cluster_type") and cfg.type == cfg.EDS)


@dataclass
class PreparedClusters:
    upserts: list[tuple[str, Cluster, Resource]] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)


def build_one(server: Any, name: str, cfg: Any) -> Cluster:
    path = f"cluster '{name}'"
    state = server.xds
    if name in server.cluster_manager.clusters and name not in state.cluster_resources:
        raise ConfigError([ConfigIssue(path, "a static cluster has this name; it cannot be "
                                       "added or updated over CDS")])
    cluster: Cluster = server.cluster_manager.build(cfg, server.factory_context, path)
    cluster.added_via_api = True
    return cluster


def prepare(server: Any, payload: dict[str, Any]) -> PreparedClusters:
    planned = server.xds.planned.pop(payload["plan"], None)
    if isinstance(planned, PreparedClusters):
        return planned  # the main process built it while it checked the update
    cls = message_class(CLUSTER)
    out = PreparedClusters(removes=list(payload["removes"]))
    try:
        for name, data in payload["upserts"]:
            cfg = cls.FromString(data)
            out.upserts.append((name, build_one(server, name, cfg),
                                Resource(name, cfg, payload["version"], payload["time"])))
    except ConfigError as exc:
        raise UpdateRejected(str(exc)) from None
    return out


def commit(server: Any, prepared: PreparedClusters) -> None:
    state = server.xds
    cm = server.cluster_manager
    main = server.worker_index is None
    for name, cluster, res in prepared.upserts:
        state.cluster_resources[name] = res
        modified = name in cm.clusters or name in state.warming
        if main:
            (cm.stats.cluster_modified if modified else cm.stats.cluster_added).inc()
        old_warming = state.warming.pop(name, None)
        if old_warming is not None:
            state.stop_cluster(old_warming[0])
        if is_eds(res.message):
            held = state.assignments.get(eds_service_name(res.message))
            if held is None:
                state.warming[name] = (cluster, res)
                state.watch_endpoints(name, res.message)
                continue
            held.apply(cluster)
        state.activate(name, cluster)
    for name in prepared.removes:
        state.cluster_resources.pop(name, None)
        warming = state.warming.pop(name, None)
        if warming is not None:
            state.stop_cluster(warming[0])
        old = cm.clusters.pop(name, None)
        if old is not None:
            state.stop_cluster(old)
        if main and (old is not None or warming is not None):
            cm.stats.cluster_removed.inc()
        state.unwatch_endpoints(name)
    state.update_cluster_gauges()


UPDATE = WorkerUpdate("xds_clusters", prepare, commit)
register_update(UPDATE)


# -- EDS ----------------------------------------------------------------------------------------


def parse_assignment(cla: Any, path: str) -> LoadAssignment:
    la, _ = parse_load_assignment(cla, path)
    return la


def endpoints_prepare(server: Any, payload: dict[str, Any]) -> dict[str, LoadAssignment | None]:
    """``{service name: assignment}``; None: the assignment was removed (delta)."""
    cls = message_class(ENDPOINT)
    out: dict[str, LoadAssignment | None] = {}
    try:
        for name, data in payload["upserts"]:
            out[name] = parse_assignment(cls.FromString(data), f"endpoints '{name}'")
    except ConfigError as exc:
        raise UpdateRejected(str(exc)) from None
    for name in payload["removes"]:
        out[name] = None
    return out


def endpoints_commit(server: Any, prepared: dict[str, LoadAssignment | None]) -> None:
    state = server.xds
    for service, la in prepared.items():
        if la is None:
            state.assignments.pop(service, None)
            la = LoadAssignment()
        else:
            state.assignments[service] = la
        for name, cluster in state.clusters_for_service(service):
            changed = la.apply(cluster)
            state.counted_update(cluster, la, changed)
            if name in state.warming:
                del state.warming[name]
                state.activate(name, cluster)
    state.update_cluster_gauges()


ENDPOINTS_UPDATE = WorkerUpdate("xds_endpoints", endpoints_prepare, endpoints_commit)
register_update(ENDPOINTS_UPDATE)


def activate_prepare(server: Any, names: list[str]) -> list[str]:
    return list(names)


def activate_commit(server: Any, names: list[str]) -> None:
    """``initial_fetch_timeout`` passed without endpoints: the cluster serves with none."""
    state = server.xds
    for name in names:
        warming = state.warming.pop(name, None)
        if warming is not None:
            state.activate(name, warming[0])
    state.update_cluster_gauges()


ACTIVATE_UPDATE = WorkerUpdate("xds_activate", activate_prepare, activate_commit)
register_update(ACTIVATE_UPDATE)
