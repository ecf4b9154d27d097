"""The bodies of ``/clusters``, ``/listeners``, ``/server_info`` and ``/config_dump``.

Where Envoy answers with a protobuf message rendered as JSON (``envoy.admin.v3.*``), we build that
very message from ``xds-protos`` and render it with ``json_format``, so the field names, the enum
spellings and the omission of default values are Envoy's without us restating them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from envoy.admin.v3 import (
    certs_pb2,
    clusters_pb2,
    config_dump_pb2,
    config_dump_shared_pb2,
    listeners_pb2,
    metrics_pb2,
    server_info_pb2,
)
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from envoi import __version__
from envoi.admin.api import AdminServerApi, CircuitBreakerThresholds, ClusterInfo, HostInfo
from envoi.upstream.host import HostSet

#: What Envoy calls its hot-restart protocol version; envoi has no hot restart.
HOT_RESTART_VERSION = "disabled"


def to_json(message: Message) -> str:
    # Envoy 1.39 pretty-prints admin JSON with one-space indentation and proto field names.
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=1) + "\n"


def _address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


# -------------------------------------------------------------------------------- /listeners


def listeners_text(server: AdminServerApi) -> str:
    return "".join(
        f"{li.name}::{_address_text(li.host, li.port)}\n" for li in server.listeners_info()
    )


def listeners_json(server: AdminServerApi) -> str:
    msg = listeners_pb2.Listeners()
    for li in server.listeners_info():
        msg.listener_statuses.add(name=li.name, local_address=_socket_address(li.host, li.port))
    return to_json(msg)


# --------------------------------------------------------------------------------- /clusters

# Host counters then gauges, in the order Envoy keeps them per host.
_HOST_COUNTERS = ("cx_connect_fail", "cx_total", "rq_error", "rq_success", "rq_timeout",
                  "rq_total")
_HOST_GAUGES = ("cx_active", "rq_active", "rq_pending_active")


def _thresholds_text(name: str, priority: str, t: CircuitBreakerThresholds) -> list[str]:
    return [
        f"{name}::{priority}_priority::max_connections::{t.max_connections}",
        f"{name}::{priority}_priority::max_pending_requests::{t.max_pending_requests}",
        f"{name}::{priority}_priority::max_requests::{t.max_requests}",
        f"{name}::{priority}_priority::max_retries::{t.max_retries}",
    ]


def _host_text(cluster: str, h: HostInfo) -> list[str]:
    prefix = f"{cluster}::{_address_text(h.host, h.port)}::"
    stats = {n: getattr(h, n) for n in (*_HOST_COUNTERS, *_HOST_GAUGES)}
    lines = [f"{prefix}{n}::{stats[n]}" for n in sorted(stats)]
    lines += [
        f"{prefix}hostname::{h.hostname}",
        f"{prefix}health_flags::{h.health_flags}",
        f"{prefix}weight::{h.weight}",
        f"{prefix}region::{h.region}",
        f"{prefix}zone::{h.zone}",
        f"{prefix}sub_zone::{h.sub_zone}",
        f"{prefix}canary::false",
        f"{prefix}priority::{h.priority}",
        # Outlier detection's last success rates; -1 for "not computed", as Envoy prints.
        f"{prefix}success_rate::{_g(h.success_rate)}",
        f"{prefix}local_origin_success_rate::{_g(h.local_origin_success_rate)}",
    ]
    return lines


def _g(v: float) -> str:
    """A double as Envoy's ``{:g}`` prints it (-1, 99.5, 87.6543)."""
    return f"{v:g}"


def clusters_text(server: AdminServerApi) -> str:
    lines: list[str] = []
    for c in sorted(server.clusters_info(), key=lambda c: c.name):
        lines.append(f"{c.name}::observability_name::{c.observability_name or c.name}")
        if c.outlier is not None:
            sr, thr, lsr, lthr = c.outlier
            lines += [f"{c.name}::outlier::success_rate_average::{_g(sr)}",
                      f"{c.name}::outlier::success_rate_ejection_threshold::{_g(thr)}",
                      f"{c.name}::outlier::local_origin_success_rate_average::{_g(lsr)}",
                      f"{c.name}::outlier::local_origin_success_rate_ejection_threshold::"
                      f"{_g(lthr)}"]
        lines += _thresholds_text(c.name, "default", c.default_priority)
        lines += _thresholds_text(c.name, "high", c.high_priority)
        lines.append(f"{c.name}::added_via_api::{'true' if c.added_via_api else 'false'}")
        for h in c.hosts:
            lines += _host_text(c.name, h)
    return "".join(line + "\n" for line in lines)


