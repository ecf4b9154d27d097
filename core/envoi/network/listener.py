"""Listeners: bound sockets, filter-chain selection, and per-listener connection accounting."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from envoi.network.acceptor import Acceptor
from envoi.network.connection import Connection, _format_peer
from envoi.network.filter import NetworkFilterFactoryCb
from envoi.network.listener_filter import ListenerFilterFactoryCb
from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup

if TYPE_CHECKING:
    from envoi.tls.context import ServerTlsContext
    from envoi.tls.stats import SslStats

log = logging.getLogger("envoi.listener")
#: How long a TLS handshake may take when the filter chain sets no
#: ``transport_socket_connect_timeout`` (Envoy waits without limit; envoi bounds it).
DEFAULT_HANDSHAKE_TIMEOUT = 60.0
#: Envoy's ``listener_filters_timeout`` default.
DEFAULT_LISTENER_FILTERS_TIMEOUT = 15.0

DEFAULT_BUFFER_LIMIT = 1024 * 1024  # Envoy's per_connection_buffer_limit_bytes default


class ListenerOwner(Protocol):
    """What a listener tells the server about its connections."""

    @property
    def total_connections(self) -> Gauge: ...
    def on_connection_closed(self, listener: ActiveListener) -> None: ...


class ListenerStats(StatsGroup):
    downstream_cx_total: Counter
    downstream_cx_destroy: Counter
    downstream_cx_overflow: Counter
    downstream_cx_overload_reject: Counter
    downstream_global_cx_overflow: Counter
    downstream_cx_transport_socket_connect_timeout: Counter
    downstream_pre_cx_timeout: Counter
    downstream_listener_filter_error: Counter
    downstream_listener_filter_remote_close: Counter
    no_filter_chain_match: Counter
    extension_config_missing: Counter
    network_extension_config_missing: Counter
    downstream_cx_active: Gauge
    downstream_pre_cx_active: Gauge
    downstream_cx_length_ms: Histogram
    connections_accepted_per_socket_event: Histogram

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.set_worker(0)

    def set_worker(self, index: int) -> None:
        """Each worker process counts under its own ``worker_<N>`` names, as Envoy's threads."""
        self.worker_cx_total = self.scope.counter(f"worker_{index}.downstream_cx_total")
        self.worker_cx_active = self.scope.gauge(f"worker_{index}.downstream_cx_active")


@dataclass
class ChainMatch:
    """A filter chain's ``filter_chain_match``, pre-parsed for fast selection."""

    destination_port: int | None = None
    prefix_ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list
    )
    server_names: list[str] = field(default_factory=list)
    transport_protocol: str = ""
    application_protocols: list[str] = field(default_factory=list)
    direct_source_prefix_ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list
    )
    source_type: str = "ANY"
    source_prefix_ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list
    )
    source_ports: list[int] = field(default_factory=list)


@dataclass
class FilterChain:
    name: str
    match: ChainMatch
    factories: list[NetworkFilterFactoryCb]
    #: The chain's ``DownstreamTlsContext``; None for plaintext.
    tls: ServerTlsContext | None = None
    #: ``transport_socket_connect_timeout``: how long the TLS handshake may take.
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


@dataclass
class ConnectionMeta:
    """What filter-chain selection looks at for one connection."""

    dst_ip: Any
    dst_port: int
    src_ip: Any
    src_port: int
    server_name: str = ""
    transport_protocol: str = "raw_buffer"
    application_protocols: Sequence[str] = ()


def _cidr_score(ranges: Sequence[Any], ip: Any) -> int:
    """-1 no match, 0 unset, else 1 + prefix length of the longest matching range."""
    if not ranges:
        return 0
    best = -1
    for net in ranges:
        if ip is not None and ip.version == net.version and ip in net:
            best = max(best, 1 + net.prefixlen)
    return best


