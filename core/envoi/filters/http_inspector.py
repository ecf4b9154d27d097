"""``envoy.filters.listener.http_inspector``: tell HTTP/1.0, HTTP/1.1 and the HTTP/2 preface
apart on a plaintext connection, for ``application_protocols`` matching (``http/1.0``,
``http/1.1``, ``h2c``). A connection that ``tls_inspector`` found to be TLS is left alone.
Stats are Envoy's, under ``http_inspector.``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, ListenerFilterFactory
from envoi.network.filter import FilterStatus
from envoi.network.listener_filter import (
    ListenerFilter,
    ListenerFilterCallbacks,
    ListenerFilterFactoryCb,
)
from envoi.stats import Counter, StatsGroup

#: Envoy's MAX_INSPECT_SIZE: a request line longer than this is a read error.
MAX_INSPECT_SIZE = 64 * 1024
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STOP = FilterStatus.STOP_ITERATION
CONTINUE = FilterStatus.CONTINUE

# A request line: method (a token), target, and "HTTP/x.y" (absent: HTTP/0.9, reported as 1.0).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[^\s\x00-\x1f\x7f]+")
_VERSION = re.compile(rb"HTTP/\d\.\d")
_VERSION_PREFIX = re.compile(rb"H(?:T(?:T(?:P(?:/(?:\d(?:\.\d?)?)?)?)?)?)?")
_SPACES = re.compile(rb" +")


def _request_line(line: bytes, complete: bool) -> bytes | None:
    """The version of a request line (b"" when it has none), or None when ``line`` is not one
    (``complete``) or cannot begin one (not ``complete``)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    parts = _SPACES.split(line)
    if parts and parts[-1] == b"" and len(parts) > 1:
        parts.pop()  # trailing spaces
    if not _TOKEN.fullmatch(parts[0]):
        return None
    if len(parts) == 1:
        return None if complete else b""
    if not _TARGET.fullmatch(parts[1]):
        return None
    if len(parts) == 2:
        return b""
    if len(parts) > 3:
        return None
    ok = (_VERSION if complete else _VERSION_PREFIX).fullmatch(parts[2])
    return parts[2] if ok else None


class HttpInspectorStats(StatsGroup):
    read_error: Counter
    http10_found: Counter
    http11_found: Counter
    http2_found: Counter
    http_not_found: Counter


@dataclass(frozen=True)
class HttpInspectorConfig:
    stats: HttpInspectorStats


def detect(data: bytes) -> str | None:
    """``http/1.0``, ``http/1.1``, ``h2c``, ``""`` (not HTTP) or None (need more bytes)."""
    n = min(len(data), len(H2_PREFACE))
    if data[:n] == H2_PREFACE[:n]:
        return "h2c" if len(data) >= len(H2_PREFACE) else None
    if data[:1] in (b"\r", b"\n"):
        return ""
    end = data.find(b"\n")
    if end < 0:
        return None if _request_line(data, False) is not None else ""
    version = _request_line(data[:end], True)
    if version is None:
        return ""
    return "http/1.1" if version == b"HTTP/1.1" else "http/1.0"


class HttpInspector(ListenerFilter):
    __slots__ = ("callbacks", "config")
    max_read_bytes = MAX_INSPECT_SIZE

    def __init__(self, config: HttpInspectorConfig) -> None:
        self.config = config

    def on_accept(self, callbacks: ListenerFilterCallbacks) -> FilterStatus:
        transport = callbacks.socket.detected_transport_protocol
        if transport and transport != "raw_buffer":
            return CONTINUE
        self.callbacks = callbacks
        return STOP

    def on_data(self, data: bytes) -> FilterStatus:
        stats = self.config.stats
        found = detect(data)
        if found is None:
            if len(data) >= MAX_INSPECT_SIZE:
                stats.read_error.value += 1
                self.callbacks.close()
            return STOP
        if not found:
            stats.http_not_found.value += 1
            return CONTINUE
        if found == "h2c":
            stats.http2_found.value += 1
        elif found == "http/1.1":
            stats.http11_found.value += 1
        else:
            stats.http10_found.value += 1
        self.callbacks.socket.requested_application_protocols = (found,)
        return CONTINUE


class HttpInspectorFactory(ListenerFilterFactory):
    name = "envoy.filters.listener.http_inspector"
    aliases = ("envoy.listener.http_inspector",)
    type_urls = ("envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",)

    def create_filter_factory(self, config: Any, context: FactoryContext
                              ) -> ListenerFilterFactoryCb:
        cfg = HttpInspectorConfig(HttpInspectorStats(context.scope.scope("http_inspector")))
        return lambda: HttpInspector(cfg)


@hookimpl
def envoi_listener_filters() -> Sequence[ListenerFilterFactory]:
    return [HttpInspectorFactory()]
