"""envoi's application log, the way Envoy's looks and is set up.

* Loggers are named ``envoi.<component>`` after Envoy's components (``connection``, ``http``,
  ``upstream``, ``router``...; the bare ``envoi`` logger is ``main``), so ``-l`` sets every
  level and ``--component-log-level upstream:debug,http:trace`` sets some.
* ``--log-format`` takes Envoy's (spdlog's) flags; ``--log-path`` writes to a file.
* ``conn_debug`` / ``stream_debug`` prefix a line with the connection (and stream) id as Envoy
  1.39 does: ``[Tags: "ConnectionId":"7"]``, ``[Tags: "ConnectionId":"7","StreamId":"1"]``
  (older Envoys wrote ``[C7]`` / ``[C7][S1]``).
  Call sites on the data path test ``logger.isEnabledFor(logging.DEBUG)`` once (per connection
  or stream) and skip the call otherwise, so debug logging costs nothing when it is off.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

#: Envoy 1.39's components (``POST /logging`` lists them) and envoi's own (``workers``).
COMPONENTS = frozenset({
    "a2a", "admin", "alternate_protocols_cache", "aws", "assert", "backtrace", "basic_auth",
    "cache_filter", "client", "config", "connection", "conn_handler", "compression",
    "credential_injector", "decompression", "dns", "dubbo", "envoy_bug", "ext_authz", "ext_proc",
    "rocketmq", "file", "filter", "forward_proxy", "geolocation", "grpc", "happy_eyeballs", "hc",
    "health_checker", "http", "http2", "hystrix", "init", "io", "jwt", "json_rpc", "kafka",
    "key_value_store", "lua", "local_rate_limit", "main", "matcher", "mcp", "misc", "mongo",
    "multi_connection", "notification", "oauth2", "quic", "quic_stream", "pool",
    "rate_limit_quota", "rbac", "rds", "redis", "router", "runtime", "stats", "secret", "sse",
    "tap", "testing", "thrift", "tracing", "upstream", "udp", "wasm", "websocket", "golang",
    "stats_sinks", "dynamic_modules", "ip_tagging", "workers",
})

#: envoi's default line: Envoy's default without the source location (``[%g:%#]``).
DEFAULT_FORMAT = "[%Y-%m-%d %T.%e][%t][%l][%n] %v"


class LogSetupError(ValueError):
    """A logging option is wrong; the message is Envoy's for the same mistake."""


def component_of(logger_name: str) -> str:
    return logger_name.split(".", 1)[1] if "." in logger_name else "main"


def logger(component: str) -> logging.Logger:
    """The logger of an Envoy component: ``logger("upstream")`` is ``envoi.upstream``."""
    return logging.getLogger("envoi" if component == "main" else f"envoi.{component}")


def parse_component_levels(spec: str) -> dict[str, int]:
    """``upstream:debug,config:trace`` -> {component: level}; Envoy's errors otherwise."""
    out: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        name, sep, level = item.partition(":")
        if not sep:
            raise LogSetupError(f"component log level not correctly specified '{item}'")
        if name not in COMPONENTS:
            raise LogSetupError(f"invalid component specified '{name}'")
        if level not in LEVELS:
            raise LogSetupError(f"invalid log level specified '{level}'")
        out[name] = LEVELS[level]
    return out


_LEVEL_NAMES = {"WARNING": "warning", "CRITICAL": "critical"}
_SHORT_LEVELS = {"DEBUG": "D", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "C"}


def _level(r: logging.LogRecord) -> str:
    return _LEVEL_NAMES.get(r.levelname, r.levelname.lower())


def _message(r: logging.LogRecord) -> str:
    msg = r.getMessage()
    if r.exc_info:
        msg += "\n" + logging.Formatter().formatException(r.exc_info)
    return msg


_Part = Callable[[logging.LogRecord, time.struct_time], str]