def _score(level: int, m: ChainMatch, c: ConnectionMeta) -> int:
    if level == 0:
        if m.destination_port is None:
            return 0
        return 1 if m.destination_port == c.dst_port else -1
    if level == 1:
        return _cidr_score(m.prefix_ranges, c.dst_ip)
    if level == 2:
        if not m.server_names:
            return 0
        best = -1
        name = c.server_name.lower()
        for sn in m.server_names:
            if sn == name:
                best = max(best, 1000)
            elif sn.startswith("*.") and name.endswith(sn[1:]):
                best = max(best, len(sn))
        return best
    if level == 3:
        if not m.transport_protocol:
            return 0
        return 1 if m.transport_protocol == c.transport_protocol else -1
    if level == 4:
        if not m.application_protocols:
            return 0
        # Envoy tries the connection's protocols in order: the chain with the first one wins.
        offered = c.application_protocols
        for i, proto in enumerate(offered):
            if proto in m.application_protocols:
                return len(offered) - i
        return -1
    if level == 5:
        return _cidr_score(m.direct_source_prefix_ranges, c.src_ip)
    if level == 6:
        if m.source_type == "ANY":
            return 0
        local = c.src_ip is not None and (c.src_ip.is_loopback or c.src_ip == c.dst_ip)
        want_local = m.source_type == "SAME_IP_OR_LOOPBACK"
        return 1 if local == want_local else -1
    if level == 7:
        return _cidr_score(m.source_prefix_ranges, c.src_ip)
    if not m.source_ports:
        return 0
    return 1 if c.src_port in m.source_ports else -1


def select_filter_chain(
    chains: Sequence[FilterChain], default: FilterChain | None, meta: ConnectionMeta
) -> FilterChain | None:
    """Envoy's order of precedence: at each criterion the most specific matching value wins;
    chains that set a value that does not match drop out."""
    candidates = list(chains)
    for level in range(9):
        scored = [(_score(level, ch.match, meta), ch) for ch in candidates]
        best = max((s for s, _ in scored), default=-1)
        if best < 0:
            return default
        candidates = [ch for s, ch in scored if s == best]
    return candidates[0] if candidates else default


def _ip(text: str) -> Any:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def listener_stat_name(host: str, port: int) -> str:
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return addr.replace(":", "_")


