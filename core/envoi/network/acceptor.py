"""Accepting connections that need work before their filter chain is chosen: listener filters
(``tls_inspector``, ``http_inspector``) and TLS.

A listener with neither uses asyncio's own accept loop (``create_server``). One with either
accepts here: each accepted socket becomes a :class:`PendingSocket` (Envoy's
``ActiveTcpSocket``) that runs the listener filters on bytes *peeked* from the socket
(``MSG_PEEK``: nothing is consumed, so the TLS library later reads the ClientHello itself), then
the listener picks the filter chain from what the filters found and hands the socket to the
event loop (``connect_accepted_socket``, with the chain's ``ssl.SSLContext`` when it terminates
TLS; on uvloop the handshake runs in uvloop's C SSL protocol).

Peeking is level-triggered: while a filter waits for more bytes than have arrived, the socket's
``SO_RCVLOWAT`` is raised to one byte more than it holds, so the loop is not woken again until
more data (or the peer's FIN) arrives. It is reset to 1 before the socket is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from envoi.network.filter import FilterStatus
from envoi.network.listener_filter import ListenerFilter, ListenerFilterFactoryCb
from envoi.stats import Counter, Gauge


class AcceptorStats(Protocol):
    """The listener stats the acceptor counts (a subset of ``ListenerStats``)."""

    downstream_pre_cx_active: Gauge
    downstream_pre_cx_timeout: Counter
    downstream_listener_filter_error: Counter
    downstream_listener_filter_remote_close: Counter


class AcceptorOwner(Protocol):
    """The listener an acceptor works for."""

    @property
    def name(self) -> str: ...
    @property
    def stats(self) -> Any: ...
    def on_socket_ready(self, sock: socket.socket, info: Any) -> None: ...

log = logging.getLogger("envoi.listener")
CONTINUE = FilterStatus.CONTINUE
#: First peek size; doubled (up to the filter's max_read_bytes) while a filter needs more.
INITIAL_PEEK = 4096
#: Connections accepted per readiness event before yielding to the loop.
ACCEPT_BATCH = 64
_LOWAT = getattr(socket, "SO_RCVLOWAT", None)


class PendingSocket:
    """An accepted socket while its listener filters run; it is also the filters'
    callbacks object and the socket they read and set."""

    __slots__ = (
        "_buffer",
        "_filters",
        "_index",
        "_lowat",
        "_peek_size",
        "_reading",
        "_timer",
        "acceptor",
        "detected_transport_protocol",
        "done",
        "local_address",
        "remote_address",
        "requested_application_protocols",
        "requested_server_name",
        "sock",
    )

    def __init__(self, acceptor: Acceptor, sock: socket.socket,
                 local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.local_address = local
        self.remote_address = remote
        self.requested_server_name = ""
        self.detected_transport_protocol = ""
        self.requested_application_protocols: Sequence[str] = ()
        self._filters: list[ListenerFilter] = [f() for f in acceptor.filter_factories]
        self._index = 0
        self._buffer = b""
        self._peek_size = INITIAL_PEEK
        self._reading = False
        self._lowat = 1
        self._timer: asyncio.TimerHandle | None = None
        self.done = False

    # -- ListenerFilterCallbacks ---------------------------------------------------------------

    @property
    def socket(self) -> PendingSocket:
        return self

    def close(self) -> None:
        """A filter refuses the connection."""
        if self.done:
            return
        self.acceptor.stats.downstream_listener_filter_error.value += 1
        self._finish()
        self._close_socket()

    # -- running the filters -----------------------------------------------------------------

    def start(self) -> None:
        timeout = self.acceptor.timeout
        if timeout:
            self._timer = self.acceptor.loop.call_later(timeout, self._on_timeout)
        self._run()

    def _run(self) -> None:
        filters = self._filters
        while self._index < len(filters):
            f = filters[self._index]
            if f.on_accept(self) is not CONTINUE:
                if self.done:
                    return
                if f.max_read_bytes <= 0:
                    self._index += 1
                    continue
                self._peek_size = max(self._peek_size, min(INITIAL_PEEK, f.max_read_bytes))
                if self._buffer:
                    # What earlier filters peeked is this filter's first data.
                    if f.on_data(self._buffer) is CONTINUE:
                        if self.done:
                            return
                        self._index += 1
                        continue
                    if self.done:
                        return
                self._want_more()
                return
            if self.done:
                return
            self._index += 1
        self._complete()

    def _want_more(self) -> None:
        f = self._filters[self._index]
        if len(self._buffer) >= f.max_read_bytes:
            # The filter saw all it may see and still wants more: it cannot decide.
            log.debug("listener filter %s undecided after %d bytes", type(f).__name__,
                      len(self._buffer))
            self.close()
            return
        if len(self._buffer) >= self._peek_size:
            self._peek_size = min(self._peek_size * 2, f.max_read_bytes)
        if self._buffer and _LOWAT is not None:
            # Not woken again until at least one more byte (or EOF) is there.
            want = len(self._buffer) + 1
            if want != self._lowat:
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, _LOWAT, want)
                    self._lowat = want
                except OSError:
                    pass
        if not self._reading:
            self._reading = True
            self.acceptor.loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        if self.done:
            return
        try:
            data = self.sock.recv(self._peek_size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.acceptor.stats.downstream_listener_filter_remote_close.value += 1
            self._abandon()
            return
        if not data:
            self.acceptor.stats.downstream_listener_filter_remote_close.value += 1
            self._abandon()
            return
        if len(data) <= len(self._buffer):
            # Woken without new bytes: the peer's FIN (unread data keeps MSG_PEEK from
            # showing the EOF), or a platform without SO_RCVLOWAT.
            if _peer_closed(self.sock):
                self.acceptor.stats.downstream_listener_filter_remote_close.value += 1
                self._abandon()
            elif _LOWAT is None:
                # No way to wait for more without spinning: look again shortly.
                self._pause_reading()
                self.acceptor.loop.call_later(0.005, self._resume_reading)
            return
        self._buffer = data
        f = self._filters[self._index]
        status = f.on_data(data)
        if self.done:
            return
        if status is CONTINUE:
            self._index += 1
            self._run()
        else:
            self._want_more()

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.acceptor.loop.remove_reader(self.sock.fileno())

    def _resume_reading(self) -> None:
        if not self.done and not self._reading:
            self._reading = True
            self.acceptor.loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_timeout(self) -> None:
        self._timer = None
        if self.done:
            return
        self.acceptor.stats.downstream_pre_cx_timeout.value += 1
        if self.acceptor.continue_on_timeout:
            self._complete()
            return
        self._abandon(reset=True)

    def _finish(self) -> None:
        self.done = True
        self._pause_reading()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.acceptor.pending.discard(self)
        self.acceptor.stats.downstream_pre_cx_active.dec()

    def _abandon(self, reset: bool = False) -> None:
        """The peer closed, or time ran out: tell waiting filters, close the socket."""
        if self.done:
            return
        if self._index < len(self._filters):
            self._filters[self._index].on_close()
        self._finish()
        self._close_socket(reset)

    def _close_socket(self, reset: bool = True) -> None:
        try:
            if reset:
                # RST, as Envoy's close of a socket with unread data.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.sock.close()

    def _complete(self) -> None:
        self._finish()
        if self._lowat != 1:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, _LOWAT or 0, 1)
        self.acceptor.listener.on_socket_ready(self.sock, self)


_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_CLOSE_WAIT = 8  # linux/tcp_states.h: the peer sent FIN, we have not closed


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the peer has sent its FIN (Linux TCP_INFO's state); False when unknown."""
    if _TCP_INFO is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)
    except OSError:
        return False
    return info[0] in (_TCP_CLOSE_WAIT, 7)  # CLOSE_WAIT, or CLOSE (7) after a reset


