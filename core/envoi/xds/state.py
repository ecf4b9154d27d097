"""What dynamic configuration holds in each process (``server.xds``): the LDS listeners, the
CDS clusters (active and warming), the EDS assignments, and the listeners still draining.

The update functions of :mod:`envoi.xds.listeners` and :mod:`envoi.xds.clusters` change it; they
run in the main process and in every worker (:mod:`envoi.workers.updates`), so each process holds
the same config. Only the main process counts stats and talks to control planes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from envoi.network.listener import ActiveListener
from envoi.upstream.assignment import LoadAssignment
from envoi.upstream.cluster import Cluster
from envoi.xds.resources import Resource, UpdateFailure

log = logging.getLogger("envoi.xds")


class DynamicState:
    def __init__(self, server: Any) -> None:
        self.server = server
        #: LDS listeners by name, their addresses as configured, and their resources.
        self.listeners: dict[str, ActiveListener] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.resources: dict[str, Resource] = {}
        #: Listeners waiting for their route configurations (RDS), and their resources.
        self.warming_listeners: dict[str, tuple[ActiveListener, Resource]] = {}
        #: The last refused update of each listener (``error_state`` in /config_dump), until
        #: one is accepted: the refused resource, when, and why (the main process only).
        self.listener_errors: dict[str, UpdateFailure] = {}
        #: Replaced or removed listeners whose connections are still open.
        self.draining: dict[ActiveListener, asyncio.TimerHandle | None] = {}
        #: CDS clusters' resources (active or warming), the warming clusters, and the EDS
        #: assignments by service name (kept for clusters that arrive later).
        self.cluster_resources: dict[str, Resource] = {}
        self.warming: dict[str, tuple[Cluster, Resource]] = {}
        self.assignments: dict[str, LoadAssignment] = {}
        self.endpoint_versions: dict[str, tuple[str, float]] = {}
        #: Updates the main process built while checking them, by plan id (prepare finds them).
        self.planned: dict[int, Any] = {}
        self.serving = False
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        #: Told when an EDS cluster starts or stops needing endpoints (the main's manager).
        self.on_endpoint_interest: Callable[[], None] | None = None

    # -- listeners ------------------------------------------------------------------------------

    def start(self, lst: ActiveListener) -> None:
        from envoi.xds.listeners import start_listener

        asyncio.get_running_loop().create_task(start_listener(lst))

    def drain(self, lst: ActiveListener) -> None:
        """Stop accepting on ``lst`` and drain its connections over ``--drain-time-s``."""
        server = self.server
        lst.accepting_wanted = False
        if lst in server.listeners:
            server.listeners.remove(lst)
        lst.drain()
        # Its own descriptor only: a successor on the same address holds a dup of the
        # listening socket, so the kernel's accept queue lives on.
        for s in (lst.sock, *lst.worker_socks):
            if s is not None and s.fileno() >= 0:
                s.close()
        lst.worker_socks = []
        if not lst.connections and not lst.pending_sockets:
            return
        loop = asyncio.get_running_loop()
        self.draining[lst] = loop.call_later(server.options.drain_time_s,
                                             self._drain_over, lst)
        self._draining_gauge()

    def _drain_over(self, lst: ActiveListener) -> None:
        self.draining[lst] = None
        lst.abandon_pending()
        for conn in list(lst.connections):
            conn.close()
        self.connection_closed(lst)

    def connection_closed(self, lst: ActiveListener) -> None:
        if lst in self.draining and not lst.connections and not lst.pending_sockets:
            timer = self.draining.pop(lst)
            if timer is not None:
                timer.cancel()
            self._draining_gauge()

    def _draining_gauge(self) -> None:
        if self.server.worker_index is None:
            self.server.lm_stats.total_listeners_draining.set(len(self.draining))

    def activate_ready_listeners(self) -> None:
        """Warming listeners whose route configurations are all here (or timed out) serve."""
        from envoi.xds.listeners import activate

        ready = [n for n, (lst, _) in self.warming_listeners.items()
                 if self.server.route_configs.ready(lst)]
        for name in ready:
            lst, res = self.warming_listeners.pop(name)
            activate(self.server, name, lst, res)
        if ready:
            self.listener_gauges()

    def listener_gauges(self) -> None:
        if self.server.worker_index is None:
            lm = self.server.lm_stats
            lm.total_listeners_active.set(len(self.server.listeners))
            lm.total_listeners_warming.set(len(self.warming_listeners))

    def open_connections(self) -> int:
        return sum(len(lst.connections) for lst in self.draining)

    # -- clusters -------------------------------------------------------------------------------

    def activate(self, name: str, cluster: Cluster) -> None:
        cm = self.server.cluster_manager
        old = cm.clusters.get(name)
        cm.clusters[name] = cluster
        if old is not None and old is not cluster:
            self.stop_cluster(old)
        self.start_cluster(name, cluster)

    def start_cluster(self, name: str, cluster: Cluster) -> None:
        if not self.serving:
            return  # the server starts it with the others
        from envoi.upstream.cluster_manager import _run_detector

        loop = asyncio.get_running_loop()
        server = self.server
        tasks = self._tasks.setdefault(name, [])
        serves = server.pool is None  # a single process or a worker serves traffic
        if server.worker_index is None:  # health checks run once per server, in the main
            for hc in cluster.health_checkers:
                hc.start(loop)
            if server.pool is not None and cluster.health_checkers:
                server.watch_cluster_health(cluster)
        if serves and cluster.outlier_detector is not None:
            tasks.append(loop.create_task(_run_detector(cluster.outlier_detector)))
        if cluster.discovery is not None:
            tasks.append(loop.create_task(cluster.discovery.run(cluster)))

    def stop_cluster(self, cluster: Cluster) -> None:
        for hc in cluster.health_checkers:
            hc.stop()
        for task in self._tasks.pop(cluster.name, []):
            task.cancel()

    def clusters_for_service(self, service: str) -> Iterator[tuple[str, Cluster]]:
        from envoi.xds.clusters import eds_service_name, is_eds

        for name, cluster in list(self.server.cluster_manager.clusters.items()):
            if is_eds(cluster.config) and eds_service_name(cluster.config) == service:
                yield name, cluster
        for name, (cluster, res) in list(self.warming.items()):
            if eds_service_name(res.message) == service:
                yield name, cluster

    def counted_update(self, cluster: Cluster, la: LoadAssignment, changed: bool) -> None:
        """An EDS assignment applied: Envoy's ``update_*`` counts, in the main process."""
        if self.server.worker_index is not None:
            return
        st = cluster.stats
        st.update_success.inc()
        st.max_host_weight.set(max((h.weight for h in la.hosts), default=0))
        st.scope.gauge("update_time").set(int(time.time() * 1000))
        if not la.hosts:
            st.update_empty.inc()
        if not changed:
            st.update_no_rebuild.inc()

    def watch_endpoints(self, name: str, cfg: Any) -> None:
        if self.on_endpoint_interest is not None:
            self.on_endpoint_interest()

    def unwatch_endpoints(self, name: str) -> None:
        if self.on_endpoint_interest is not None:
            self.on_endpoint_interest()

    def update_cluster_gauges(self) -> None:
        if self.server.worker_index is not None:
            return
        cm = self.server.cluster_manager
        cm.stats.active_clusters.set(len(cm.clusters))
        cm.stats.warming_clusters.set(len(self.warming))
