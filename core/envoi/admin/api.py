"""What the admin needs from the server, and nothing more.

The admin never reaches into listeners, clusters or the process directly: the server hands it an
object satisfying :class:`AdminServerApi`, and tests hand it a fake. The ``*Info`` dataclasses
are plain snapshots, taken when an endpoint is asked for, so the admin holds no live references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message

from envoi.plugins import Plugins
from envoi.stats.store import Store
from envoi.tap import TapHub

#: The server states Envoy reports, in ``/ready``, ``/server_info`` and ``server.state``.
SERVER_STATES = ("LIVE", "DRAINING", "PRE_INITIALIZING", "INITIALIZING")


@dataclass(frozen=True)
class ListenerInfo:
    """One listener as ``/listeners`` shows it."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class CircuitBreakerThresholds:
    """The limits of one routing priority (Envoy's defaults: 1024, 1024, 1024, 3)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True)
class HostInfo:
    """One upstream host as ``/clusters`` shows it."""

    host: str
    port: int
    hostname: str = ""
    #: Envoy's health flag string: ``healthy``, or ``/failed_active_hc/failed_outlier_check``...
    health_flags: str = "healthy"
    weight: int = 1
    priority: int = 0
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    cx_active: int = 0
    cx_connect_fail: int = 0
    cx_total: int = 0
    rq_active: int = 0
    rq_error: int = 0
    rq_success: int = 0
    rq_timeout: int = 0
    rq_pending_active: int = 0
    rq_total: int = 0
    #: Outlier detection's success rates of the last interval (-1: not computed).
    success_rate: float = -1.0
    local_origin_success_rate: float = -1.0


@dataclass(frozen=True)
class ClusterInfo:
    """One cluster as ``/clusters`` shows it."""

    name: str
    observability_name: str = ""
    added_via_api: bool = False
    default_priority: CircuitBreakerThresholds = field(default_factory=CircuitBreakerThresholds)
    high_priority: CircuitBreakerThresholds = field(default_factory=CircuitBreakerThresholds)
    hosts: list[HostInfo] = field(default_factory=list)
    #: With outlier detection: (success_rate_average, success_rate_ejection_threshold,
    #: local_origin_success_rate_average, local_origin_success_rate_ejection_threshold).
    outlier: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class CertificateInfo:
    """One TLS context as ``/certs`` shows it: its certificate chain(s) and its trusted CA.
    The entries are ``envoi.tls.certs.CertInfo`` objects."""

    cert_chain: list[Any] = field(default_factory=list)
    ca_certs: list[Any] = field(default_factory=list)


class AdminServerApi(Protocol):
    """The server as the admin sees it. Methods are called on the event loop thread and must
    not block; ``shutdown`` and ``drain_listeners`` start the work and return at once."""

    stats: Store
    plugins: Plugins
    #: The live tap's tap points and sessions (``/tap``).
    tap_hub: TapHub
    #: The loaded ``envoy.config.bootstrap.v3.Bootstrap``.
    bootstrap: Message
    @property
    def state(self) -> str:
        """One of :data:`SERVER_STATES`."""
    #: ``time.time()`` when the server started.
    start_time: float
    #: Shown as ``command_line_options`` in ``/server_info`` (Envoy's field names).
    command_line_options: dict[str, Any]

    def runtime_info(self) -> dict[str, str]:
        """Shown as ``runtime`` in ``/server_info``: the event loop and what plugins run on."""

    def stats_snapshot(self) -> Store:
        """The stats to show: ``stats`` itself, or with worker processes, a fresh store that
        sums the main process's stats and every worker's."""
        ...

    def reset_counters(self) -> None:
        """Zero every counter, in every worker too; histograms keep their data."""
        ...

    def runtime_json(self) -> str:
        """``/runtime``: the layers and every key's value per layer, as Envoy prints them."""
        ...

    def runtime_modify(self, updates: dict[str, str]) -> str | None:
        """``/runtime_modify``: set admin-layer keys (empty value: remove); an error or None."""
        ...

    def listeners_info(self) -> list[ListenerInfo]: ...

    def clusters_info(self) -> list[ClusterInfo]: ...

    def certs_info(self) -> list[CertificateInfo]:
        """Every TLS context of the config (listeners' and clusters'), for ``/certs``."""
        ...

    def healthcheck_fail(self) -> None: ...

    def healthcheck_ok(self) -> None: ...

    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None: ...

    def shutdown(self) -> None: ...
