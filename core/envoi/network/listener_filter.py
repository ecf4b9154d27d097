"""The listener filter contract, Envoy's ``Network::ListenerFilter`` in Python names.

Listener filters run on an accepted socket *before* a filter chain is chosen: they look at the
first bytes the client sent - peeked, not consumed, so the TLS library or the network filters
later read them again - and record what they learn on the socket (the TLS server name, the
transport protocol, the application protocols). Filter-chain matching (``server_names``,
``transport_protocol``, ``application_protocols``) then uses what they recorded.

A filter is a plain object built once per accepted socket by the callback its factory returned:

* ``on_accept(callbacks)`` - return ``CONTINUE`` when the filter is done without looking at
  data, ``STOP_ITERATION`` when it wants to see bytes.
* ``max_read_bytes`` - how many bytes the acceptor may peek for it (at most).
* ``on_data(data)`` - everything peeked so far (the same bytes again plus anything new on each
  call); return ``CONTINUE`` when done, ``STOP_ITERATION`` to wait for more. A filter that finds
  the connection unacceptable calls ``callbacks.close()``.

The acceptor bounds the whole phase with the listener's ``listener_filters_timeout`` (15 s by
default) and counts Envoy's ``downstream_pre_cx_*`` and ``downstream_listener_filter_*`` stats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from envoi.network.filter import FilterStatus


class AcceptedSocket(Protocol):
    """What listener filters read and set on a socket (Envoy's ``ConnectionSocket``)."""

    @property
    def local_address(self) -> tuple[str, int]: ...
    @property
    def remote_address(self) -> tuple[str, int]: ...

    #: SNI from the ClientHello ("" when none); set by ``tls_inspector``.
    requested_server_name: str
    #: ``"tls"`` once ``tls_inspector`` found a ClientHello; ``""`` means not detected, which
    #: filter-chain matching treats as ``raw_buffer``.
    detected_transport_protocol: str
    #: ALPN names the client offered (``tls_inspector``) or the HTTP version seen in plaintext
    #: (``http_inspector``: ``http/1.0``, ``http/1.1`` or ``h2c``).
    requested_application_protocols: Sequence[str]


class ListenerFilterCallbacks(Protocol):
    @property
    def socket(self) -> AcceptedSocket: ...

    def close(self) -> None:
        """Refuse the connection: the socket is closed and no filter chain is chosen
        (counted as ``downstream_listener_filter_error``)."""


class ListenerFilter:
    """Base class; the defaults do nothing and need no data."""

    #: Bytes to peek for this filter; 0 for a filter that reads nothing.
    max_read_bytes: int = 0

    def on_accept(self, callbacks: ListenerFilterCallbacks) -> FilterStatus:
        return FilterStatus.CONTINUE

    def on_data(self, data: bytes) -> FilterStatus:
        return FilterStatus.CONTINUE

    def on_close(self) -> None:
        """The socket closed (peer or timeout) while this filter was waiting for data."""


ListenerFilterFactoryCb = Callable[[], ListenerFilter]
