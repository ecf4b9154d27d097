"""``envoy.filters.http.grpc_stats``: counts gRPC calls, their statuses and their messages in the
route's cluster, as Envoy 1.39's filter does (see :mod:`envoi_grpc.stats` for the names).

* A request is gRPC when it has a path and ``content-type: application/grpc[+...]``; its service
  and method come from ``:path`` (``/<service>/<method>``).
* ``stats_for_all_methods: true``: every method gets its own names (bounded, see
  :data:`envoi_grpc.stats.MAX_DYNAMIC_METHODS`); ``individual_method_stats_allowlist``: only the
  listed methods do; otherwise (the default) every call is counted under the un-prefixed names.
  A path of another shape is not counted at all.
* The status is charged from the response headers when they carry ``grpc-status`` (a
  trailers-only response), and from the trailers; no ``grpc-status`` anywhere, nothing charged.
* Messages are counted as their prefixes stream past (:class:`envoi_grpc.framing.FrameCounter`),
  both ways; nothing is buffered or copied. A response is looked at only when it is gRPC (200
  and a gRPC content type, or trailers-only).
* ``enable_upstream_stats``: the ``upstream_rq_time`` histogram, from the end of the request to
  the end of the response as this filter sees them, for calls that reached an upstream.
* ``emit_filter_state``: :data:`GRPC_STATS_STATE` in the stream's filter state (also in
  ``stream_info.extra`` under the filter's name) holds both message counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from envoi.config import implements
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StateKey,
    StreamFilter,
)
from envoi.http.grpc import is_grpc_request, is_grpc_response, service_and_method
from envoi.http.headers import HeaderMap

# The generated module registers FilterConfig in protobuf's pool (the driver and the config
# loader look the message up by name).
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2  # noqa: F401

from envoi_grpc.framing import FrameCounter
from envoi_grpc.stats import GRPC, GrpcStatsRegistry, MethodStats, registry, stream_cluster

NAME = "envoy.filters.http.grpc_stats"
TYPE_URL = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"

implements(TYPE_URL, "emit_filter_state", "stats_for_all_methods",
           "individual_method_stats_allowlist", "enable_upstream_stats",
           "replace_dots_in_grpc_service_name")
implements("envoy.config.core.v3.GrpcMethodList", "services")
implements("envoy.config.core.v3.GrpcMethodList.Service", "name", "method_names")

_CONTENT_TYPE = b"content-type"
_GRPC_STATUS = b"grpc-status"


@dataclass
class GrpcStatsObject:
    """Envoy's ``GrpcStatsObject``: the messages counted so far on this stream."""

    request_message_count: int = 0
    response_message_count: int = 0

    def serialize_as_string(self) -> str:
        """Envoy's plain-text form, ``<request>,<response>``."""
        return f"{self.request_message_count},{self.response_message_count}"


#: Where ``emit_filter_state`` puts the counts.
GRPC_STATS_STATE: StateKey[GrpcStatsObject] = StateKey(NAME)


@dataclass(frozen=True)
class GrpcStatsConfig:
    emit_filter_state: bool = False
    stats_for_all_methods: bool = False
    #: (service, method) pairs with their own names; None without an allowlist.
    allowlist: frozenset[tuple[bytes, bytes]] | None = None
    enable_upstream_stats: bool = False
    replace_dots_in_grpc_service_name: bool = False

    @classmethod
    def from_proto(cls, msg: Any) -> GrpcStatsConfig:
        if msg is None:
            return cls()
        allowlist = None
        if msg.HasField("individual_method_stats_allowlist"):
            allowlist = frozenset(
                (svc.name.encode(), m.encode())
                for svc in msg.individual_method_stats_allowlist.services
                for m in svc.method_names)
        return cls(
            emit_filter_state=msg.emit_filter_state,
            stats_for_all_methods=(msg.stats_for_all_methods.value
                                   if msg.HasField("stats_for_all_methods") else False),
            allowlist=allowlist,
            enable_upstream_stats=msg.enable_upstream_stats,
            replace_dots_in_grpc_service_name=msg.replace_dots_in_grpc_service_name)


