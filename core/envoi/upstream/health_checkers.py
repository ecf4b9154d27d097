"""The built-in health-check probes: HTTP/1.1 (``http_health_check``) and TCP
(``tcp_health_check``), registered through ``envoi_health_checkers`` like a plugin's would be.

Each probe does one check when asked (see the contract in :mod:`envoi.upstream.health_check`) and
keeps its connection between checks when ``reuse_connection`` (the default) allows.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import h11

from envoi.config import ConfigError, ConfigIssue, implements, refuse_unlisted
from envoi.extensions import FactoryContext, HealthCheckerFactory
from envoi.upstream.health_check import (
    RESULT_DEGRADED,
    RESULT_HEALTHY,
    RESULT_NETWORK_FAILURE,
    RESULT_UNHEALTHY,
    RESULT_UNHEALTHY_RETRIABLE,
    Probe,
    ProbeFactory,
    probe_address,
)
from envoi.upstream.host import Host

USER_AGENT = b"Envoy/HC"  # what Envoy's checks send, so upstream filters treat envoi alike
_READ = 65536


def unimplemented(msg: Any, implemented: frozenset[str] | set[str], path: str) -> list[ConfigIssue]:
    """A config issue for every field of ``msg`` that is set but not in ``implemented``."""
    return [ConfigIssue(f"{path}.{fd.name}", "is not supported by envoi")
            for fd, _ in msg.ListFields() if fd.name not in implemented]


class _Stream:
    """A connection a probe may keep between checks; through the cluster's TLS context when
    it has one (as Envoy's health checks use the cluster's transport socket)."""

    def __init__(self, cluster: Any = None, alpn: tuple[str, ...] = ()) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.cluster = cluster
        self.alpn = alpn

    async def open(self, host: Host) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            addr, port = probe_address(host)
            tls = getattr(self.cluster, "tls", None)
            if tls is None:
                self.reader, self.writer = await asyncio.open_connection(addr, port)
            else:
                self.reader, self.writer = await _open_tls(self.cluster, tls, host, addr, port,
                                                           self.alpn)
        return self.reader, self.writer

    def close(self) -> None:
        w = self.writer
        self.reader = self.writer = None
        if w is not None:
            with contextlib.suppress(Exception):
                w.transport.abort()


async def _open_tls(cluster: Any, tls: Any, host: Host, addr: str, port: int,
                    alpn: tuple[str, ...]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection for a probe, checked and counted as ``Cluster.connect`` does."""
    import ssl

    try:
        reader, writer = await asyncio.open_connection(
            addr, port, ssl=tls.context_for(alpn),
            server_hostname=tls.server_hostname(host.hostname) or addr)
    except ssl.SSLError as exc:
        cluster.ssl_stats.record_failure(exc)
        raise
    ssl_object = writer.get_extra_info("ssl_object")
    failure = tls.check_peer(ssl_object)
    if failure is not None:
        getattr(cluster.ssl_stats, failure).value += 1
        writer.transport.abort()
        raise ConnectionError(f"the peer certificate failed {failure}")
    cluster.ssl_stats.record_handshake(ssl_object, tls.curve)
    return reader, writer


#: The connection a plugin's probe may keep between checks: ``ProbeStream(cluster, alpn)``,
#: ``await open(host)`` gives (reader, writer) over the cluster's transport socket (TLS with its
#: ALPN when the cluster has one, checked and counted as the cluster's connections are),
#: ``close()`` drops it.
ProbeStream = _Stream


# -- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpCheck:
    path: bytes
    host: bytes  # the Host header (config ``host``, else the cluster's name)
    method: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    expected: tuple[tuple[int, int], ...]  # [start, end) ranges
    retriable: tuple[tuple[int, int], ...]
    reuse_connection: bool


