"""The connection manager's runtime config: what the factory (``hcm/config.py``) made of an
HttpConnectionManager proto, once, at config time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoi.extensions import AccessLogger, FactoryContext
from envoi.http.filter import HttpFilterFactoryCb
from envoi.stats import Scope
from envoi.tap import TapPoint

from envoi_http.codec import Backend
from envoi_http.codec.h2_options import DEFAULT_OPTIONS, Http2Options
from envoi_http.hcm.local_reply import LocalReply
from envoi_http.hcm.path_normalization import PathNormalization
from envoi_http.hcm.route_chain import RouteChains
from envoi_http.hcm.stats import HcmStats, ListenerHttpStats
from envoi_http.hcm.stream import ServerProtocol
from envoi_http.hcm.tracing import HttpTracing
from envoi_http.router.config import RouteTable


@dataclass
class HcmConfig:
    stat_prefix: str
    stats: HcmStats
    root: Scope
    codec_backend: Backend
    auto_codec: bool
    use_remote_address: bool
    xff_num_trusted_hops: int
    generate_request_id: bool
    server_name: bytes
    max_request_headers_kb: int
    max_headers_count: int
    accept_http_10: bool
    stream_idle_timeout: float
    request_timeout: float
    request_headers_timeout: float
    idle_timeout: float
    filter_factories: tuple[HttpFilterFactoryCb, ...]
    route_table: RouteTable | None
    access_logs: tuple[AccessLogger, ...]
    context: FactoryContext
    enable_trailers: bool = False
    preserve_external_request_id: bool = False
    drain_timeout: float = 5.0
    delayed_close_timeout: float = 1.0
    upgrade_map: dict[bytes, bool] = field(default_factory=dict)
    underscores_action: int = 0  # hcm/xff.py: ALLOW, REJECT_REQUEST, DROP_HEADER
    http1_stats: Any = None
    route_idle: bool = False  # some route sets idle_timeout (router/idle.py)
    route_idle_min: float = 0.0  # the shortest non-zero one
    # common_http_protocol_options.max_stream_duration in ms (0: none); ``durations``: it or
    # some route's max_stream_duration is set, so streams have a duration deadline
    # (hcm/duration.py)
    max_stream_duration: int = 0
    durations: bool = False
    internal_nets: tuple[Any, ...] = ()  # internal_address_config.cidr_ranges (hcm/internal.py)
    # normalize_path / merge_slashes / path_with_escaped_slashes_action (hcm/path_normalization)
    path_normalization: PathNormalization | None = None
    local_reply: LocalReply | None = None  # local_reply_config (hcm/local_reply.py)
    # The protocol half of each connection (hcm/http1.py's Http1Connection), made with the
    # connection manager: the factory wires it, so that the agnostic half imports no protocol.
    protocol: Callable[[Any], ServerProtocol] | None = None
    http2_options: Http2Options = DEFAULT_OPTIONS  # http2_protocol_options (codec/h2_options)
    http2_stats: Any = None  # http2.* at the root (codec/h2_stats.py)
    tracing: HttpTracing | None = None  # ``tracing`` (hcm/tracing.py)
    tap: TapPoint | None = None  # HTTP heads on the live tap (hcm/tap.py)
    _listener_stats: dict[int, ListenerHttpStats] = field(default_factory=dict)
    filter_names: tuple[str, ...] = ()  # the config name of each of filter_factories
    # Routes turn filters on or off (hcm/route_chain.py); None: every stream runs them all.
    route_chains: RouteChains | None = None
    _names_by_type: dict[type, str] | None = None

    def filter_name(self, filt: object) -> str:
        """The configured name (``http_filters[i].name``) of the factory that makes filters of
        ``filt``'s class; worked out the first time a filter fails (the factories' callbacks
        are run against a builder that only notes the classes), so the hot path pays nothing."""
        names = self._names_by_type
        if names is None:
            names = self._names_by_type = {}
            for cb, name in zip(self.filter_factories, self.filter_names, strict=False):
                probe = _ClassNotingBuilder()
                # A callback that needs the real stream gives no name.
                with contextlib.suppress(Exception):
                    cb(probe)
                for cls in probe.classes:
                    names.setdefault(cls, name)
        cls = type(filt)
        return names.get(cls) or f"{cls.__module__}.{cls.__qualname__}"

    @property
    def tick(self) -> float | None:
        vals = [v for v in (self.stream_idle_timeout, self.request_timeout, self.idle_timeout,
                            self.route_idle_min) if v]
        return min(vals) if vals else None

    def listener_stats_for(self, listener: Any) -> ListenerHttpStats:
        key = id(listener)
        found = self._listener_stats.get(key)
        if found is None:
            name = getattr(listener, "stat_name", "") or "unknown"
            found = ListenerHttpStats(self.root.scope(f"listener.{name}.http.{self.stat_prefix}"))
            self._listener_stats[key] = found
        return found


class _ClassNotingBuilder:
    """An ``HttpFilterChainBuilder`` that only notes the classes of the filters added."""

    def __init__(self) -> None:
        self.classes: list[type] = []

    def add_decoder_filter(self, f: object) -> None:
        self.classes.append(type(f))

    add_encoder_filter = add_filter = add_decoder_filter
