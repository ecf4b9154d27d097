"""What an unsampled request costs the connection manager, through the real server built from
a real config with fake transports (bytes in, bytes out): a request that carries none of the
headers tracing reads, and whose ``x-request-id`` the connection manager makes, takes the short
path (``HttpTracing.start_new``): no span, no call into the tracer's ``begin`` nor
``HttpTracing.start``, one shared trace object; what goes upstream is still what Envoy 1.39.3
sends for it (``traceparent`` ``...-00`` with a new trace, an empty ``tracestate``: see
``test_tracing_oracle.py``'s ``otel_unsampled``). A request with a caller's context, or sampled,
takes the full path."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoi.tracing.opentelemetry import OpenTelemetryTracer
from envoi.tracing.span import Span
from envoi_http.hcm.tracing import HttpTracing
from hcm_driver import parse_responses
from test_stream_path import Proxy, config, ok, run, settle, until

TRACING = """\
          tracing:
            random_sampling: {{value: {pct}}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{envoy_grpc: {{cluster_name: backend}}}}
"""
ROUTES = """\
              - match: {prefix: "/retry"}
                route:
                  cluster: backend
                  retry_policy: {retry_on: 5xx, num_retries: 1}
              - match: {prefix: "/"}
                route: {cluster: backend}
"""
TRACEPARENT = re.compile(rb"\r\ntraceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])\r\n")
REQUEST_ID = re.compile(rb"\r\nx-request-id: ([0-9a-f-]{36})\r\n")


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the calls of the full path's functions (and every Span made)."""
    calls: Counter[str] = Counter()

    def wrap(owner: Any, name: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return inner(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    wrap(HttpTracing, "start")
    wrap(HttpTracing, "start_new")
    wrap(HttpTracing, "_begin")
    wrap(OpenTelemetryTracer, "begin")
    wrap(Span, "__init__")
    return calls


def test_an_unsampled_request_takes_the_short_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)

    async def body() -> None:
        p = Proxy(tmp_path, config(ROUTES, hcm_extra=TRACING.format(pct=0)))
        traces = set()
        for i in range(20):
            p.send(b"GET /%d HTTP/1.1\r\nhost: svc\r\n\r\n" % i)
            await settle()
            head = p.upstream()[1].take()
            m = TRACEPARENT.search(head)
            assert m is not None and m.group(3) == b"0", head  # as Envoy: sampled=0
            assert b"\r\ntracestate: \r\n" in head
            rid = REQUEST_ID.search(head)
            assert rid is not None and rid.group(1)[14:15] == b"4"  # not traced
            traces.add(m.group(1))
            p.answer(ok())
            [(status, _, _)] = parse_responses(p.down.take())
            assert status == 200
        assert len(traces) == 20  # a new trace per request
        assert p.stat("http.ingress_http.tracing.not_traceable") == 20
        assert calls == Counter(start_new=20)  # no start, no begin, no span

    run(body)


def test_a_retry_of_an_unsampled_request_keeps_its_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)

    async def body() -> None:
        p = Proxy(tmp_path, config(ROUTES, hcm_extra=TRACING.format(pct=0)))
        p.send(b"GET /retry HTTP/1.1\r\nhost: svc\r\n\r\n")
        await settle()
        first = TRACEPARENT.search(p.upstream()[1].take())
        p.answer(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        seen = bytearray()

        def retried() -> bool:  # (after the retry back-off)
            for _, wire in p.upstreams:
                seen.extend(wire.take())
            return b"\r\n\r\n" in seen

        await until(retried)
        heads = bytes(seen)
        second = TRACEPARENT.search(heads)
        assert first is not None and second is not None
        assert second.group(0) == first.group(0)  # the same trace and span
        assert heads.count(b"\r\ntraceparent: ") == 1
        assert calls == Counter(start_new=1)

    run(body)


def test_a_caller_context_or_a_sampled_request_takes_the_full_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)

    async def body() -> None:
        p = Proxy(tmp_path, config(ROUTES, hcm_extra=TRACING.format(pct=0)))
        caller = b"0af7651916cd43dd8448eb211c80319c"
        p.send(b"GET / HTTP/1.1\r\nhost: svc\r\ntraceparent: 00-%s-b7ad6b7169203331-01\r\n\r\n"
               % caller)
        await settle()
        m = TRACEPARENT.search(p.upstream()[1].take())
        assert m is not None and m.group(1) == caller and m.group(3) == b"0"
        assert calls == Counter(start=1, _begin=1, begin=1)  # (unsampled: still no span)
        p.answer(ok())
        await settle()
        p.down.take()

        calls.clear()  # at 100 %: the short path decides, the span is made
        q = Proxy(tmp_path, config(ROUTES, hcm_extra=TRACING.format(pct=100)))
        q.send(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        await settle()
        head = q.upstream()[1].take()
        m = TRACEPARENT.search(head)
        rid = REQUEST_ID.search(head)
        assert m is not None and m.group(3) == b"1"
        assert rid is not None and rid.group(1)[14:15] == b"9"  # traced: Envoy's digit
        assert calls["start_new"] == 1 and calls["begin"] == 1 and calls["__init__"] == 1
        assert q.stat("http.ingress_http.tracing.random_sampling") == 1

    run(body)
