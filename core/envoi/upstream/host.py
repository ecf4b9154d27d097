"""Hosts, their health flags, and the per-priority host sets of a cluster.

Every source of hosts (STATIC config, DNS answers, EDS assignments) ends in
:meth:`envoi.upstream.cluster.Cluster.update_hosts`, which keeps the :class:`Host` object of an
address that stays (so its counters, health flags and in-flight requests carry on) and tells the
health checker, the outlier detector and the load balancer what changed.
"""

from __future__ import annotations

from typing import Any

# Envoy's health flags, in the order ``/clusters`` prints them (HostUtility::healthFlagsToString).
FAILED_ACTIVE_HC = "failed_active_hc"
FAILED_OUTLIER_CHECK = "failed_outlier_check"
FAILED_EDS_HEALTH = "failed_eds_health"
DEGRADED_ACTIVE_HC = "degraded_active_hc"
DEGRADED_EDS_HEALTH = "degraded_eds_health"
PENDING_DYNAMIC_REMOVAL = "pending_dynamic_removal"
PENDING_ACTIVE_HC = "pending_active_hc"
EXCLUDED_VIA_IMMEDIATE_HC_FAIL = "excluded_via_immediate_hc_fail"
ACTIVE_HC_TIMEOUT = "active_hc_timeout"
EDS_STATUS_DRAINING = "eds_status_draining"
FLAG_ORDER = (FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, FAILED_EDS_HEALTH, DEGRADED_ACTIVE_HC,
              DEGRADED_EDS_HEALTH, PENDING_DYNAMIC_REMOVAL, PENDING_ACTIVE_HC,
              EXCLUDED_VIA_IMMEDIATE_HC_FAIL, ACTIVE_HC_TIMEOUT, EDS_STATUS_DRAINING)
#: A host with one of these is unhealthy (Envoy's coarse health UNHEALTHY).
UNHEALTHY_FLAGS = frozenset((FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, FAILED_EDS_HEALTH,
                             EDS_STATUS_DRAINING))
DEGRADED_FLAGS = frozenset((DEGRADED_ACTIVE_HC, DEGRADED_EDS_HEALTH))
#: Excluded hosts take no traffic and do not count towards the panic threshold.
EXCLUDED_FLAGS = frozenset((PENDING_ACTIVE_HC, EXCLUDED_VIA_IMMEDIATE_HC_FAIL))


def health_flags_string(flags: set[str] | frozenset[str]) -> str:
    """``healthy`` or ``/failed_active_hc/failed_outlier_check``..., as Envoy prints them."""
    if not flags:
        return "healthy"
    return "".join("/" + f for f in FLAG_ORDER if f in flags)


class Host:
    """One upstream endpoint. The per-host counters are what ``/clusters`` shows."""

    __slots__ = (
        "address",
        "cx_active",
        "cx_connect_fail",
        "cx_total",
        "health_check_address",
        "health_flags",
        "hostname",
        "local_origin_success_rate",
        "locality",
        "outlier",
        "port",
        "priority",
        "rq_active",
        "rq_error",
        "rq_pending_active",
        "rq_success",
        "rq_timeout",
        "rq_total",
        "success_rate",
        "weight",
    )

    def __init__(
        self,
        address: str,
        port: int,
        *,
        hostname: str = "",
        weight: int = 1,
        priority: int = 0,
        locality: tuple[str, str, str] = ("", "", ""),
        health_check_address: tuple[str, int] | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.hostname = hostname
        self.weight = weight
        self.priority = priority
        self.locality = locality
        #: Where active health checks go (``health_check_config.port_value``/``address``);
        #: None: the host's own address.
        self.health_check_address = health_check_address
        self.health_flags: set[str] = set()
        #: The outlier detector's per-host monitor (``envoi.upstream.outlier``), when the cluster
        #: has ``outlier_detection``; the router and tcp_proxy report results to it.
        self.outlier: Any = None
        self.success_rate = -1.0
        self.local_origin_success_rate = -1.0
        self.cx_active = 0
        self.cx_connect_fail = 0
        self.cx_total = 0
        self.rq_active = 0
        self.rq_error = 0
        self.rq_pending_active = 0
        self.rq_success = 0
        self.rq_timeout = 0
        self.rq_total = 0

    @property
    def healthy(self) -> bool:
        flags = self.health_flags
        return not flags or not (flags & UNHEALTHY_FLAGS or flags & EXCLUDED_FLAGS
                                 or flags & DEGRADED_FLAGS)

    @property
    def degraded(self) -> bool:
        flags = self.health_flags
        return bool(flags & DEGRADED_FLAGS) and not (flags & UNHEALTHY_FLAGS
                                                     or flags & EXCLUDED_FLAGS)

    @property
    def excluded(self) -> bool:
        return bool(self.health_flags & EXCLUDED_FLAGS)

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def address_string(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        return f"Host({self.address_string})"


class HostSet:
    """The hosts of one priority, with what the load balancer needs to know about them."""

    __slots__ = ("hosts", "locality_weights", "overprovisioning_factor", "priority")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.hosts: list[Host] = []
        #: ``load_balancing_weight`` per locality (region, zone, sub_zone), when given.
        self.locality_weights: dict[tuple[str, str, str], int] = {}
        #: Envoy's ``overprovisioning_factor`` in percent (140 by default).
        self.overprovisioning_factor = 140

    @property
    def healthy_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.healthy]

    @property
    def degraded_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.degraded]

    @property
    def excluded_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.excluded]