class GrpcStatsFilter(StreamFilter):
    __slots__ = ("config", "grpc_request", "grpc_response", "registry", "request_counter",
                 "request_end", "response_counter", "state", "stats", "tap", "tapped")

    def __init__(self, config: GrpcStatsConfig, stats_registry: GrpcStatsRegistry,
                 tap: Any = None) -> None:
        self.config = config
        #: The live tap (``envoi.tap.TapPoint``): each call's method and status when someone
        #: listens; what is known of the call meanwhile (None when not tapped).
        self.tap = tap
        self.tapped: dict[str, Any] | None = None
        self.registry = stats_registry
        self.grpc_request = False
        self.grpc_response = False
        self.stats: MethodStats | None = None  # None: this call is not counted
        self.request_counter: FrameCounter | None = None
        self.response_counter: FrameCounter | None = None
        self.state: GrpcStatsObject | None = None
        self.request_end: float | None = None

    # -- request ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not is_grpc_request(headers.get_bytes(_CONTENT_TYPE), headers.path):
            return FilterHeadersStatus.CONTINUE
        self.grpc_request = True
        self.request_counter = FrameCounter()
        if self.tap is not None and self.tap.active:
            self._tap_request(headers)
        if end_stream:
            self.request_end = time.monotonic()
        cluster = stream_cluster(self.decoder_callbacks)
        if cluster is None:
            return FilterHeadersStatus.CONTINUE
        names = service_and_method(headers.path)
        if names is None:
            return FilterHeadersStatus.CONTINUE
        config = self.config
        stats = self.registry.cluster(cluster)
        service, method = names
        if config.stats_for_all_methods:
            if config.replace_dots_in_grpc_service_name:
                service = service.replace(b".", b"_")
            self.stats = stats.method(GRPC, service, method)
        elif config.allowlist is not None and names in config.allowlist:
            self.stats = stats.method(GRPC, service, method, dynamic=False)
        else:
            self.stats = stats.unprefixed(GRPC)
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        counter = self.request_counter
        if counter is not None:
            if end_stream:
                self.request_end = time.monotonic()
            n = counter.feed(data)
            if n:
                self._write_filter_state()
                if self.stats is not None:
                    self.stats.charge_request_messages(n)
        return FilterDataStatus.CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        if self.grpc_request:
            self.request_end = time.monotonic()
        return FilterTrailersStatus.CONTINUE

    # -- response --------------------------------------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        grpc_status = headers.get_bytes(_GRPC_STATUS)
        self.grpc_response = is_grpc_response(headers.status, headers.get_bytes(_CONTENT_TYPE),
                                              grpc_status, end_stream)
        if self.grpc_response:
            self.response_counter = FrameCounter()
        stats = self.stats
        if stats is not None:
            if grpc_status is not None:
                stats.charge_status(grpc_status)
            if end_stream:
                self._charge_upstream_time(stats)
        if self.tapped is not None:
            self.tapped["http_status"] = headers.status
            if end_stream:  # trailers-only
                self._tap_call(grpc_status)
        return FilterHeadersStatus.CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        counter = self.response_counter
        if counter is not None:
            n = counter.feed(data)
            if n:
                self._write_filter_state()
                if self.stats is not None:
                    self.stats.charge_response_messages(n)
        return FilterDataStatus.CONTINUE

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        stats = self.stats
        if stats is not None and self.grpc_request:
            grpc_status = trailers.get_bytes(_GRPC_STATUS)
            if grpc_status is not None:
                stats.charge_status(grpc_status)
            self._charge_upstream_time(stats)
        if self.tapped is not None:
            self._tap_call(trailers.get_bytes(_GRPC_STATUS))
        return FilterTrailersStatus.CONTINUE

    # -- the live tap ----------------------------------------------------------------------

    def _tap_request(self, headers: HeaderMap) -> None:
        names = service_and_method(headers.path)
        service, method = names if names is not None else (b"", b"")
        self.tapped = {"stream": self.decoder_callbacks.stream_id,
                       "service": service.decode("latin-1"),
                       "method": method.decode("latin-1"),
                       "cluster": stream_cluster(self.decoder_callbacks),
                       "start": time.monotonic()}

    def _tap_call(self, grpc_status: bytes | None) -> None:
        tapped, self.tapped = self.tapped, None
        if tapped is None or not self.tap.active:
            return
        start = tapped.pop("start")
        tapped["grpc_status"] = int(grpc_status) if grpc_status and grpc_status.isdigit() \
            else None
        tapped["request_messages"] = (self.request_counter.count
                                      if self.request_counter is not None else 0)
        tapped["response_messages"] = (self.response_counter.count
                                       if self.response_counter is not None else 0)
        tapped["duration_ms"] = round((time.monotonic() - start) * 1000, 3)
        self.tap.publish("grpc.call", self.decoder_callbacks.connection.id, tapped)

    # -- helpers ---------------------------------------------------------------------------

    def _write_filter_state(self) -> None:
        if not self.config.emit_filter_state:
            return
        state = self.state
        if state is None:
            state = self.state = GrpcStatsObject()
            cb = self.decoder_callbacks
            cb.filter_state[GRPC_STATS_STATE] = state
            cb.stream_info.extra[NAME] = state
        if self.request_counter is not None:
            state.request_message_count = self.request_counter.count
        if self.response_counter is not None:
            state.response_message_count = self.response_counter.count

    def _charge_upstream_time(self, stats: MethodStats) -> None:
        if not self.config.enable_upstream_stats or self.request_end is None:
            return
        if self.decoder_callbacks.stream_info.upstream_host is None:
            return  # no upstream answered (a local reply): Envoy has no upstream timing
        stats.record_upstream_rq_time(int((time.monotonic() - self.request_end) * 1000))


class GrpcStatsFactory(HttpFilterFactory):
    name = NAME
    type_urls = (TYPE_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        cfg = GrpcStatsConfig.from_proto(config)
        stats_registry = registry(context.stats)
        tap = context.tap_point(self.name)

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(GrpcStatsFilter(cfg, stats_registry, tap))

        return add