# Envoy's health flag names (as in /clusters text) → the HostHealthStatus field they set.
_FLAG_FIELDS = {
    "failed_active_hc": "failed_active_health_check",
    "failed_outlier_check": "failed_outlier_check",
    "degraded_active_hc": "failed_active_degraded_check",
    "pending_dynamic_removal": "pending_dynamic_removal",
    "pending_active_hc": "pending_active_hc",
    "excluded_via_immediate_hc_fail": "excluded_via_immediate_hc_fail",
    "active_hc_timeout": "active_hc_timeout",
}


def _health_status(flags: str) -> clusters_pb2.HostHealthStatus:
    names = {f for f in flags.split("/") if f and f != "healthy"}
    status = clusters_pb2.HostHealthStatus()
    for flag, field_name in _FLAG_FIELDS.items():
        if flag in names:
            setattr(status, field_name, True)
    if "failed_eds_health" in names:
        status.eds_health_status = health_check_pb2.UNHEALTHY
    elif "degraded_eds_health" in names:
        status.eds_health_status = health_check_pb2.DEGRADED
    else:
        status.eds_health_status = health_check_pb2.HEALTHY
    return status


def _cluster_status(c: ClusterInfo) -> clusters_pb2.ClusterStatus:
    status = clusters_pb2.ClusterStatus(
        name=c.name,
        added_via_api=c.added_via_api,
        observability_name=c.observability_name or c.name,
    )
    for priority, t in ((base_pb2.DEFAULT, c.default_priority), (base_pb2.HIGH, c.high_priority)):
        th = status.circuit_breakers.thresholds.add(priority=priority)
        th.max_connections.value = t.max_connections
        th.max_pending_requests.value = t.max_pending_requests
        th.max_requests.value = t.max_requests
        th.max_retries.value = t.max_retries
    for h in c.hosts:
        hs = status.host_statuses.add(
            address=_socket_address(h.host, h.port),
            hostname=h.hostname,
            weight=h.weight,
            priority=h.priority,
            health_status=_health_status(h.health_flags),
        )
        hs.locality.region, hs.locality.zone, hs.locality.sub_zone = h.region, h.zone, h.sub_zone
        for name in _HOST_COUNTERS:
            hs.stats.add(name=name, value=getattr(h, name), type=metrics_pb2.SimpleMetric.COUNTER)
        for name in _HOST_GAUGES:
            hs.stats.add(name=name, value=getattr(h, name), type=metrics_pb2.SimpleMetric.GAUGE)
    return status


def clusters_json(server: AdminServerApi) -> str:
    msg = clusters_pb2.Clusters()
    for c in sorted(server.clusters_info(), key=lambda c: c.name):
        msg.cluster_statuses.append(_cluster_status(c))
    return to_json(msg)


# ------------------------------------------------------------------------------ /server_info


_SERVER_INFO_ORDER = [f.name for f in server_info_pb2.ServerInfo.DESCRIPTOR.fields]


def server_info_json(server: AdminServerApi) -> str:
    uptime = max(0, int(time.time() - server.start_time))
    info = server_info_pb2.ServerInfo(
        version=f"envoi/{__version__}",
        state=server_info_pb2.ServerInfo.State.Value(server.state),
        hot_restart_version=HOT_RESTART_VERSION,
    )
    info.uptime_current_epoch.seconds = uptime
    info.uptime_all_epochs.seconds = uptime
    node = info.node
    bootstrap_node = getattr(server.bootstrap, "node", None)
    if bootstrap_node is not None:
        node.CopyFrom(bootstrap_node)
    node.user_agent_name = "envoi"
    extensions = server.plugins.extensions
    for ext in extensions:
        node.extensions.add(name=ext.name, category=ext.category, type_urls=list(ext.type_urls))
    doc: dict[str, Any] = json_format.MessageToDict(info, preserving_proto_field_name=True)
    # proto3 omits LIVE (enum value 0); Envoy always names the state.
    doc["state"] = server.state
    # The one envoi addition: which installed distribution provides each extension.
    for entry, ext in zip(doc.get("node", {}).get("extensions", []), extensions, strict=True):
        entry["distribution"] = ext.distribution
    # Envoy renders its CommandLineOptions message; ours come from the server as a plain dict.
    doc["command_line_options"] = server.command_line_options
    doc = {key: doc[key] for key in sorted(doc, key=_SERVER_INFO_ORDER.index)}
    # envoi's own, last: the event loop and what plugins run on (envoi_runtime_info).
    doc["runtime"] = server.runtime_info()
    return json.dumps(doc, indent=1) + "\n"


