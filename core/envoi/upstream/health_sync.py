"""Active health checking once per server, seen by every worker.

With ``--concurrency N`` the main process runs the health checks (N workers must not multiply
the probes a backend sees). When a host's active-check flags change, :class:`HealthBroadcaster`
sends every changed cluster's flags to the workers (the ``host_health`` worker operation), at
once for the first change after a quiet spell and then at most once per merge window
(``common_lb_config.update_merge_window``, Envoy's default 1 s), so a flapping host cannot flood
the workers; each worker applies them to its own hosts (matched by address and priority) and
rebuilds its load balancer. A worker forked later inherits the main process's flags.

Only the flags active health checking owns travel; outlier detection runs in each worker on
that worker's own traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from envoi.config import duration_seconds
from envoi.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    DEGRADED_ACTIVE_HC,
    EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
    FAILED_ACTIVE_HC,
    PENDING_ACTIVE_HC,
)
from envoi.workers.control import OpContext, register_worker_op

if TYPE_CHECKING:
    from envoi.upstream.cluster import Cluster
    from envoi.upstream.cluster_manager import ClusterManager

log = logging.getLogger("envoi.upstream")

HC_FLAGS = frozenset((FAILED_ACTIVE_HC, DEGRADED_ACTIVE_HC, PENDING_ACTIVE_HC,
                      EXCLUDED_VIA_IMMEDIATE_HC_FAIL, ACTIVE_HC_TIMEOUT))
DEFAULT_MERGE_WINDOW = 1.0
#: cluster name -> [(address, port, priority, sorted active-check flags)]
Payload = dict[str, list[tuple[str, int, int, tuple[str, ...]]]]


def health_payload(cluster: Cluster) -> list[tuple[str, int, int, tuple[str, ...]]]:
    return [(h.address, h.port, h.priority, tuple(sorted(h.health_flags & HC_FLAGS)))
            for h in cluster.hosts]


def apply_host_health(cm: ClusterManager, payload: Payload) -> int:
    """Apply the main process's active-check flags to this process's hosts; returns how many
    hosts changed."""
    changed = 0
    for name, hosts in payload.items():
        cluster = cm.get(name)
        if cluster is None:
            continue
        by_key = {(h.address, h.port, h.priority): h for h in cluster.hosts}
        touched = False
        for address, port, priority, flags in hosts:
            host = by_key.get((address, port, priority))
            if host is None:
                continue  # a host this worker's DNS has not seen (yet)
            new = (host.health_flags - HC_FLAGS) | set(flags)
            if new != host.health_flags:
                host.health_flags = new
                touched = True
                changed += 1
        if touched:
            cluster.health_changed()
    return changed


def _op_host_health(ctx: OpContext, msg: dict[str, Any]) -> Any:
    """In a worker: the main process's active health checks changed some hosts' flags."""
    return apply_host_health(ctx.server.cluster_manager, msg["clusters"])


register_worker_op("host_health", _op_host_health)


def merge_window(cluster: Cluster) -> float:
    cfg = cluster.config
    if cfg is not None and cfg.common_lb_config.HasField("update_merge_window"):
        return duration_seconds(cfg.common_lb_config.update_merge_window)
    return DEFAULT_MERGE_WINDOW


class HealthBroadcaster:
    """In the main process: pushes active-check flag changes to the workers."""

    def __init__(self, cm: ClusterManager, send: Callable[[dict[str, Any]], object],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.send = send
        self.loop = loop
        self.dirty: set[str] = set()
        self.cm = cm
        self._timer: asyncio.TimerHandle | None = None
        self._last = -1e9
        self.window = min((merge_window(c) for c in cm.clusters.values()
                           if c.health_checkers), default=DEFAULT_MERGE_WINDOW)
        for c in cm.clusters.values():
            if c.health_checkers:
                c.add_health_change_cb(self.changed)

    def changed(self, cluster: Cluster) -> None:
        self.dirty.add(cluster.name)
        if self._timer is not None:
            return  # merged into the pending send
        wait = self._last + self.window - self.loop.time()
        if wait <= 0:
            self.flush()
        else:
            self._timer = self.loop.call_later(wait, self.flush)

    def flush(self) -> None:
        self._timer = None
        if not self.dirty:
            return
        self._last = self.loop.time()
        payload: Payload = {}
        for name in sorted(self.dirty):
            cluster = self.cm.get(name)
            if cluster is not None:
                payload[name] = health_payload(cluster)
        self.dirty.clear()
        try:
            self.send({"op": "host_health", "clusters": payload})
        except Exception:  # the workers' supervisor deals with a worker that is gone
            log.exception("sending host health to the workers failed")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