# spdlog's flags as Envoy documents them for --log-format (the ones that mean something here).
_FLAGS: dict[str, _Part] = {
    "Y": lambda r, t: f"{t.tm_year:04d}",
    "y": lambda r, t: f"{t.tm_year % 100:02d}",
    "m": lambda r, t: f"{t.tm_mon:02d}",
    "d": lambda r, t: f"{t.tm_mday:02d}",
    "H": lambda r, t: f"{t.tm_hour:02d}",
    "M": lambda r, t: f"{t.tm_min:02d}",
    "S": lambda r, t: f"{t.tm_sec:02d}",
    "T": lambda r, t: time.strftime("%H:%M:%S", t),
    "D": lambda r, t: time.strftime("%m/%d/%y", t),
    "F": lambda r, t: f"{int(r.created * 1e9) % 1_000_000_000:09d}",
    "f": lambda r, t: f"{int(r.created * 1e6) % 1_000_000:06d}",
    "e": lambda r, t: f"{int(r.msecs):03d}",
    "z": lambda r, t: time.strftime("%z", t)[:3] + ":" + time.strftime("%z", t)[3:],
    "a": lambda r, t: time.strftime("%a", t),
    "b": lambda r, t: time.strftime("%b", t),
    "t": lambda r, t: str(threading.get_native_id()),
    "P": lambda r, t: str(os.getpid()),
    "l": lambda r, t: _level(r),
    "L": lambda r, t: _SHORT_LEVELS.get(r.levelname, r.levelname[:1]),
    "n": lambda r, t: component_of(r.name),
    "v": lambda r, t: _message(r),
    # Envoy's own: the message with newlines escaped, and JSON-escaped.
    "_": lambda r, t: _message(r).replace("\n", "\\n"),
    "j": lambda r, t: json.dumps(_message(r))[1:-1],
    "g": lambda r, t: r.pathname,
    "s": lambda r, t: os.path.basename(r.pathname),
    "#": lambda r, t: str(r.lineno),
    "!": lambda r, t: r.funcName,
    "%": lambda r, t: "%",
}


class EnvoyFormatter(logging.Formatter):
    """Formats records with an Envoy ``--log-format`` string (spdlog's flags). A flag spdlog
    does not know is written as is, as Envoy does."""

    def __init__(self, fmt: str = DEFAULT_FORMAT) -> None:
        super().__init__()
        parts: list[str | _Part] = []
        i = 0
        while i < len(fmt):
            c = fmt[i]
            if c == "%" and i + 1 < len(fmt) and fmt[i + 1] in _FLAGS:
                parts.append(_FLAGS[fmt[i + 1]])
                i += 2
                continue
            if parts and isinstance(parts[-1], str):
                parts[-1] += c
            else:
                parts.append(c)
            i += 1
        self.parts = tuple(parts)

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        return "".join(p if isinstance(p, str) else p(record, t) for p in self.parts)


def setup_logging(level: str, *, path: str = "", fmt: str = DEFAULT_FORMAT,
                  component_levels: str = "") -> None:
    """What ``-l``, ``--log-path``, ``--log-format`` and ``--component-log-level`` ask for.
    Raises :class:`LogSetupError` with Envoy's message for a wrong component or level."""
    levels = parse_component_levels(component_levels)
    if path:
        try:
            handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise LogSetupError(f"cannot open log path '{path}': {exc.strerror}") from exc
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EnvoyFormatter(fmt))
    for name in ("envoi", "asyncio"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(LEVELS[level])
        lg.propagate = False
    for component, lvl in levels.items():
        logger(component).setLevel(lvl)


def conn_debug(log: logging.Logger, conn_id: int, msg: str, *args: object) -> None:
    """A debug line about one connection, as Envoy's ENVOY_CONN_LOG writes it."""
    log.debug('[Tags: "ConnectionId":"%d"] ' + msg, conn_id, *args)


def stream_debug(log: logging.Logger, conn_id: int, stream_id: int, msg: str,
                 *args: object) -> None:
    """A debug line about one stream, as Envoy's ENVOY_STREAM_LOG writes it."""
    log.debug('[Tags: "ConnectionId":"%d","StreamId":"%d"] ' + msg, conn_id, stream_id, *args)


def header_lines(headers: Iterable[tuple[str, str]]) -> str:
    """Headers as Envoy's debug log lists them after a stream line: ``'name', 'value'``."""
    return "".join(f"\n'{k}', '{v}'" for k, v in headers)