# ------------------------------------------------------------------------------ /config_dump


def _timestamp(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def config_dump(server: AdminServerApi, include_eds: bool = False) -> config_dump_pb2.ConfigDump:
    """Bootstrap, static clusters and static listeners, each a ``*ConfigDump`` in an ``Any``."""
    loaded = _timestamp(server.start_time)
    bootstrap = server.bootstrap
    dump = config_dump_pb2.ConfigDump()

    boot = config_dump_pb2.BootstrapConfigDump(last_updated=loaded)
    boot.bootstrap.CopyFrom(bootstrap)
    dump.configs.add().Pack(boot)

    clusters = config_dump_shared_pb2.ClustersConfigDump()
    listeners = config_dump_shared_pb2.ListenersConfigDump()
    static = getattr(bootstrap, "static_resources", None)
    if static is not None:
        for cluster in static.clusters:
            entry = clusters.static_clusters.add(last_updated=loaded)
            entry.cluster.Pack(cluster)
        for listener in static.listeners:
            lentry = listeners.static_listeners.add(last_updated=loaded)
            lentry.listener.Pack(listener)
    _dynamic(server, clusters, listeners)
    dump.configs.add().Pack(clusters)
    if include_eds:  # Envoy's order: bootstrap, clusters, endpoint, listeners, routes
        dump.configs.add().Pack(_endpoints(server))
    dump.configs.add().Pack(listeners)
    routes = _routes(server)
    if routes.dynamic_route_configs:  # (Envoy shows it always, with the inline ones as static)
        dump.configs.add().Pack(routes)
    return dump


def _routes(server: AdminServerApi) -> config_dump_shared_pb2.RoutesConfigDump:
    """RDS: each route configuration held, with its version and when it arrived."""
    out = config_dump_shared_pb2.RoutesConfigDump()
    providers = getattr(getattr(server, "route_configs", None), "providers", {})
    for provider in sorted(providers.values(), key=lambda p: p.name):
        if provider.message is None:
            continue
        entry = out.dynamic_route_configs.add(version_info=provider.version_info,
                                              last_updated=_timestamp(provider.last_updated))
        entry.route_config.Pack(provider.message)
    return out


def _dynamic(server: AdminServerApi, clusters: Any, listeners: Any) -> None:
    """The LDS/CDS resources: ``dynamic_active_*``, ``dynamic_warming_clusters`` and
    ``dynamic_listeners`` with each resource's ``version_info`` and ``last_updated``, and the
    subscription's ``version_info``, as Envoy shows them."""
    state = getattr(server, "xds", None)
    manager = getattr(server, "xds_manager", None)
    if state is None or manager is None:
        return
    from envoi.xds.resources import CLUSTER, LISTENER

    if CLUSTER in manager.versions:
        clusters.version_info = manager.versions[CLUSTER]
    for name, res in sorted(state.cluster_resources.items()):
        entries = (clusters.dynamic_warming_clusters if name in state.warming
                   else clusters.dynamic_active_clusters)
        entry = entries.add(version_info=res.version_info,
                            last_updated=_timestamp(res.last_updated))
        entry.cluster.Pack(res.message)
    if LISTENER in manager.versions:
        listeners.version_info = manager.versions[LISTENER]
    errors = getattr(state, "listener_errors", {})
    warming = {name: res for name, (_, res) in getattr(state, "warming_listeners", {}).items()}
    for name in sorted({*state.resources, *errors, *warming}):
        lentry = listeners.dynamic_listeners.add(name=name)
        for res, where in ((state.resources.get(name), lentry.active_state),
                           (warming.get(name), lentry.warming_state)):
            if res is not None:
                where.version_info = res.version_info
                where.last_updated.CopyFrom(_timestamp(res.last_updated))
                where.listener.Pack(res.message)
        failed = errors.get(name)
        if failed is not None:  # Envoy's UpdateFailureState: the refused listener and why
            err = lentry.error_state
            if _renderable(failed.message):
                err.failed_configuration.Pack(failed.message)
            err.last_update_attempt.CopyFrom(_timestamp(failed.last_update_attempt))
            err.details = failed.details


def _renderable(msg: Any) -> bool:
    """A refused resource may hold an ``Any`` of a type nobody knows: Envoy's whole /config_dump
    then fails; envoi leaves that resource out of its ``error_state`` (``details`` says why)."""
    try:
        json_format.MessageToJson(msg)
    except (TypeError, json_format.Error):
        return False
    return True


def config_dump_json(server: AdminServerApi, include_eds: bool = False) -> str:
    return to_json(config_dump(server, include_eds))


# ------------------------------------------------------------------------------------ /certs


def _cert_details(cert: Any, now: float) -> certs_pb2.CertificateDetails:
    d = certs_pb2.CertificateDetails(
        path=cert.path,
        serial_number=cert.serial_number,
        days_until_expiration=max(0, int((cert.not_after.timestamp() - now) // 86400)),
    )
    for kind, value in cert.subject_alt_names:
        d.subject_alt_names.add(**{kind: value})
    d.valid_from.FromDatetime(cert.not_before)
    d.expiration_time.FromDatetime(cert.not_after)
    return d


def certs_json(server: AdminServerApi) -> str:
    """Envoy's ``/certs``: one entry per TLS context; printed, as Envoy does, with empty lists
    shown."""
    now = time.time()
    msg = certs_pb2.Certificates()
    for info in server.certs_info():
        entry = msg.certificates.add()
        for cert in info.ca_certs:
            entry.ca_cert.append(_cert_details(cert, now))
        for cert in info.cert_chain:
            entry.cert_chain.append(_cert_details(cert, now))
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=1,
                                     always_print_fields_with_no_presence=True) + "\n"


def _endpoints(server: AdminServerApi) -> config_dump_shared_pb2.EndpointsConfigDump:
    """``?include_eds``: each active cluster's hosts as the ``ClusterLoadAssignment`` Envoy
    builds from its priority set (one ``LocalityLbEndpoints`` per priority and locality, each
    host's coarse health); clusters added over CDS under ``dynamic_endpoint_configs``, the
    bootstrap's under ``static_endpoint_configs``. Warming clusters are not shown (nor in Envoy)."""
    from envoy.config.endpoint.v3 import endpoint_pb2

    out = config_dump_shared_pb2.EndpointsConfigDump()
    cm = getattr(server, "cluster_manager", None)
    for name, cluster in sorted(getattr(cm, "clusters", {}).items()):
        cfg = cluster.config
        service = (cfg.eds_cluster_config.service_name
                   if cfg.HasField("eds_cluster_config") else "")
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=service or name)
        cla.policy.SetInParent()
        # Envoy's priority set always holds priority 0, empty or not.
        for hs in cluster.priority_set or [HostSet(0)]:
            cla.policy.overprovisioning_factor.value = hs.overprovisioning_factor
            by_locality: dict[tuple[str, str, str], list[Any]] = {}
            for h in hs.hosts:
                by_locality.setdefault(h.locality, []).append(h)
            for locality, hosts in by_locality.items():
                group = cla.endpoints.add(priority=hs.priority)
                group.locality.SetInParent()
                group.locality.region, group.locality.zone, group.locality.sub_zone = locality
                group.load_balancing_weight.value = hs.locality_weights.get(locality, 0)
                for h in hosts:
                    _lb_endpoint(group.lb_endpoints.add(), h)
        entries = (out.dynamic_endpoint_configs if cluster.added_via_api
                   else out.static_endpoint_configs)
        entries.add().endpoint_config.Pack(cla)
    return out


def _lb_endpoint(lb: Any, h: Any) -> None:
    lb.load_balancing_weight.value = h.weight
    lb.health_status = (health_check_pb2.HEALTHY if h.healthy else
                        health_check_pb2.DEGRADED if h.degraded else health_check_pb2.UNHEALTHY)
    ep = lb.endpoint
    ep.hostname = h.hostname
    ep.address.CopyFrom(_socket_address(h.address, h.port))
    ep.health_check_config.SetInParent()
    if h.health_check_address is not None and h.health_check_address[1] != h.port:
        ep.health_check_config.port_value = h.health_check_address[1]
