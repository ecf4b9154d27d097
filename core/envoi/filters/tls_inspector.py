"""``envoy.filters.listener.tls_inspector``: find the TLS server name and the ALPN protocols in
the ClientHello before the filter chain is chosen.

The filter reads peeked bytes (see :mod:`envoi.network.acceptor`) with the sans-IO parser in
:mod:`envoi.tls.client_hello` and records on the socket what filter-chain matching needs:
``transport_protocol: tls``, the SNI for ``server_names`` and the offered ALPN names for
``application_protocols``. Bytes that are not a ClientHello leave the connection plaintext
(``tls_not_found``), as in Envoy. Stats are Envoy's, under ``tls_inspector.``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import FactoryContext, ListenerFilterFactory
from envoi.network.filter import FilterStatus
from envoi.network.listener_filter import (
    ListenerFilter,
    ListenerFilterCallbacks,
    ListenerFilterFactoryCb,
)
from envoi.stats import Counter, Histogram, StatsGroup
from envoi.tls.client_hello import ClientHello, NeedMore, parse_client_hello

#: Envoy's TLS_MAX_CLIENT_HELLO (BoringSSL's SSL3_RT_MAX_PLAIN_LENGTH): the default and the
#: largest ``max_client_hello_size``.
MAX_CLIENT_HELLO = 16 * 1024
STOP = FilterStatus.STOP_ITERATION
CONTINUE = FilterStatus.CONTINUE


class TlsInspectorStats(StatsGroup):
    client_hello_too_large: Counter
    tls_found: Counter
    tls_not_found: Counter
    alpn_found: Counter
    alpn_not_found: Counter
    sni_found: Counter
    sni_not_found: Counter
    bytes_processed: Histogram


@dataclass(frozen=True)
class TlsInspectorConfig:
    stats: TlsInspectorStats
    max_client_hello_size: int
    close_on_parse_error: bool


class TlsInspector(ListenerFilter):
    __slots__ = ("callbacks", "config", "max_read_bytes")

    def __init__(self, config: TlsInspectorConfig) -> None:
        self.config = config
        self.max_read_bytes = config.max_client_hello_size

    def on_accept(self, callbacks: ListenerFilterCallbacks) -> FilterStatus:
        self.callbacks = callbacks
        return STOP

    def on_data(self, data: bytes) -> FilterStatus:
        cfg = self.config
        stats = cfg.stats
        result = parse_client_hello(data)
        if isinstance(result, NeedMore):
            if len(data) >= cfg.max_client_hello_size or \
                    result.at_least > cfg.max_client_hello_size:
                stats.client_hello_too_large.value += 1
                self.callbacks.close()
            return STOP
        if not isinstance(result, ClientHello):
            if cfg.close_on_parse_error:
                self.callbacks.close()
                return STOP
            stats.tls_not_found.value += 1
            stats.bytes_processed.record(len(data))
            return CONTINUE
        sock = self.callbacks.socket
        if result.server_name:
            stats.sni_found.value += 1
            sock.requested_server_name = result.server_name
        else:
            stats.sni_not_found.value += 1
        stats.tls_found.value += 1
        if result.alpn:
            stats.alpn_found.value += 1
            sock.requested_application_protocols = result.alpn
        else:
            stats.alpn_not_found.value += 1
        sock.detected_transport_protocol = "tls"
        stats.bytes_processed.record(result.size)
        return CONTINUE


implements("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
           "enable_ja3_fingerprinting", "enable_ja4_fingerprinting", "max_client_hello_size",
           "close_connection_on_client_hello_parsing_errors")


class TlsInspectorFactory(ListenerFilterFactory):
    name = "envoy.filters.listener.tls_inspector"
    aliases = ("envoy.listener.tls_inspector",)
    type_urls = ("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",)

    def create_filter_factory(self, config: Any, context: FactoryContext
                              ) -> ListenerFilterFactoryCb:
        path = context.path
        issues = []
        for name in ("enable_ja3_fingerprinting", "enable_ja4_fingerprinting"):
            if config.HasField(name) and getattr(config, name).value:
                issues.append(ConfigIssue(f"{path}.{name}", "not implemented by envoi"))
        if config.HasField("initial_read_buffer_size"):
            issues.append(ConfigIssue(path + ".initial_read_buffer_size",
                                      "not implemented by envoi"))
        size = MAX_CLIENT_HELLO
        if config.HasField("max_client_hello_size"):
            size = config.max_client_hello_size.value
            if size > MAX_CLIENT_HELLO:
                issues.append(ConfigIssue(path + ".max_client_hello_size",
                                          f"max_client_hello_size of {size} is greater than "
                                          f"maximum of {MAX_CLIENT_HELLO}."))
        if issues:
            raise ConfigError(issues)
        cfg = TlsInspectorConfig(
            TlsInspectorStats(context.scope.scope("tls_inspector")), size,
            config.close_connection_on_client_hello_parsing_errors)
        return lambda: TlsInspector(cfg)


@hookimpl
def envoi_listener_filters() -> Sequence[ListenerFilterFactory]:
    return [TlsInspectorFactory()]
