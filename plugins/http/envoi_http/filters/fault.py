"""``envoy.filters.http.fault``: inject delays and aborts, fixed or header-controlled."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from envoi.config import duration_seconds, implements
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    FilterHeadersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamDecoderFilter,
)
from envoi.http.headers import HeaderMap
from envoi.stats import Counter, Gauge, StatsGroup

_DENOM = {0: 100, 1: 10_000, 2: 1_000_000}

# Fixed or header-controlled delays and aborts with a percentage. grpc_status aborts,
# max_active_faults, response_rate_limit, the header/node filters and the *_runtime key
# overrides are not implemented.
implements("envoy.extensions.filters.http.fault.v3.HTTPFault", "delay", "abort")
implements("envoy.extensions.filters.common.fault.v3.FaultDelay",
           "fixed_delay", "header_delay", "percentage")
implements("envoy.extensions.filters.http.fault.v3.FaultAbort",
           "http_status", "header_abort", "percentage")
implements("envoy.type.v3.FractionalPercent", "numerator", "denominator")


class FaultStats(StatsGroup):
    delays_injected: Counter
    aborts_injected: Counter
    response_rl_injected: Counter
    faults_overflow: Counter
    active_faults: Gauge


def _fraction(p: Any) -> float:
    return float(p.numerator / _DENOM.get(p.denominator, 100))


class FaultSettings:
    """One ``HTTPFault``: the filter's own, or a route's (virtual host's, route config's)
    ``typed_per_filter_config``, which replaces the filter's for that route's requests. A
    delay or abort without a ``percentage`` happens to 0 % of requests, as in Envoy (an unset
    FractionalPercent is 0/100)."""

    def __init__(self, config: Any) -> None:
        self.delay: float | None = None
        self.delay_header = False
        self.delay_pct = 1.0
        self.abort: int | None = None
        self.abort_header = False
        self.abort_pct = 1.0
        if config.HasField("delay"):
            d = config.delay
            self.delay_pct = _fraction(d.percentage)
            if d.HasField("header_delay"):
                self.delay_header = True
            else:
                self.delay = duration_seconds(d.fixed_delay)
        if config.HasField("abort"):
            a = config.abort
            self.abort_pct = _fraction(a.percentage)
            if a.HasField("header_abort"):
                self.abort_header = True
            else:
                self.abort = a.http_status or None


class FaultConfig(FaultSettings):
    """The filter's settings and its stats (a route's settings count here too, as Envoy's)."""

    def __init__(self, config: Any, stats: FaultStats) -> None:
        super().__init__(config)
        self.stats = stats


class FaultFilter(StreamDecoderFilter):
    def __init__(self, cfg: FaultConfig) -> None:
        self.cfg = cfg
        self.handle: asyncio.TimerHandle | None = None
        self.abort: int | None = None

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        cfg: FaultSettings = self.cfg
        route = self.decoder_callbacks.route()
        if route is not None:  # the most specific per-route HTTPFault, as Envoy's
            per_route = route.per_filter_config(FaultFactory.name)
            if isinstance(per_route, FaultSettings):
                cfg = per_route
        delay = cfg.delay
        if cfg.delay_header:
            v = headers.get_bytes(b"x-envoy-fault-delay-request")
            delay = int(v) / 1000 if v is not None and v.isdigit() else None
        abort = cfg.abort
        if cfg.abort_header:
            v = headers.get_bytes(b"x-envoy-fault-abort-request")
            abort = int(v) if v is not None and v.isdigit() else None
        if abort is not None and random.random() >= cfg.abort_pct:
            abort = None
        if delay is not None and random.random() < cfg.delay_pct:
            self.cfg.stats.delays_injected.value += 1
            self.cfg.stats.active_faults.inc()
            self.decoder_callbacks.stream_info.response_flags.append("DI")
            self.abort = abort
            self.handle = asyncio.get_running_loop().call_later(delay, self._after_delay)
            return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER
        if abort is not None:
            self._abort(abort)
            return FilterHeadersStatus.STOP_ITERATION
        return FilterHeadersStatus.CONTINUE

    def _after_delay(self) -> None:
        self.handle = None
        self.cfg.stats.active_faults.dec()
        if self.abort is not None:
            self._abort(self.abort)
        else:
            self.decoder_callbacks.continue_decoding()

    def _abort(self, status: int) -> None:
        self.cfg.stats.aborts_injected.value += 1
        self.decoder_callbacks.stream_info.response_flags.append("FI")
        self.decoder_callbacks.send_local_reply(status, b"fault filter abort",
                                                details="fault_filter_abort")

    def on_destroy(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.cfg.stats.active_faults.dec()
            self.handle = None


class FaultFactory(HttpFilterFactory):
    name = "envoy.filters.http.fault"
    type_urls = ("envoy.extensions.filters.http.fault.v3.HTTPFault",)
    route_type_urls = type_urls

    def create_route_config(self, config: Any, context: FactoryContext) -> object:
        return FaultSettings(config)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        prefix = context.stat_prefix
        stats = FaultStats(context.stats.root.scope(f"http.{prefix}.fault"))
        cfg = FaultConfig(config, stats)

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_decoder_filter(FaultFilter(cfg))

        return add
