"""Access logs: Envoy's format strings and JSON formats, written to a file, stdout or stderr.

A format is compiled once, at config time, into a list of literal strings and operator callables;
logging a connection or request is then one pass over that list. Envoy writes through a buffer
flushed every ``--file-flush-interval-msec`` (10 s by default); envoi's default is 0.2 s, so
tests and operators see lines promptly.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue, data_source_bytes, implements
from envoi.extensions import AccessLoggerFactory, FactoryContext
from envoi.stream_info import (
    Formatter,
    LogContext,
    Operator,
    OperatorFactory,
    StreamInfo,
    Verbatim,
)

DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)


class TcpLogContext:
    """The log context of a TCP connection: no headers, response code 0."""

    __slots__ = ("stream_info",)

    def __init__(self, stream_info: StreamInfo) -> None:
        self.stream_info = stream_info

    def request_header(self, name: str) -> str | None:
        return None

    response_header = request_header
    response_trailer = request_header

    @property
    def protocol(self) -> str | None:
        return None

    @property
    def response_code(self) -> int:
        return 0


_OP_RE = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")


def _start_time(fmt: str | None) -> Operator:
    if not fmt:

        def default(ctx: LogContext) -> str:
            t = ctx.stream_info.start_time
            millis = int(t * 1000) % 1000
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{millis:03d}Z"

        return default

    def custom(ctx: LogContext) -> str:
        t = ctx.stream_info.start_time
        frac = t - int(t)

        def sub(m: re.Match[str]) -> str:
            digits = int(m.group(1) or 9)
            return f"{frac:.{digits}f}"[2:]

        out = re.sub(r"%(\d)?f", sub, fmt)
        out = out.replace("%s", str(int(t)))
        return time.strftime(out, time.gmtime(t))

    return custom


def _header_op(getter: str, arg: str) -> Operator:
    main, _, alt = arg.partition("?")
    main, alt = main.lower(), alt.lower()

    def op(ctx: LogContext) -> str | None:
        fn = getattr(ctx, getter)
        v: str | None = fn(main)
        if v is None and alt:
            v = fn(alt)
        return v

    return op


def _si(attr: str) -> Operator:
    def op(ctx: LogContext) -> Any:
        return getattr(ctx.stream_info, attr)

    return op


def _flags(ctx: LogContext) -> str:
    flags = ctx.stream_info.response_flags
    return ",".join(flags) if flags else "-"


def _host_only(attr: str) -> Operator:
    def op(ctx: LogContext) -> str | None:
        v = getattr(ctx.stream_info, attr)
        if not v:
            return None
        return str(v).rsplit(":", 1)[0].strip("[]")

    return op


def _direct_remote(ctx: LogContext) -> str:
    # HTTP may take the remote address from x-forwarded-for; the peer is then kept in ``extra``.
    info = ctx.stream_info
    direct: str | None = info.extra.get("direct_remote_address")
    return direct or info.downstream_remote_address


def _ssl(attr: str, join: bool = False) -> Operator:
    """A TLS fact of the downstream connection (Envoy's ``%DOWNSTREAM_TLS_*%`` and
    ``%DOWNSTREAM_PEER_*%``): ``-`` in plaintext or when empty."""

    def op(ctx: LogContext) -> str | None:
        ssl = ctx.stream_info.downstream_ssl
        if ssl is None:
            return None
        value = getattr(ssl, attr)
        if join:
            value = ",".join(value)
        return str(value) or None

    return op


def _simple(op: Operator) -> OperatorFactory:
    return lambda arg: op


def _header(getter: str) -> OperatorFactory:
    return lambda arg: _header_op(getter, arg or "")


#: The core's command operators (those of a TCP connection); plugins add theirs through the
#: ``envoi_access_log_operators`` hook (this module registers these through it too).
CORE_OPERATORS: dict[str, OperatorFactory] = {
    "START_TIME": _start_time,
    "REQ": _header("request_header"),
    "RESP": _header("response_header"),
    "TRAILER": _header("response_trailer"),
    "BYTES_RECEIVED": _simple(_si("bytes_received")),
    "BYTES_SENT": _simple(_si("bytes_sent")),
    "DURATION": _simple(lambda ctx: ctx.stream_info.duration_ms),
    "RESPONSE_CODE": _simple(lambda ctx: ctx.response_code),
    "RESPONSE_FLAGS": _simple(_flags),
    "PROTOCOL": _simple(lambda ctx: ctx.protocol),
    "UPSTREAM_HOST": _simple(_si("upstream_host")),
    "UPSTREAM_CLUSTER": _simple(_si("upstream_cluster")),
    "UPSTREAM_LOCAL_ADDRESS": _simple(_si("upstream_local_address")),
    "DOWNSTREAM_REMOTE_ADDRESS": _simple(_si("downstream_remote_address")),
    "DOWNSTREAM_LOCAL_ADDRESS": _simple(_si("downstream_local_address")),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _simple(_host_only("downstream_remote_address")),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": _simple(_host_only("downstream_local_address")),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": _simple(_direct_remote),
    "UPSTREAM_REMOTE_ADDRESS": _simple(_si("upstream_host")),
    "REQUESTED_SERVER_NAME": _simple(lambda ctx: ctx.stream_info.requested_server_name or None),
    "DOWNSTREAM_TLS_VERSION": _simple(_ssl("tls_version")),
    "DOWNSTREAM_TLS_CIPHER": _simple(_ssl("ciphersuite")),
    "DOWNSTREAM_PEER_URI_SAN": _simple(_ssl("uri_san_peer_certificate", join=True)),
    "DOWNSTREAM_PEER_DNS_SAN": _simple(_ssl("dns_san_peer_certificate", join=True)),
    "DOWNSTREAM_PEER_SUBJECT": _simple(_ssl("subject_peer_certificate")),
    "DOWNSTREAM_PEER_FINGERPRINT_256": _simple(_ssl("sha256_peer_certificate_digest")),
}

Operators = Mapping[str, OperatorFactory]


def compile_operator(m: re.Match[str], path: str, operators: Operators = CORE_OPERATORS
                     ) -> Operator:
    """One ``%NAME(arg):len%`` match to its operator (the length is applied by the caller)."""
    name, arg = m.group(1), m.group(2)
    factory = operators.get(name)
    if factory is None:
        raise ConfigError([ConfigIssue(path, f"Not supported field in StreamInfo: {name}")])
    return factory(arg)


def compile_format(fmt: str, path: str = "", operators: Operators = CORE_OPERATORS,
                   omit_empty: bool = False) -> Formatter:
    """A format string to its formatter. A value that is absent (or empty) is written ``-``;
    with ``omit_empty`` (Envoy's ``omit_empty_values``, what header values use) as nothing."""
    absent = "" if omit_empty else "-"
    parts: list[str | tuple[Operator, int | None, bool]] = []
    pos = 0
    for m in _OP_RE.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        maxlen = m.group(3)
        op = compile_operator(m, path, operators)
        parts.append((op, int(maxlen) if maxlen else None, False))
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    frozen = tuple(parts)

    def render(ctx: LogContext) -> str:
        out: list[str] = []
        for p in frozen:
            if isinstance(p, str):
                out.append(p)
                continue
            v = p[0](ctx)
            s = absent if v is None or (v == "" and type(v) is not Verbatim) else str(v)
            if p[1] is not None:
                s = s[: p[1]]
            out.append(s)
        return "".join(out)

    return render


def compile_json_format(struct: Any, path: str, operators: Operators = CORE_OPERATORS
                        ) -> Formatter:
    """``json_format``: every string value may hold operators; a value that is exactly one
    numeric operator stays a number, as Envoy writes it."""

    def build(node: Any) -> Callable[[LogContext], Any]:
        if isinstance(node, dict):
            # Envoy writes the keys in order (the Struct's map is sorted).
            items = [(k, build(v)) for k, v in sorted(node.items())]
            return lambda ctx: {k: f(ctx) for k, f in items}
        if isinstance(node, str):
            m = _OP_RE.fullmatch(node)
            render = compile_format(node, path, operators)
            if m is not None:
                # One operator: its own value, typed; no value is null (but RESPONSE_FLAGS
                # answers "-" itself, as Envoy writes it).
                op = compile_operator(m, path, operators)
                maxlen = int(m.group(3)) if m.group(3) else None

                def typed(ctx: LogContext) -> Any:
                    v = op(ctx)
                    if v is None or (v == "" and type(v) is not Verbatim):
                        return None
                    if isinstance(v, int):
                        return v
                    return str(v)[:maxlen] if maxlen is not None else str(v)

                return typed
            return render
        return lambda ctx: node

    top = build(struct)
    return lambda ctx: json.dumps(top(ctx), separators=(",", ":")) + "\n"


_flush_interval = 0.2


def set_flush_interval(seconds: float) -> None:
    """``--file-flush-interval-msec``: how long written lines may wait in memory."""
    global _flush_interval
    _flush_interval = max(0.0, seconds)


class _Sink:
    """A line sink that batches writes and flushes them within the flush interval."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._scheduled = False

    def write(self, line: str) -> None:
        self._pending.append(line)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_later(_flush_interval, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            self.stream.write("".join(self._pending))
            self._pending.clear()
            self.stream.flush()


_file_sinks: dict[str, _Sink] = {}


def flush_all() -> None:
    for sink in _file_sinks.values():
        sink.flush()


def _sink_for(path: str) -> _Sink:
    if path == "/dev/stdout":
        return _file_sinks.setdefault(path, _Sink(sys.stdout))
    if path == "/dev/stderr":
        return _file_sinks.setdefault(path, _Sink(sys.stderr))
    sink = _file_sinks.get(path)
    if sink is None:
        sink = _Sink(open(path, "a", encoding="utf-8"))  # noqa: SIM115 - lives for the process
        _file_sinks[path] = sink
    return sink


class AccessLogger:
    """A formatted line per log context, to a file or stream."""

    __slots__ = ("render", "sink")

    def __init__(self, render: Formatter, sink: _Sink) -> None:
        self.render = render
        self.sink = sink

    def log(self, ctx: LogContext) -> None:
        self.sink.write(self.render(ctx))


# Access log entries and the built-in loggers (a filter on an entry is not implemented).
implements("envoy.config.accesslog.v3.AccessLog", "name", "typed_config")
implements("envoy.extensions.access_loggers.file.v3.FileAccessLog",
           "path", "format", "json_format", "log_format")
implements("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", "log_format")
implements("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", "log_format")
implements("envoy.config.core.v3.SubstitutionFormatString",
           "text_format", "json_format", "text_format_source")


def _formatter(config: Any, path: str, operators: Operators,
               legacy_format: str = "") -> Formatter:
    """From a ``log_format`` (SubstitutionFormatString) or the legacy file fields."""
    from google.protobuf import json_format

    if config is not None and config.ListFields():
        if config.content_type:
            # The type a local reply's body is sent as (hcm/local_reply.py); a log line has none.
            raise ConfigError([ConfigIssue(path + ".log_format.content_type",
                                           "not implemented by envoi")])
        if config.HasField("json_format"):
            return compile_json_format(json_format.MessageToDict(config.json_format), path,
                                       operators)
        if config.HasField("text_format_source"):
            text = data_source_bytes(config.text_format_source, path + ".text_format_source")
            return compile_format(text.decode("utf-8", "replace"), path, operators)
        if config.text_format:
            return compile_format(config.text_format, path, operators)
    return compile_format(legacy_format or DEFAULT_FORMAT, path, operators)


class FileAccessLoggerFactory(AccessLoggerFactory):
    name = "envoy.access_loggers.file"
    type_urls = ("envoy.extensions.access_loggers.file.v3.FileAccessLog",)

    def create_logger(self, config: Any, context: FactoryContext, path: str) -> AccessLogger:
        if not config.path:
            raise ConfigError([ConfigIssue(path + ".path", "value length must be at least 1")])
        operators = context.access_log_operators
        if config.HasField("json_format"):
            from google.protobuf import json_format

            render = compile_json_format(json_format.MessageToDict(config.json_format), path,
                                         operators)
        else:
            render = _formatter(config.log_format, path, operators, config.format)
        try:
            sink = _sink_for(config.path)
        except OSError as exc:
            raise ConfigError([ConfigIssue(path + ".path", f"cannot open: {exc}")]) from exc
        return AccessLogger(render, sink)


class StdoutAccessLoggerFactory(AccessLoggerFactory):
    name = "envoy.access_loggers.stdout"
    type_urls = ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",)
    stream = "/dev/stdout"

    def create_logger(self, config: Any, context: FactoryContext, path: str) -> AccessLogger:
        return AccessLogger(_formatter(config.log_format, path, context.access_log_operators),
                            _sink_for(self.stream))


class StderrAccessLoggerFactory(StdoutAccessLoggerFactory):
    name = "envoy.access_loggers.stderr"
    type_urls = ("envoy.extensions.access_loggers.stream.v3.StderrAccessLog",)
    stream = "/dev/stderr"


@hookimpl
def envoi_access_log_operators() -> Operators:
    return CORE_OPERATORS


@hookimpl
def envoi_access_loggers() -> Sequence[AccessLoggerFactory]:
    return [FileAccessLoggerFactory(), StdoutAccessLoggerFactory(), StderrAccessLoggerFactory()]