def _in(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    return any(a <= status < b for a, b in ranges)


class HttpProbe:
    """GET ``path`` over HTTP/1.1; the status decides (``expected_statuses``, default 200)."""

    def __init__(self, host: Host, check: HttpCheck, cluster: Any = None) -> None:
        self.host = host
        self.check_cfg = check
        self.stream = _Stream(cluster, ("http/1.1",))
        self.conn: h11.Connection | None = None
        self.authority = check.host

    async def check(self) -> str:
        c = self.check_cfg
        try:
            reader, writer = await self.stream.open(self.host)
        except OSError:
            self.close()
            return RESULT_NETWORK_FAILURE
        conn = self.conn
        if conn is None or conn.our_state is not h11.IDLE:
            conn = self.conn = h11.Connection(h11.CLIENT)
        headers = [(b"host", self.authority), (b"user-agent", USER_AGENT), *c.headers]
        try:
            writer.write(conn.send(h11.Request(method=c.method, target=c.path,
                                               headers=headers)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            status = 0
            degraded = False
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(_READ)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    degraded = any(k == b"x-envoy-degraded" for k, _ in event.headers)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("closed before the response ended")
        except (OSError, ConnectionError, h11.ProtocolError):
            self.close()
            return RESULT_NETWORK_FAILURE
        if c.reuse_connection and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        if _in(c.expected, status):
            return RESULT_DEGRADED if degraded else RESULT_HEALTHY
        self.close()
        return RESULT_UNHEALTHY_RETRIABLE if _in(c.retriable, status) else RESULT_UNHEALTHY

    def close(self) -> None:
        self.stream.close()
        self.conn = None


_HTTP_FIELDS = frozenset({"host", "path", "request_headers_to_add", "request_headers_to_remove",
                          "expected_statuses", "retriable_statuses", "method",
                          "codec_client_type"})


# envoi.config.implemented: the same lists the checks below use. Headers to add are
# key/value only here (append options are refused below).
implements("envoy.config.core.v3.HealthCheck.HttpHealthCheck", *_HTTP_FIELDS)
implements("envoy.config.core.v3.HealthCheck.TcpHealthCheck", "send", "receive")
implements("envoy.config.core.v3.HealthCheck.Payload", "text", "binary")
implements("envoy.config.core.v3.HeaderValueOption", "header")
implements("envoy.config.core.v3.HeaderValue", "key", "value")
implements("envoy.type.v3.Int64Range", "start", "end")


class HttpHealthChecker(HealthCheckerFactory):
    name = "envoy.health_checkers.http"
    health_check_fields = ("http_health_check",)

    def create_health_checker(self, cluster: Any, config: Any,
                              context: FactoryContext) -> ProbeFactory:
        hc = config.http_health_check
        path = context.path + ".http_health_check"
        issues = unimplemented(hc, _HTTP_FIELDS, path)
        for i, opt in enumerate(hc.request_headers_to_add):
            issues += refuse_unlisted(opt, ("header",), f"{path}.request_headers_to_add[{i}]")
        if hc.codec_client_type not in (0,):  # HTTP1 only
            issues.append(ConfigIssue(path + ".codec_client_type",
                                      "only HTTP1 health checks are supported by envoi"))
        if not hc.path:
            issues.append(ConfigIssue(path + ".path", "required"))
        method_fd = hc.DESCRIPTOR.fields_by_name["method"]
        method = method_fd.enum_type.values_by_number[hc.method].name
        if method == "METHOD_UNSPECIFIED":
            method = "GET"
        if method == "CONNECT":
            issues.append(ConfigIssue(path + ".method", "CONNECT is not allowed"))
        if issues:
            raise ConfigError(issues)
        remove = {n.lower().encode() for n in hc.request_headers_to_remove}
        headers = tuple((o.header.key.lower().encode(), o.header.value.encode())
                        for o in hc.request_headers_to_add
                        if o.header.key.lower().encode() not in remove)
        expected = tuple((r.start, r.end) for r in hc.expected_statuses) or ((200, 201),)
        check = HttpCheck(
            path=hc.path.encode(), host=(hc.host or cluster.name).encode(),
            method=method.encode(), headers=headers, expected=expected,
            retriable=tuple((r.start, r.end) for r in hc.retriable_statuses),
            reuse_connection=config.reuse_connection.value
            if config.HasField("reuse_connection") else True)

        def probe(host: Host) -> Probe:
            return HttpProbe(host, check, cluster)

        return probe


# -- TCP -----------------------------------------------------------------------------------


def _payload(p: Any, path: str) -> bytes:
    if p.WhichOneof("payload") == "binary":
        return bytes(p.binary)
    try:
        return binascii.unhexlify(p.text)
    except (binascii.Error, ValueError):
        raise ConfigError([ConfigIssue(path + ".text", f"invalid hex string '{p.text}'")]) \
            from None


class TcpProbe:
    """Connect; send ``send``; healthy once every ``receive`` payload arrived, in order.
    With neither, a successful connect is a pass."""

    def __init__(self, host: Host, send: bytes, receive: tuple[bytes, ...], reuse: bool,
                 cluster: Any = None) -> None:
        self.host = host
        self.send = send
        self.receive = receive
        self.reuse = reuse
        self.stream = _Stream(cluster)

    @staticmethod
    def matches(expected: tuple[bytes, ...], data: bytes) -> bool:
        """Every expected segment found in ``data``, each after the previous one (Envoy)."""
        at = 0
        for seg in expected:
            i = data.find(seg, at)
            if i < 0:
                return False
            at = i + len(seg)
        return True

    async def check(self) -> str:
        try:
            reader, writer = await self.stream.open(self.host)
            if self.send:
                writer.write(self.send)
            if self.receive:
                buf = b""
                while not self.matches(self.receive, buf):
                    chunk = await reader.read(_READ)
                    if not chunk:
                        raise ConnectionError("closed before the expected payload")
                    buf += chunk
        except (OSError, ConnectionError):
            self.close()
            return RESULT_NETWORK_FAILURE
        if not self.reuse:
            self.close()
        return RESULT_HEALTHY

    def close(self) -> None:
        self.stream.close()


class TcpHealthChecker(HealthCheckerFactory):
    name = "envoy.health_checkers.tcp"
    health_check_fields = ("tcp_health_check",)

    def create_health_checker(self, cluster: Any, config: Any,
                              context: FactoryContext) -> ProbeFactory:
        tc = config.tcp_health_check
        path = context.path + ".tcp_health_check"
        issues = unimplemented(tc, frozenset({"send", "receive"}), path)
        if issues:
            raise ConfigError(issues)
        send = _payload(tc.send, path + ".send") if tc.HasField("send") else b""
        receive = tuple(_payload(p, f"{path}.receive[{i}]") for i, p in enumerate(tc.receive))
        reuse = config.reuse_connection.value if config.HasField("reuse_connection") else True

        def probe(host: Host) -> Probe:
            return TcpProbe(host, send, receive, reuse, cluster)

        return probe
