"""``envoy.stat_sinks.statsd`` and ``envoy.stat_sinks.dog_statsd``: stats as statsd lines.

What Envoy 1.39 sends, and so what envoi sends (``tests/e2e/test_statsd_oracle.py`` receives both
for the same traffic):

* at every flush, every *used* counter as ``<prefix>.<name>:<delta>|c`` (the change since the
  last flush; a counter once used is sent at every flush, ``:0|c`` when it did not move) and
  every used gauge as ``<prefix>.<name>:<value>|g``;
* every recorded histogram value as a timer, ``<prefix>.<name>:<integer ms>|ms`` (a
  ``percent`` histogram as ``|h``), one line per value;
* ``prefix`` defaults to ``envoy``. The plain statsd sink uses the full stat name; DogStatsD the
  tag-extracted name with the tags after the value: ``dd.cluster.upstream_rq_total:3|c|#envoy.
  cluster_name:web`` (Envoy's default tag extractors, :mod:`envoi.stats.tags`).

Transports: statsd over UDP (``address``: one datagram per line) or over TCP to a cluster
(``tcp_cluster_name``: lines ending in ``\\n`` on one connection per process to a host the
cluster's load balancer picks, counted in ``cluster.<name>.upstream_cx_tx_bytes_total`` only,
as Envoy counts it; when more than 16 MiB wait to be written the connection is dropped and
``statsd.cx_overflow`` counts it, as in Envoy). DogStatsD
is UDP only, packing lines (joined by ``\\n``) into datagrams of at most
``max_bytes_per_datagram`` bytes when that is set.

A sink never blocks: UDP datagrams the kernel cannot take are dropped (as Envoy's are); TCP
output waits in the transport's buffer, bounded as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue, implements
from envoi.config.implemented import address_issue
from envoi.extensions import FactoryContext, StatsSinkFactory
from envoi.stats.histogram import Histogram
from envoi.stats.sink import MetricSnapshot
from envoi.stats.store import Counter
from envoi.stats.tags import extract_tags

log = logging.getLogger("envoi.stats_sinks")

implements("envoy.config.metrics.v3.StatsdSink", "address", "tcp_cluster_name", "prefix")
implements("envoy.config.metrics.v3.DogStatsdSink", "address", "prefix",
           "max_bytes_per_datagram")

DEFAULT_PREFIX = "envoy"
#: Envoy's ``MAX_BUFFERED_STATS_BYTES``: TCP output waiting beyond this drops the connection.
MAX_BUFFERED_BYTES = 16 * 1024 * 1024


def _name_and_tags(name: str, use_tag: bool) -> tuple[str, str]:
    if not use_tag:
        return name, ""
    extracted, tags = extract_tags(name)
    if not tags:
        return extracted, ""
    return extracted, "|#" + ",".join(f"{k}:{v}" for k, v in tags)


def _histogram_value(histogram: Histogram, value: float) -> tuple[str, str]:
    """Envoy sends histogram values as integer milliseconds (``|ms``), percents as ``|h``."""
    if histogram.unit == "percent":
        return f"{value:g}", "|h"
    return str(int(value)) if value > 0 else "0", "|ms"


def flush_lines(prefix: str, snapshot: MetricSnapshot, use_tag: bool) -> list[str]:
    """The lines of one flush: used counters (deltas), then used gauges."""
    lines = []
    for c in snapshot.counters:
        if c.used:
            name, tags = _name_and_tags(c.name, use_tag)
            lines.append(f"{prefix}.{name}:{c.delta}|c{tags}")
    for g in snapshot.gauges:
        if g.used:
            name, tags = _name_and_tags(g.name, use_tag)
            lines.append(f"{prefix}.{name}:{max(0, g.value)}|g{tags}")
    return lines


def histogram_lines(prefix: str, histogram: Histogram, values: Sequence[float],
                    use_tag: bool) -> list[str]:
    name, tags = _name_and_tags(histogram.name, use_tag)
    out = []
    for v in values:
        text, kind = _histogram_value(histogram, v)
        out.append(f"{prefix}.{name}:{text}{kind}{tags}")
    return out


def pack_datagrams(lines: Sequence[str], max_bytes: int) -> list[bytes]:
    """Lines joined by ``\\n`` into datagrams of at most ``max_bytes`` (Envoy's buffering: a
    line as long as the limit or longer goes alone; 0 means one line per datagram)."""
    out: list[bytes] = []
    buf: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode()
        if len(data) >= max_bytes:
            out.append(data)
            continue
        if buf and size + len(data) + 1 > max_bytes:
            out.append(b"\n".join(buf))
            buf, size = [], 0
        size += len(data) + (1 if buf else 0)
        buf.append(data)
    if buf:
        out.append(b"\n".join(buf))
    return out


class UdpStatsdSink:
    """statsd or DogStatsD over UDP. The socket is opened in the process that sends (the main
    process for flushes, each worker for its histogram values)."""

    def __init__(self, address: tuple[str, int], prefix: str, *, use_tag: bool,
                 max_bytes: int = 0) -> None:
        self.address = address
        self.prefix = prefix or DEFAULT_PREFIX
        self.use_tag = use_tag
        self.max_bytes = max_bytes
        self._sock: socket.socket | None = None
        self._pid = 0

    def _socket(self) -> socket.socket:
        if self._sock is None or self._pid != os.getpid():
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock, self._pid = sock, os.getpid()
        return self._sock

    def _send(self, datagrams: Sequence[bytes]) -> None:
        sock = self._socket()
        for data in datagrams:
            # A full socket buffer, no route...: a lost datagram, as in Envoy.
            with contextlib.suppress(OSError):
                sock.sendto(data, self.address)

    def flush(self, snapshot: MetricSnapshot) -> None:
        lines = flush_lines(self.prefix, snapshot, self.use_tag)
        self._send(pack_datagrams(lines, self.max_bytes))

    def on_histogram_values(self, histogram: Histogram, values: Sequence[float]) -> None:
        # Envoy writes each histogram value in its own datagram, even with buffering on.
        self._send([line.encode() for line in
                    histogram_lines(self.prefix, histogram, values, self.use_tag)])

    def close(self) -> None:
        if self._sock is not None and self._pid == os.getpid():
            self._sock.close()
        self._sock = None


class _StatsdConnection(asyncio.Protocol):
    def __init__(self, sink: TcpStatsdSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        pass  # a statsd server says nothing; whatever it says is ignored

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink._lost(self)


class TcpStatsdSink:
    """statsd over TCP to the cluster ``cluster_name``: one connection per process, opened on
    the first write and again after it closed."""

    def __init__(self, context: FactoryContext, cluster_name: str, prefix: str) -> None:
        self.cluster_manager = context.cluster_manager
        self.cluster_name = cluster_name
        self.prefix = prefix or DEFAULT_PREFIX
        self.cx_overflow: Counter = context.stats.root.counter("statsd.cx_overflow")
        self._conn: _StatsdConnection | None = None
        self._connecting = False
        self._task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pid = os.getpid()

    def flush(self, snapshot: MetricSnapshot) -> None:
        lines = flush_lines(self.prefix, snapshot, use_tag=False)
        if lines:
            self._write(("\n".join(lines) + "\n").encode())

    def on_histogram_values(self, histogram: Histogram, values: Sequence[float]) -> None:
        lines = histogram_lines(self.prefix, histogram, values, use_tag=False)
        self._write(("\n".join(lines) + "\n").encode())

    def _write(self, data: bytes) -> None:
        if self._pid != os.getpid():  # forked: the parent's connection is not ours
            self._conn, self._connecting, self._pending, self._pending_size = None, False, [], 0
            self._pid = os.getpid()
        cluster = self.cluster_manager.get(self.cluster_name)
        if cluster is None:
            return
        conn = self._conn
        if conn is not None and conn.transport is not None:
            if conn.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
                self._overflow()
                return
            cluster.stats.upstream_cx_tx_bytes_total.value += len(data)
            conn.transport.write(data)
            return
        if self._pending_size + len(data) > MAX_BUFFERED_BYTES:
            self._overflow()
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if not self._connecting:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._connecting = True
            self._task = loop.create_task(self._connect(cluster))

    def _overflow(self) -> None:
        self.cx_overflow.inc()
        self._pending, self._pending_size = [], 0
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    async def _connect(self, cluster: Any) -> None:
        # Envoy opens this connection on a host of the cluster directly (no connection pool),
        # so of the cluster's stats only the bytes count: upstream_cx_tx_bytes_total.
        try:
            host = cluster.choose_host()
            if host is None:
                self._pending, self._pending_size = [], 0
                return
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(loop.create_connection(
                    lambda: _StatsdConnection(self), host.address, host.port),
                    cluster.connect_timeout or None)
            except (OSError, TimeoutError) as exc:  # what waited is lost, as in Envoy
                log.debug("tcp statsd: cannot connect to cluster %s: %s", self.cluster_name,
                          exc)
                self._pending, self._pending_size = [], 0
                return
            self._conn = conn
            data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            if data and conn.transport is not None:
                cluster.stats.upstream_cx_tx_bytes_total.value += len(data)
                conn.transport.write(data)
        finally:
            self._connecting = False

    def _lost(self, conn: _StatsdConnection) -> None:
        if conn is self._conn:
            self._conn = None
        conn.transport = None

    def close(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and self._pid == os.getpid():
            conn.transport.close()


# -- factories ---------------------------------------------------------------------------------


def _udp_address(addr: Any, path: str) -> tuple[str, int]:
    """A ``core.v3.Address`` for a UDP sink: an IP literal and a port (Envoy does not resolve
    names here either). ``protocol`` (TCP or UDP) does not matter: statsd to an address is UDP,
    as in Envoy; the other ``SocketAddress`` fields are refused by the config check."""
    if addr.WhichOneof("address") != "socket_address":
        raise ConfigError([address_issue(addr, path)])
    sa = addr.socket_address
    try:
        ipaddress.ip_address(sa.address)
    except ValueError:
        raise ConfigError([ConfigIssue(path + ".socket_address.address",
                                       f"malformed IP address: {sa.address}")]) from None
    return sa.address, sa.port_value


class StatsdSinkFactory(StatsSinkFactory):
    name = "envoy.stat_sinks.statsd"
    aliases = ("envoy.statsd",)
    type_urls = ("envoy.config.metrics.v3.StatsdSink",)

    def create_sink(self, config: Any, context: FactoryContext) -> Any:
        which = config.WhichOneof("statsd_specifier")
        if which == "address":
            return UdpStatsdSink(_udp_address(config.address, context.path + ".address"),
                                 config.prefix, use_tag=False)
        if which == "tcp_cluster_name":
            name = config.tcp_cluster_name
            info = context.local_info
            if not info.node_id or not info.cluster:
                raise ConfigError([ConfigIssue(context.path + ".tcp_cluster_name", (
                    "tcp statsd: node 'id' and 'cluster' are required. Set it either in 'node' "
                    "config or via --service-node and --service-cluster options."))])
            cluster = context.cluster_manager.get(name)
            if cluster is None:
                raise ConfigError([ConfigIssue(context.path + ".tcp_cluster_name",
                                               f"tcp statsd: unknown cluster '{name}'")])
            if cluster.tls is not None:
                raise ConfigError([ConfigIssue(context.path + ".tcp_cluster_name", (
                    f"tcp statsd to cluster '{name}', which has a TLS transport socket: "
                    "not implemented by envoi (the stats would go out in the clear)"))])
            return TcpStatsdSink(context, name, config.prefix)
        raise ConfigError([ConfigIssue(context.path, "statsd sink: set address or "
                                                     "tcp_cluster_name")])


class DogStatsdSinkFactory(StatsSinkFactory):
    name = "envoy.stat_sinks.dog_statsd"
    aliases = ("envoy.dog_statsd",)
    type_urls = ("envoy.config.metrics.v3.DogStatsdSink",)

    def create_sink(self, config: Any, context: FactoryContext) -> Any:
        max_bytes = (config.max_bytes_per_datagram.value
                     if config.HasField("max_bytes_per_datagram") else 0)
        return UdpStatsdSink(_udp_address(config.address, context.path + ".address"),
                             config.prefix, use_tag=True, max_bytes=max_bytes)


@hookimpl
def envoi_stats_sinks() -> Sequence[StatsSinkFactory]:
    return [StatsdSinkFactory(), DogStatsdSinkFactory()]


def close_sinks(sinks: Sequence[Any]) -> None:
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
