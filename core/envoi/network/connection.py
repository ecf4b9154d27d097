"""A downstream connection: the asyncio protocol, its network filter manager and its stream info.

Bytes from the peer go through the read filters first to last; bytes to the peer go through the
write filters last to first and then to the transport. The transport's write-buffer limits are
the connection's high/low watermarks (``per_connection_buffer_limit_bytes`` and half of it):
crossing them calls the watermark callbacks, which is how a filter pauses the *other* side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from envoi.log import conn_debug
from envoi.network.filter import (
    ConnectionCallback,
    ConnectionCloseType,
    ConnectionEvent,
    Filter,
    FilterStatus,
    ReadFilter,
    WriteFilter,
)
from envoi.stream_info import StreamInfo
from envoi.tls.info import SslConnectionInfo

CONTINUE = FilterStatus.CONTINUE
log = logging.getLogger("envoi.connection")
handler_log = logging.getLogger("envoi.conn_handler")
_ids = itertools.count(1)


class ConnectionOwner(Protocol):
    """What a connection tells the listener that accepted it (or a test's stand-in)."""

    def on_connection_made(self, conn: Connection, transport: Any) -> None: ...
    def on_connection_closed(self, conn: Connection) -> None: ...


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


class _ReadCallbacks:
    """The callbacks object a read filter gets; one per filter so it knows its position."""

    __slots__ = ("_conn", "_index")

    def __init__(self, conn: Connection, index: int) -> None:
        self._conn = conn
        self._index = index

    @property
    def connection(self) -> Connection:
        return self._conn

    def continue_reading(self) -> None:
        self._conn._continue_reading(self._index)

    def discard_held_data(self) -> bytes:
        return self._conn._discard_held(self._index)

    def inject_read_data_to_filter_chain(self, data: bytes, end_stream: bool) -> None:
        self._conn._iterate_read(self._index + 1, data, end_stream)

    @property
    def upstream_host(self) -> str | None:
        return self._conn.stream_info.upstream_host

    @upstream_host.setter
    def upstream_host(self, host: str | None) -> None:
        self._conn.stream_info.upstream_host = host


class _WriteCallbacks:
    __slots__ = ("_conn", "_index")

    def __init__(self, conn: Connection, index: int) -> None:
        self._conn = conn
        self._index = index

    @property
    def connection(self) -> Connection:
        return self._conn

    def inject_write_data_to_filter_chain(self, data: bytes, end_stream: bool) -> None:
        self._conn._iterate_write(self._index - 1, data, end_stream)


class Connection(asyncio.Protocol):
    """One accepted TCP connection and its network filter chain."""

    def __init__(self, listener: ConnectionOwner) -> None:
        self.id = next(_ids)
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.stream_info = StreamInfo("", "")
        self.filter_state: dict[str, Any] = {}
        self.read_filters: list[ReadFilter] = []
        self.write_filters: list[WriteFilter] = []
        self._callbacks: list[ConnectionCallback] = []
        self._watermark_cbs: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._new_conn_done = 0  # read filters whose on_new_connection ran
        self._stopped_at = -1  # the read filter holding data, -1 when none
        self._held: list[bytes] = []
        self._held_end = False
        self._read_disable = 0
        self._queued_reads: list[bytes] = []
        self._queued_eof = False
        self.read_closed = False
        self.write_closed = False
        self.closed = False
        self._local_close = False
        self.above_high_watermark = False
        self.filter_chain: Any = None  # the listener's chosen FilterChain
        # Fast path: with a single read filter that never stops, data goes straight to it.
        self._single_on_data: Callable[[bytes, bool], FilterStatus] | None = None
        #: The SNI the client asked for ("" when none or not known): from ``tls_inspector``,
        #: else from the TLS handshake (Envoy's ``requestedServerName()``).
        self.requested_server_name = ""
        #: The negotiated ALPN protocol ("" without TLS or ALPN): Envoy's ``nextProtocol()``.
        #: The HTTP connection manager's ``codec_type: AUTO`` picks HTTP/2 for ``h2``.
        self.next_protocol = ""
        #: TLS facts of this connection (Envoy's ``connection.ssl()``); None in plaintext.
        self.ssl: SslConnectionInfo | None = None
        #: The accepted socket while its TLS handshake runs (closed on close()).
        self.pending_socket: socket.socket | None = None

    # -- FilterChainBuilder --------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        return self

    def add_read_filter(self, f: ReadFilter) -> None:
        f.initialize_read_filter_callbacks(_ReadCallbacks(self, len(self.read_filters)))
        self.read_filters.append(f)

    def add_write_filter(self, f: WriteFilter) -> None:
        f.initialize_write_filter_callbacks(_WriteCallbacks(self, len(self.write_filters)))
        self.write_filters.append(f)

    def add_filter(self, f: Filter) -> None:
        self.add_read_filter(f)
        self.add_write_filter(f)

    # -- public API for filters ----------------------------------------------------------------

    @property
    def remote_address(self) -> str:
        return self.stream_info.downstream_remote_address

    @property
    def local_address(self) -> str:
        return self.stream_info.downstream_local_address

    def add_connection_callbacks(self, cb: ConnectionCallback) -> None:
        self._callbacks.append(cb)

    def add_watermark_callbacks(
        self, on_high: Callable[[], None], on_low: Callable[[], None]
    ) -> None:
        """``on_high`` runs when this connection's write buffer goes above the high watermark,
        ``on_low`` when it drains below the low one."""
        self._watermark_cbs.append((on_high, on_low))

    def read_disable(self, disable: bool) -> None:
        """Nested like Envoy's readDisable: reading resumes after as many enables as disables."""
        t = self.transport
        if disable:
            self._read_disable += 1
            if self._read_disable == 1 and t is not None and not self.closed:
                t.pause_reading()
        elif self._read_disable > 0:
            self._read_disable -= 1
            if self._read_disable == 0 and not self.closed:
                try:
                    self._deliver_queued()
                except Exception:
                    self._filter_failed("on_data")
                    return
                if self._read_disable == 0 and t is not None and not self.closed:
                    t.resume_reading()

    def _deliver_queued(self) -> None:
        """Hand over what arrived while reading was disabled, in order, before reading resumes."""
        while self._queued_reads and not self._read_disable and not self.closed:
            data = self._queued_reads.pop(0)
            self.stream_info.bytes_received -= len(data)  # data_received counts it again
            self._data_received(data)
        if self._queued_eof and not self._queued_reads and not self._read_disable:
            self._queued_eof = False
            self._eof_received()

    def write(self, data: bytes, end_stream: bool = False) -> None:
        """Send bytes to the peer through the write filters."""
        if self.write_filters:
            try:
                self._iterate_write(len(self.write_filters) - 1, data, end_stream)
            except Exception:
                self._filter_failed("on_write")
        else:
            self._raw_write(data, end_stream)

    def close(self, close_type: ConnectionCloseType = ConnectionCloseType.FLUSH_WRITE) -> None:
        if self.closed:
            return
        if self.transport is None:
            pending = self.pending_socket
            if pending is not None:
                # Still in the TLS handshake: ending the socket fails the handshake, and the
                # listener accounts for the connection then.
                with contextlib.suppress(OSError):
                    pending.shutdown(socket.SHUT_RDWR)
            return
        self._local_close = True
        if close_type is ConnectionCloseType.NO_FLUSH:
            self.transport.abort()
        else:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def set_ssl(self, ssl_object: Any) -> None:
        """Called by the listener when the TLS handshake completed."""
        self.ssl = SslConnectionInfo(ssl_object)
        self.next_protocol = ssl_object.selected_alpn_protocol() or ""
        if not self.requested_server_name:
            self.requested_server_name = getattr(ssl_object, "requested_server_name", "")
        info = self.stream_info
        info.downstream_ssl = self.ssl
        info.requested_server_name = self.requested_server_name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        info = self.stream_info
        info.downstream_remote_address = _format_peer(transport.get_extra_info("peername"))
        info.downstream_local_address = _format_peer(transport.get_extra_info("sockname"))
        if handler_log.isEnabledFor(logging.DEBUG):
            conn_debug(handler_log, self.id, "new connection from %s",
                       info.downstream_remote_address)
        try:
            self.listener.on_connection_made(self, self.transport)
        except Exception:
            self._filter_failed("on_new_connection")

    def start_filters(self) -> None:
        """Called by the listener once the filter chain is built."""
        if len(self.read_filters) == 1:
            self._single_on_data = self.read_filters[0].on_data
        self._run_new_connection(0)

    def _run_new_connection(self, start: int) -> None:
        filters = self.read_filters
        last = len(filters) - 1
        for i in range(start, len(filters)):
            self._new_conn_done = i + 1
            # The last filter is terminal: its STOP_ITERATION defers nothing.
            if filters[i].on_new_connection() is not CONTINUE and i < last:
                self._single_on_data = None
                self._stopped_at = i
                return
            if self.closed:
                return

    def data_received(self, data: bytes) -> None:
        # A filter that raises resets its own connection and nothing else (try is free in
        # 3.11 until something raises).
        try:
            self._data_received(data)
        except Exception:
            self._filter_failed("on_data")

    def _filter_failed(self, where: str) -> None:
        log.exception('[Tags: "ConnectionId":"%d"] a filter raised in %s; closing the '
                      "connection", self.id, where)
        self.close(ConnectionCloseType.NO_FLUSH)

    def _data_received(self, data: bytes) -> None:
        self.stream_info.bytes_received += len(data)
        if self._read_disable:
            # Reading is disabled but bytes came anyway (uvloop starts reading after
            # connection_made even if it paused; a read may already be queued): keep them
            # until reading is enabled again, so filters never see bytes early.
            self._queued_reads.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        on_data = self._single_on_data
        if on_data is not None and self._stopped_at < 0:
            on_data(data, False)
            return
        self._iterate_read(0, data, False)

    def eof_received(self) -> bool:
        try:
            return self._eof_received()
        except Exception:
            self._filter_failed("on_data(end_stream)")
            return False

    def _eof_received(self) -> bool:
        self.read_closed = True
        if self._read_disable:
            self._queued_eof = True
            return True
        self._iterate_read(0, b"", True)
        # Both directions done: let the transport close; otherwise keep writing (half-close).
        return not self.write_closed

    def pause_writing(self) -> None:
        self.above_high_watermark = True
        for on_high, _ in self._watermark_cbs:
            on_high()

    def resume_writing(self) -> None:
        self.above_high_watermark = False
        for _, on_low in self._watermark_cbs:
            on_low()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream_info.end_time = time.monotonic()
        event = ConnectionEvent.LOCAL_CLOSE if self._local_close else ConnectionEvent.REMOTE_CLOSE
        if log.isEnabledFor(logging.DEBUG):
            if not self._local_close:
                conn_debug(log, self.id, "remote close")
            conn_debug(log, self.id, "closing socket: %d", 0 if exc is None else 1)
        for cb in self._callbacks:
            cb(event)
        self.listener.on_connection_closed(self)

    # -- the filter manager ------------------------------------------------------------------

    def _iterate_read(self, start: int, data: bytes, end_stream: bool) -> None:
        filters = self.read_filters
        n = len(filters)
        i = start
        while i < n:
            if i >= self._new_conn_done:
                self._new_conn_done = i + 1
                if filters[i].on_new_connection() is not CONTINUE and i < n - 1:
                    self._hold(i, data, end_stream)
                    return
            if self._stopped_at == i:
                # The filter already holds data: it sees the new bytes, and on CONTINUE
                # everything held goes on together.
                status = filters[i].on_data(data, end_stream)
                self._held.append(data)
                self._held_end = self._held_end or end_stream
                if status is not CONTINUE:
                    return
                data, end_stream = self._take_held()
                i += 1
                continue
            if self._stopped_at >= 0 and i > self._stopped_at:
                return
            if filters[i].on_data(data, end_stream) is not CONTINUE:
                # A terminal (last) filter consumed the bytes; any other filter that stops
                # leaves them with us until it calls continue_reading(), as Envoy's
                # connection buffer does.
                if i < n - 1:
                    self._hold(i, data, end_stream)
                return
            i += 1

    def _hold(self, i: int, data: bytes, end_stream: bool) -> None:
        self._single_on_data = None
        self._stopped_at = i
        if data or end_stream:
            self._held.append(data)
        self._held_end = self._held_end or end_stream

    def _take_held(self) -> tuple[bytes, bool]:
        data = b"".join(self._held)
        end = self._held_end
        self._held = []
        self._held_end = False
        self._stopped_at = -1
        return data, end

    def _discard_held(self, index: int) -> bytes:
        if self._stopped_at != index:
            return b""
        data = b"".join(self._held)
        self._held = []
        return data

    def _continue_reading(self, index: int) -> None:
        if self._stopped_at != index:
            return
        data, end_stream = self._take_held()
        if index + 1 < len(self.read_filters):
            if data or end_stream:
                self._iterate_read(index + 1, data, end_stream)
            elif self._new_conn_done <= index + 1:
                self._run_new_connection(index + 1)
        if self._stopped_at < 0 and len(self.read_filters) == 1:
            self._single_on_data = self.read_filters[0].on_data

    def _iterate_write(self, index: int, data: bytes, end_stream: bool) -> None:
        filters = self.write_filters
        while index >= 0:
            if filters[index].on_write(data, end_stream) is not CONTINUE:
                return
            index -= 1
        self._raw_write(data, end_stream)

    def _raw_write(self, data: bytes, end_stream: bool) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if data:
            self.stream_info.bytes_sent += len(data)
            t.write(data)
        if end_stream and not self.write_closed:
            self.write_closed = True
            if self.read_closed:
                t.close()
            elif t.can_write_eof():
                t.write_eof()
            else:
                t.close()