class Acceptor:
    """The accept loop of one listener socket, for listeners with listener filters or TLS."""

    def __init__(self, listener: AcceptorOwner, sock: socket.socket,
                 filter_factories: Sequence[ListenerFilterFactoryCb], timeout: float,
                 continue_on_timeout: bool) -> None:
        """Start accepting on ``sock`` (called on the running loop)."""
        self.listener = listener
        self.filter_factories = list(filter_factories)
        self.timeout = timeout
        self.continue_on_timeout = continue_on_timeout
        self.loop = asyncio.get_running_loop()
        self.pending: set[PendingSocket] = set()
        assert listener.stats is not None
        self.stats: AcceptorStats = listener.stats
        self.sock: socket.socket | None = sock
        self.loop.add_reader(sock.fileno(), self._on_acceptable)

    def stop(self, *, abandon: bool = True) -> None:
        """Accept no more. ``abandon=False`` (a listener draining): the sockets already
        accepted finish their listener filters and reach the listener as usual."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock = None
        if abandon:
            self.abandon_pending()

    def abandon_pending(self) -> None:
        for p in list(self.pending):
            p._abandon()

    def _on_acceptable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, remote = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: try again at the next event
                log.warning("listener '%s': accept failed: %s", self.listener.name, exc)
                return
            self._accepted(conn, remote)

    def _accepted(self, conn: socket.socket, remote: Any) -> None:
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = conn.getsockname()
        except OSError:
            conn.close()
            return
        if not self.filter_factories:
            self.listener.on_socket_ready(conn, _NoInspection(local, remote))
            return
        pending = PendingSocket(self, conn, local, remote)
        self.pending.add(pending)
        self.stats.downstream_pre_cx_active.inc()
        try:
            pending.start()
        except Exception:
            log.exception("listener '%s': a listener filter raised; closing the connection",
                          self.listener.name)
            if not pending.done:
                pending.close()


class _NoInspection:
    """The socket facts for a listener without listener filters."""

    __slots__ = ("local_address", "remote_address")
    requested_server_name = ""
    detected_transport_protocol = ""
    requested_application_protocols: Sequence[str] = ()

    def __init__(self, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.local_address = local
        self.remote_address = remote
