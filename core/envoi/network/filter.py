"""The network (L4) filter contract, Envoy's ``envoy/network/filter.h`` in Python names.

A connection runs its *read filters* first to last on bytes from the peer and its *write filters*
last to first on bytes going to the peer. Each call returns a :class:`FilterStatus`:

* ``CONTINUE`` - pass the bytes on to the next filter.
* ``STOP_ITERATION`` - stop here. The connection holds the bytes at this filter's position and
  passes them on when the filter calls ``callbacks.continue_reading()``; a filter that wants to
  replace them calls ``callbacks.discard_held_data()`` and then
  ``callbacks.inject_read_data_to_filter_chain(new, end_stream)``. The last read filter of a
  chain is terminal (tcp_proxy, http_connection_manager): it consumes what it gets, so its
  ``STOP_ITERATION`` holds nothing.

A filter factory (see :class:`envoi.extensions.NetworkFilterFactory`) turns config into a
callback run once per new connection, which adds fresh filter objects to that connection. Filters
are plain objects: no hook dispatch happens per byte.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol

from envoi.stream_info import StreamInfo


class FilterStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1


class ConnectionCloseType(enum.Enum):
    FLUSH_WRITE = "flush_write"  # write out what is buffered, then close
    NO_FLUSH = "no_flush"  # close at once, discarding buffered output (a reset)


class ConnectionEvent(enum.Enum):
    REMOTE_CLOSE = "remote_close"
    LOCAL_CLOSE = "local_close"
    CONNECTED = "connected"


ConnectionCallback = Callable[[ConnectionEvent], Any]


class SslInfo(Protocol):
    """The TLS facts of a connection (Envoy's ``Ssl::ConnectionInfo``), read when asked for."""

    @property
    def tls_version(self) -> str:
        """``TLSv1.2``, ``TLSv1.3``."""
    @property
    def ciphersuite(self) -> str: ...
    @property
    def alpn(self) -> str: ...
    @property
    def sni(self) -> str: ...
    @property
    def session_reused(self) -> bool: ...
    @property
    def peer_certificate_presented(self) -> bool: ...
    @property
    def peer_certificate_validated(self) -> bool: ...
    @property
    def sha256_peer_certificate_digest(self) -> str: ...
    @property
    def uri_san_peer_certificate(self) -> list[str]: ...
    @property
    def dns_san_peer_certificate(self) -> list[str]: ...
    @property
    def subject_peer_certificate(self) -> str: ...


class Connection(Protocol):
    """What a filter may do with its downstream connection (Envoy's ``Network::Connection``)."""

    @property
    def id(self) -> int:
        """Unique within the process; Envoy's ``[C<id>]`` in debug logs."""
    @property
    def stream_info(self) -> StreamInfo: ...
    @property
    def remote_address(self) -> str:
        """``ip:port`` of the peer (``[ip]:port`` for IPv6)."""
    @property
    def local_address(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def ssl(self) -> SslInfo | None:
        """TLS facts when the filter chain terminates TLS; None in plaintext."""
    @property
    def next_protocol(self) -> str:
        """The ALPN protocol TLS negotiated (``h2``, ``http/1.1``); "" without TLS or ALPN."""
    @property
    def requested_server_name(self) -> str:
        """The SNI the client sent ("" when none, or in plaintext)."""
    @property
    def above_high_watermark(self) -> bool:
        """The write buffer is above its high watermark: the peer is slow to read."""
    def write(self, data: bytes, end_stream: bool = False) -> None:
        """Send bytes to the peer through the write filters; ``end_stream`` half-closes."""
    def close(self, close_type: ConnectionCloseType = ...) -> None:
        """``FLUSH_WRITE`` (the default) writes what is buffered first; ``NO_FLUSH`` resets."""
    def read_disable(self, disable: bool) -> None:
        """Stop (True) or resume (False) reading; nested, like Envoy's ``readDisable``."""
    def add_connection_callbacks(self, cb: ConnectionCallback) -> None:
        """``cb(ConnectionEvent)`` when the connection closes."""
    def add_watermark_callbacks(
        self, on_high: Callable[[], None], on_low: Callable[[], None]
    ) -> None:
        """Called when the write buffer crosses the high / drops below the low watermark."""


class ReadFilterCallbacks(Protocol):
    @property
    def connection(self) -> Connection: ...
    def continue_reading(self) -> None: ...
    def discard_held_data(self) -> bytes: ...
    def inject_read_data_to_filter_chain(self, data: bytes, end_stream: bool) -> None: ...
    @property
    def upstream_host(self) -> str | None: ...
    @upstream_host.setter
    def upstream_host(self, host: str | None) -> None: ...


class WriteFilterCallbacks(Protocol):
    @property
    def connection(self) -> Connection: ...
    def inject_write_data_to_filter_chain(self, data: bytes, end_stream: bool) -> None: ...


class ReadFilter:
    """Base class for read filters; every method has a pass-through default."""

    read_callbacks: ReadFilterCallbacks

    def initialize_read_filter_callbacks(self, callbacks: ReadFilterCallbacks) -> None:
        self.read_callbacks = callbacks

    def on_new_connection(self) -> FilterStatus:
        return FilterStatus.CONTINUE

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        return FilterStatus.CONTINUE


class WriteFilter:
    """Base class for write filters."""

    write_callbacks: WriteFilterCallbacks

    def initialize_write_filter_callbacks(self, callbacks: WriteFilterCallbacks) -> None:
        self.write_callbacks = callbacks

    def on_write(self, data: bytes, end_stream: bool) -> FilterStatus:
        return FilterStatus.CONTINUE


class Filter(ReadFilter, WriteFilter):
    """A filter on both paths (Envoy's ``Network::Filter``)."""


class FilterChainBuilder(Protocol):
    """What a network filter factory callback gets: the new connection's filter manager."""

    @property
    def connection(self) -> Connection: ...
    def add_read_filter(self, f: ReadFilter) -> None: ...
    def add_write_filter(self, f: WriteFilter) -> None: ...
    def add_filter(self, f: Filter) -> None: ...


NetworkFilterFactoryCb = Callable[[FilterChainBuilder], None]
