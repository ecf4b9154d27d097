"""The gRPC health checker (a cluster's ``health_checks[].grpc_health_check``), registered through
the core's ``envoi_health_checkers`` hook: ``grpc.health.v1.Health/Check`` over HTTP/2 (the
envoi-http client codec), as Envoy's ``GrpcHealthCheckerImpl`` does it.

Each check is one stream: ``POST /grpc.health.v1.Health/Check`` with ``:authority`` =
``authority`` (else the cluster's name), ``content-type: application/grpc``, ``te: trailers``,
``user-agent: Envoy/HC`` and ``initial_metadata``, carrying a ``HealthCheckRequest`` whose
``service`` is ``service_name``. The host is healthy when the call ends with ``grpc-status: 0``
and exactly one ``HealthCheckResponse`` whose status is ``SERVING``. Anything else the upstream
answers (another serving status, a non-200, a non-gRPC content type, a missing or non-zero
``grpc-status``, a malformed or second message) is an active failure (unhealthy at once); a
connect failure, a reset stream or a closed connection is a network failure (counted towards
``unhealthy_threshold``). The connection is kept between checks unless ``reuse_connection`` is
false or the upstream sent GOAWAY.

The two messages are hand-coded (one optional field each), so no generated code is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements, refuse_unlisted
from envoi.extensions import FactoryContext, HealthCheckerFactory
from envoi.http.grpc import is_grpc_content_type
from envoi.upstream.health_check import (
    RESULT_HEALTHY,
    RESULT_NETWORK_FAILURE,
    RESULT_UNHEALTHY,
    Probe,
    ProbeFactory,
)
from envoi.upstream.health_checkers import ProbeStream, unimplemented
from envoi.upstream.host import Host
from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import H2Codec
from envoi_http.router.upstream_protocol import from_cluster

from envoi_grpc.framing import MessageDecoder, encode

PATH = b"/grpc.health.v1.Health/Check"
USER_AGENT = b"Envoy/HC"
_FIELDS = ("service_name", "authority", "initial_metadata")
implements("envoy.config.core.v3.HealthCheck.GrpcHealthCheck", *_FIELDS)

# grpc.health.v1.HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
_READ = 65536
_MAX_RESPONSE = 1 << 16  # a HealthCheckResponse is a few bytes; more is not a health answer


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_request(service: str) -> bytes:
    """``HealthCheckRequest{service}`` (field 1, a string; absent when empty)."""
    raw = service.encode()
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def decode_response(data: bytes) -> int | None:
    """``HealthCheckResponse.status`` (field 1, an enum; 0 when absent); None when ``data`` is
    not a valid message. Unknown fields are skipped, as protobuf parsers do."""
    status = UNKNOWN
    pos = 0
    n = len(data)
    try:
        while pos < n:
            key, pos = _read_varint(data, pos)
            field, wire = key >> 3, key & 7
            if field == 0:
                return None
            if wire == 0:
                value, pos = _read_varint(data, pos)
                if field == 1:
                    status = value
            elif wire == 1:
                pos += 8
            elif wire == 2:
                size, pos = _read_varint(data, pos)
                pos += size
            elif wire == 5:
                pos += 4
            else:
                return None
            if pos > n:
                return None
    except IndexError:
        return None
    return status


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


class GrpcProbe:
    """One host's gRPC health checks, over one HTTP/2 connection kept between checks."""

    def __init__(self, host: Host, cluster: Any, authority: bytes,
                 headers: list[tuple[bytes, bytes]], body: bytes, reuse: bool) -> None:
        self.host = host
        self.authority = authority
        self.headers = headers
        self.request = encode(body)
        self.reuse = reuse
        self.scheme = b"https" if getattr(cluster, "tls", None) is not None else b"http"
        self.stream = ProbeStream(cluster, ("h2",))
        self.codec: H2Codec | None = None

    async def check(self) -> str:
        try:
            reader, writer = await self.stream.open(self.host)
        except OSError:
            self.close()
            return RESULT_NETWORK_FAILURE
        codec = self.codec
        if codec is None or codec.dead or codec.goaway_received is not None:
            codec = self.codec = H2Codec("client")
        sid = codec.send_request_head(b"POST", PATH, self.authority, self.scheme,
                                      list(self.headers), False)
        codec.send_data(sid, self.request, True)
        try:
            writer.write(codec.data_to_send())
            result = await self._answer(codec, sid, reader, writer)
        except (OSError, ConnectionError):
            result = RESULT_NETWORK_FAILURE
        if result == RESULT_NETWORK_FAILURE or not self.reuse or codec.dead \
                or codec.goaway_received is not None:
            self.close()
        return result

    async def _answer(self, codec: H2Codec, sid: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> str:
        decoder = MessageDecoder(max_message_size=_MAX_RESPONSE)
        messages: list[bytes] = []
        failed = False  # an answer that is no health answer: the rest is not looked at
        status_seen: bytes | None = None
        while True:
            data = await reader.read(_READ)
            events = codec.receive(data)
            out = codec.data_to_send()
            if out:
                writer.write(out)
            for e in events:
                if isinstance(e, ev.ConnectionClosed | ev.ProtocolError):
                    return RESULT_NETWORK_FAILURE
                if isinstance(e, hev.GoAwayReceived):
                    continue
                if getattr(e, "stream_id", None) != sid:
                    continue
                if isinstance(e, ev.StreamReset):
                    return RESULT_NETWORK_FAILURE
                if isinstance(e, ev.ResponseHeaders):
                    hdrs = dict(e.headers)
                    if e.status != 200:
                        failed = True
                    elif e.end_stream:
                        status_seen = hdrs.get(b"grpc-status")
                    elif not is_grpc_content_type(hdrs.get(b"content-type")):
                        failed = True
                    if e.end_stream:
                        return self._verdict(failed, status_seen, messages, decoder)
                elif isinstance(e, ev.Body):
                    if e.data:
                        codec.acknowledge(sid, len(e.data))
                        if not failed:
                            messages += [m.data for m in decoder.receive(e.data)]
                    if e.end_stream:
                        return self._verdict(failed, status_seen, messages, decoder)
                elif isinstance(e, ev.Trailers):
                    status_seen = dict(e.headers).get(b"grpc-status")
                    return self._verdict(failed, status_seen, messages, decoder)
            out = codec.data_to_send()
            if out:
                writer.write(out)
            if not data:
                return RESULT_NETWORK_FAILURE

    @staticmethod
    def _verdict(failed: bool, grpc_status: bytes | None, messages: list[bytes],
                 decoder: MessageDecoder) -> str:
        if failed or grpc_status != b"0" or decoder.finish() is not None \
                or len(messages) != 1:
            return RESULT_UNHEALTHY
        return RESULT_HEALTHY if decode_response(messages[0]) == SERVING else RESULT_UNHEALTHY

    def close(self) -> None:
        self.stream.close()
        self.codec = None


class GrpcHealthChecker(HealthCheckerFactory):
    name = "envoy.health_checkers.grpc"
    health_check_fields = ("grpc_health_check",)

    def create_health_checker(self, cluster: Any, config: Any,
                              context: FactoryContext) -> ProbeFactory:
        gc = config.grpc_health_check
        path = context.path + ".grpc_health_check"
        issues = unimplemented(gc, frozenset(_FIELDS), path)
        for i, opt in enumerate(gc.initial_metadata):
            issues += refuse_unlisted(opt, ("header",), f"{path}.initial_metadata[{i}]")
            key = opt.header.key.lower()
            if key.startswith(":") or key in ("host", "content-type", "te", "user-agent"):
                issues.append(ConfigIssue(f"{path}.initial_metadata[{i}].header.key",
                                          f"{opt.header.key!r} cannot be set"))
        if getattr(cluster, "config", None) is not None:
            protocol, _ = from_cluster(cluster.config, "")
            if protocol.kind != "http2" and "http2" not in protocol.allowed:
                # Envoy: "<cluster> cluster must support HTTP/2 for gRPC healthchecking".
                issues.append(ConfigIssue(path, f"{cluster.name} cluster must support HTTP/2 "
                                                "for gRPC healthchecking"))
        if issues:
            raise ConfigError(issues)
        authority = (gc.authority or cluster.name).encode()
        headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers"),
                   (b"user-agent", USER_AGENT)]
        headers += [(o.header.key.lower().encode(), o.header.value.encode())
                    for o in gc.initial_metadata]
        body = encode_request(gc.service_name)
        reuse = config.reuse_connection.value if config.HasField("reuse_connection") else True

        def probe(host: Host) -> Probe:
            return GrpcProbe(host, cluster, authority, headers, body, reuse)

        return probe