class ActiveListener:
    """One bound listener and the connections it accepted."""

    def __init__(
        self,
        server: ListenerOwner,
        name: str,
        host: str,
        port: int,
        chains: list[FilterChain],
        default_chain: FilterChain | None,
        scope: Scope,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        backlog: int = 1024,
        reuse_port: bool = False,
        traffic_direction: str = "UNSPECIFIED",
        stat_name: str = "",
        listener_filters: list[ListenerFilterFactoryCb] | None = None,
        listener_filters_timeout: float = DEFAULT_LISTENER_FILTERS_TIMEOUT,
        continue_on_listener_filters_timeout: bool = False,
    ) -> None:
        self.server = server
        self.name = name
        self.host = host
        self.port = port
        self.chains = chains
        self.default_chain = default_chain
        self.buffer_limit = buffer_limit
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.traffic_direction = traffic_direction
        self.stat_name = stat_name
        self.scope = scope
        self.stats: ListenerStats | None = None
        self.connections: set[Connection] = set()
        self._aserver: asyncio.base_events.Server | None = None
        self.sock: socket.socket | None = None
        self.worker_socks: list[socket.socket] = []
        self.accepting = False
        self._single_chain = chains[0] if len(chains) == 1 and default_chain is None else None
        if self._single_chain is not None and self._single_chain.match != ChainMatch():
            self._single_chain = None
        self.listener_filters = list(listener_filters or ())
        self.listener_filters_timeout = listener_filters_timeout
        self.continue_on_listener_filters_timeout = continue_on_listener_filters_timeout
        self._acceptor: Acceptor | None = None
        #: Stopped while draining, with sockets still in its listener filters.
        self._draining_acceptor: Acceptor | None = None
        #: Replaced or removed over LDS: connections that start now are drained at once.
        self.draining = False
        self._connecting: set[asyncio.Task[None]] = set()
        #: ``listener.<addr>.ssl.*``, made when the listener is bound (TLS chains only).
        self.ssl_stats: SslStats | None = None
        #: Added over xDS while worker processes run: every worker binds its own socket
        #: (a replacement worker too), the main process holds none.
        self.bind_in_worker = False
        #: False once it was removed or replaced over xDS (a replacement worker skips it).
        self.accepting_wanted = True

    @property
    def all_chains(self) -> list[FilterChain]:
        return [*self.chains, *([self.default_chain] if self.default_chain else [])]

    @property
    def inspects(self) -> bool:
        """Whether connections need work before their chain is chosen (listener filters, TLS):
        then envoi accepts them itself (``envoi.network.acceptor``)."""
        return bool(self.listener_filters) or any(c.tls is not None for c in self.all_chains)

    def _socket(self, port: int, reuse_port: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and self.host in ("::", "[::]"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def bind(self, workers: int = 1, *, sock: socket.socket | None = None) -> None:
        """Bind now, so a port in use is reported before anything serves. With worker
        processes, one SO_REUSEPORT socket per worker, so the kernel spreads connections.
        ``sock``: a listening socket to take over (a listener updated in place over xDS keeps
        its predecessor's socket, so no connection attempt is refused meanwhile)."""
        adopted = sock is not None
        if sock is None and workers <= 1:
            sock = self._socket(self.port, self.reuse_port)
        elif sock is None:
            # A plain bind first: SO_REUSEPORT alone would silently share a port that another
            # process (another envoi, say) holds with SO_REUSEPORT too.
            probe = self._socket(self.port, False)
            port = probe.getsockname()[1]
            probe.close()
            self.worker_socks = [self._socket(port, True) for _ in range(workers)]
            for s in self.worker_socks:
                s.listen(self.backlog)
                s.setblocking(False)
            sock = self.worker_socks[0]
        if workers <= 1 and not adopted:
            sock.listen(self.backlog)
            sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.sock = sock
        if not self.stat_name:
            self.stat_name = listener_stat_name(self.host, self.port)
        self.stats = ListenerStats(self.scope.scope(f"listener.{self.stat_name}"))
        self.stats.downstream_pre_cx_active.set(0)
        tls = [c.tls for c in self.all_chains if c.tls is not None]
        if tls:
            from envoi.tls.stats import CertificateGauges, SocketFactoryStats, SslStats

            scope = self.stats.scope
            self.ssl_stats = SslStats(scope.scope("ssl"))
            SocketFactoryStats(scope.scope("server_ssl_socket_factory"))
            gauges = CertificateGauges(scope.scope("ssl"))
            for ctx in tls:
                for cert in ctx.cert_chain:
                    gauges.set_expiry(gauges.LEAF, int(cert.not_after.timestamp()))
                for cert in ctx.ca_certs[:1]:
                    gauges.set_expiry(gauges.CA, int(cert.not_after.timestamp()))

    def use_worker_socket(self, index: int) -> None:
        """In worker ``index``: keep its socket, close the others, name its worker stats."""
        for i, s in enumerate(self.worker_socks):
            if i != index:
                s.close()
        # No sockets: the main process drained this listener before forking this worker --
        # or it came over xDS, and each worker binds its own SO_REUSEPORT socket for it.
        self.sock = self.worker_socks[index] if self.worker_socks else None
        if self.sock is None and self.bind_in_worker and self.accepting_wanted:
            self.sock = self._socket(self.port, True)
            self.sock.listen(self.backlog)
            self.sock.setblocking(False)
        self.worker_socks = []
        if self.stats is not None:
            self.stats.set_worker(index)

    def close_worker_sockets(self) -> None:
        """In the main process, which accepts nothing itself."""
        for s in self.worker_socks:
            s.close()
        self.worker_socks = []
        self.sock = None

    async def start(self) -> None:
        assert self.sock is not None
        if self.inspects:
            self._acceptor = Acceptor(self, self.sock, self.listener_filters,
                                      self.listener_filters_timeout,
                                      self.continue_on_listener_filters_timeout)
        else:
            loop = asyncio.get_running_loop()
            self._aserver = await loop.create_server(
                lambda: Connection(self), sock=self.sock, backlog=self.backlog
            )
        self.accepting = True

    def stop_accepting(self, *, keep_pending: bool = False) -> None:
        """Accept no more connections. ``keep_pending``: sockets already accepted and still
        in the listener filters go on to their filter chain (see ``drain``)."""
        if self._aserver is not None:
            self._aserver.close()
            self._aserver = None
        if self._acceptor is not None:
            self._acceptor.stop(abandon=not keep_pending)
            if keep_pending:
                self._draining_acceptor = self._acceptor
            self._acceptor = None
        self.accepting = False

    def drain(self) -> None:
        """Replaced or removed over LDS: accept no more, and drain. No connection already
        accepted is lost: one still in the listener filters or the TLS handshake reaches its
        filter chain, and every connection's filters are told to drain (an HTTP connection
        answers its next request with ``connection: close``, then closes) -- the ones that
        start later as soon as they start. What is left is closed after ``--drain-time-s``.
        The listening socket is not closed here (its successor may hold a ``dup`` of it)."""
        self.draining = True
        self.stop_accepting(keep_pending=True)
        for conn in list(self.connections):
            _drain_filters(conn)

    @property
    def pending_sockets(self) -> int:
        """Accepted sockets still in the listener filters of a draining listener."""
        acceptor = self._draining_acceptor
        return len(acceptor.pending) if acceptor is not None else 0

    def abandon_pending(self) -> None:
        """The drain time is over: close the sockets still in the listener filters."""
        if self._draining_acceptor is not None:
            self._draining_acceptor.abandon_pending()
            self._draining_acceptor = None

    # -- called by the acceptor ----------------------------------------------------------

    def on_socket_ready(self, sock: socket.socket, info: Any) -> None:
        """Listener filters are done with an accepted socket (``info`` holds what they found):
        choose its filter chain and hand it to the event loop, through TLS if the chain says
        so. As in Envoy, a socket no chain matches is closed and counts only
        ``no_filter_chain_match``."""
        stats = self.stats
        assert stats is not None
        local, remote = info.local_address, info.remote_address
        meta = ConnectionMeta(_ip(local[0]), local[1], _ip(remote[0]), remote[1],
                              server_name=info.requested_server_name,
                              transport_protocol=info.detected_transport_protocol or "raw_buffer",
                              application_protocols=info.requested_application_protocols)
        chain = select_filter_chain(self.chains, self.default_chain, meta)
        if chain is None:
            stats.no_filter_chain_match.value += 1
            sock.close()
            return
        conn = Connection(self)
        conn.filter_chain = chain
        conn.requested_server_name = info.requested_server_name
        conn.stream_info.requested_server_name = info.requested_server_name
        conn.stream_info.downstream_remote_address = _format_peer(remote)
        conn.stream_info.downstream_local_address = _format_peer(local)
        self._account(conn)
        loop = asyncio.get_running_loop()
        conn.pending_socket = sock
        task = loop.create_task(self._connect_plain(conn, sock) if chain.tls is None
                                else self._handshake(conn, sock, chain))
        # The loop keeps only weak references to tasks.
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_plain(self, conn: Connection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: conn, sock)
        except OSError:
            self._handshake_failed(conn, sock)

    async def _handshake(self, conn: Connection, sock: socket.socket, chain: FilterChain) -> None:
        loop = asyncio.get_running_loop()
        assert chain.tls is not None
        try:
            await loop.connect_accepted_socket(
                lambda: conn, sock, ssl=chain.tls.ssl_context,
                ssl_handshake_timeout=chain.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            stats = self.stats
            assert stats is not None
            if _is_handshake_timeout(exc):
                stats.downstream_cx_transport_socket_connect_timeout.value += 1
            elif self.ssl_stats is not None:
                self.ssl_stats.record_failure(exc)
            log.debug("listener '%s': TLS handshake with %s failed: %r", self.name,
                      conn.stream_info.downstream_remote_address, exc)
            self._handshake_failed(conn, sock)

    def _handshake_failed(self, conn: Connection, sock: socket.socket) -> None:
        conn.pending_socket = None
        if conn.transport is None:
            conn.closed = True
            sock.close()
            self.on_connection_closed(conn)

    def _account(self, conn: Connection) -> None:
        stats = self.stats
        assert stats is not None
        stats.downstream_cx_total.value += 1
        stats.worker_cx_total.value += 1
        stats.downstream_cx_active.inc()
        stats.worker_cx_active.inc()
        self.server.total_connections.inc()
        self.connections.add(conn)

    # -- called by Connection ------------------------------------------------------------

    def on_connection_made(self, conn: Connection, transport: asyncio.Transport) -> None:
        chain = conn.filter_chain
        if chain is None:
            # asyncio's accept loop: no listener filters, no TLS; choose the chain now.
            chain = self._single_chain
            if chain is None:
                chain = self._select(transport)
            if chain is None:
                stats = self.stats
                assert stats is not None
                stats.no_filter_chain_match.value += 1
                conn.closed = True
                transport.abort()
                return
            conn.filter_chain = chain
            self._account(conn)
        else:
            conn.pending_socket = None
            if chain.tls is not None and not self._tls_established(conn, chain, transport):
                return
        transport.set_write_buffer_limits(high=self.buffer_limit, low=self.buffer_limit // 2)
        for factory in chain.factories:
            factory(conn)
        conn.start_filters()
        if self.draining and not conn.closed:
            _drain_filters(conn)  # accepted before the drain, started after it

    def _tls_established(self, conn: Connection, chain: FilterChain,
                         transport: asyncio.Transport) -> bool:
        """The handshake finished: make the checks ``ssl`` could not, count it, and give the
        connection its TLS facts. False when the peer failed a check (it is disconnected)."""
        tls = chain.tls
        ssl_stats = self.ssl_stats
        assert tls is not None and ssl_stats is not None
        ssl_object = transport.get_extra_info("ssl_object")
        failure = tls.check_peer(ssl_object)
        if failure is not None:
            getattr(ssl_stats, failure).value += 1
            transport.abort()
            return False
        ssl_stats.record_handshake(ssl_object, tls.curve)
        conn.set_ssl(ssl_object)
        return True

    def _select(self, transport: asyncio.Transport) -> FilterChain | None:
        sock = transport.get_extra_info("sockname") or ("", 0)
        peer = transport.get_extra_info("peername") or ("", 0)
        meta = ConnectionMeta(_ip(sock[0]), sock[1], _ip(peer[0]), peer[1])
        return select_filter_chain(self.chains, self.default_chain, meta)

    def on_connection_closed(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        stats = self.stats
        assert stats is not None
        stats.downstream_cx_destroy.value += 1
        stats.downstream_cx_active.dec()
        stats.worker_cx_active.dec()
        self.server.total_connections.dec()
        stats.downstream_cx_length_ms.record(
            (time.monotonic() - conn.stream_info.start_monotonic) * 1000
        )
        self.server.on_connection_closed(self)


def _drain_filters(conn: Connection) -> None:
    for f in conn.read_filters:
        # A filter that can end its connection gracefully (the HTTP connection manager) has
        # ``on_listener_draining()``; the others are closed when the drain time is over.
        drain = getattr(f, "on_listener_draining", None)
        if drain is not None:
            drain()


def _is_handshake_timeout(exc: BaseException) -> bool:
    # asyncio and uvloop abort a handshake that outlives ssl_handshake_timeout with
    # ConnectionAbortedError("SSL handshake is taking longer than ... seconds").
    return isinstance(exc, TimeoutError | asyncio.TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc))
