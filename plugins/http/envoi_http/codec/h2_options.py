"""Envoy's ``http2_protocol_options`` as a frozen runtime object, with Envoy 1.39.3's defaults.

The defaults are the ones the real Envoy 1.39.3 advertises and enforces (seen with nghttp and raw
frames, ../shared/reference/envoy-observed.md §2): SETTINGS HEADER_TABLE_SIZE 4096,
ENABLE_CONNECT_PROTOCOL 0, MAX_CONCURRENT_STREAMS 1024, INITIAL_WINDOW_SIZE 16 MiB, then a
connection WINDOW_UPDATE up to 24 MiB; and the flood limits of Envoy's ``ProtocolConstraints``.

``from_proto`` turns a ``envoy.config.core.v3.Http2ProtocolOptions`` message into this object and
reports every field envoi does not act on as a config issue naming its path (principle 8: a
field that is set and ignored is a bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024
MAX_WINDOW = (1 << 31) - 1
MIN_WINDOW = (1 << 16) - 1

# Field -> (default, minimum, maximum), as the proto's validation rules state them.
_WRAPPED: dict[str, tuple[int, int, int]] = {
    "hpack_table_size": (4096, 0, (1 << 32) - 1),
    "max_concurrent_streams": (1024, 1, MAX_WINDOW),
    "initial_stream_window_size": (16 * MiB, MIN_WINDOW, MAX_WINDOW),
    "initial_connection_window_size": (24 * MiB, MIN_WINDOW, MAX_WINDOW),
    "max_outbound_frames": (10000, 1, (1 << 32) - 1),
    "max_outbound_control_frames": (1000, 1, (1 << 32) - 1),
    "max_consecutive_inbound_frames_with_empty_payload": (1, 0, (1 << 32) - 1),
    "max_inbound_priority_frames_per_stream": (100, 0, (1 << 32) - 1),
    "max_inbound_window_update_frames_per_data_frame_sent": (10, 1, (1 << 32) - 1),
}
_PLAIN = ("allow_connect",)
_OVERRIDE = "override_stream_error_on_invalid_http_message"
_DEPRECATED_OVERRIDE = "stream_error_on_invalid_http_messaging"


@dataclass(frozen=True, slots=True)
class KeepaliveOptions:
    """``connection_keepalive``: PING every ``interval`` seconds (0: never), the connection
    closed when ``timeout`` passes without an answer (``h2_keepalive.py`` runs the timers)."""

    interval: float
    timeout: float
    jitter_percent: float = 15.0


@dataclass(frozen=True, slots=True)
class Http2Options:
    """What the HTTP/2 codec enforces and advertises (Envoy's field names)."""

    hpack_table_size: int = 4096
    max_concurrent_streams: int = 1024
    initial_stream_window_size: int = 16 * MiB
    initial_connection_window_size: int = 24 * MiB
    allow_connect: bool = False
    max_outbound_frames: int = 10000
    max_outbound_control_frames: int = 1000
    max_consecutive_inbound_frames_with_empty_payload: int = 1
    max_inbound_priority_frames_per_stream: int = 100
    max_inbound_window_update_frames_per_data_frame_sent: int = 10
    # False (Envoy's default): an invalid HTTP message ends the connection; True: only its stream.
    stream_error_on_invalid_http_message: bool = False
    keepalive: KeepaliveOptions | None = None


DEFAULT_OPTIONS = Http2Options()


def implemented_fields() -> tuple[str, ...]:
    """The ``Http2ProtocolOptions`` fields ``from_proto`` acts on (any other is an issue)."""
    return (*_WRAPPED, *_PLAIN, _OVERRIDE, _DEPRECATED_OVERRIDE, "connection_keepalive")


# ``connection_keepalive``'s message: what ``_keepalive`` acts on (``connection_idle_interval``
# is refused there).
KEEPALIVE_FIELDS = ("interval", "timeout", "interval_jitter")


def from_proto(msg: Any, path: str) -> tuple[Http2Options, list[tuple[str, str]]]:
    """``(options, issues)``; each issue is ``(field path, message)``. Any field that is set and
    not implemented is an issue, so the config is refused rather than silently half-applied."""
    values: dict[str, Any] = {}
    issues: list[tuple[str, str]] = []
    for field, value in msg.ListFields():
        name = field.name
        fpath = f"{path}.{name}"
        if name in _WRAPPED:
            _, lo, hi = _WRAPPED[name]
            v = int(value.value)
            if not lo <= v <= hi:
                issues.append((fpath, f"value must be inside range [{lo}, {hi}]"))
                continue
            values[name] = v
        elif name in _PLAIN:
            values[name] = bool(value)
        elif name in (_OVERRIDE, _DEPRECATED_OVERRIDE):
            values["stream_error_on_invalid_http_message"] = bool(
                value.value if hasattr(value, "value") else value)
        elif name == "connection_keepalive":
            keepalive = _keepalive(value, fpath, issues)
            if keepalive is not None:
                values["keepalive"] = keepalive
        else:
            issues.append((fpath, "is not implemented by envoi"))
    return Http2Options(**values), issues


def _seconds(d: Any) -> float:
    return float(d.seconds) + float(d.nanos) / 1e9


def _keepalive(msg: Any, path: str, issues: list[tuple[str, str]]) -> KeepaliveOptions | None:
    if msg.HasField("connection_idle_interval"):
        issues.append((path + ".connection_idle_interval", "is not implemented by envoi"))
    if not msg.HasField("timeout"):
        issues.append((path + ".timeout", "value is required"))
        return None
    timeout = _seconds(msg.timeout)
    if timeout < 0.001:
        issues.append((path + ".timeout", "value must be greater than or equal to 1ms"))
        return None
    interval = _seconds(msg.interval) if msg.HasField("interval") else 0.0
    jitter = float(msg.interval_jitter.value) if msg.HasField("interval_jitter") else 15.0
    return KeepaliveOptions(interval, timeout, jitter)


def local_settings(options: Http2Options, client: bool) -> dict[int, int]:
    """The SETTINGS envoi sends first, in Envoy's order (client: ENABLE_PUSH 0 first)."""
    settings: dict[int, int] = {}
    if client:
        settings[0x2] = 0  # ENABLE_PUSH: envoi does not take pushed streams
    settings[0x1] = options.hpack_table_size  # HEADER_TABLE_SIZE
    settings[0x8] = int(options.allow_connect)  # ENABLE_CONNECT_PROTOCOL (RFC 8441)
    settings[0x3] = options.max_concurrent_streams  # MAX_CONCURRENT_STREAMS
    settings[0x4] = options.initial_stream_window_size  # INITIAL_WINDOW_SIZE
    return settings
