"""The router's part of tracing: per upstream attempt, the trace context goes into the upstream
request, and with ``start_child_span`` (or the connection manager's ``spawn_upstream_span``)
an egress span is made for the attempt (``router <cluster> egress``, a child of the ingress
span) and finished with Envoy's upstream tags when the attempt ends.

As in Envoy 1.39.3: without a child span the upstream sees the ingress span's context; a retry
is a new attempt (a new child span, the context injected again); the egress span's
``http.status_code`` is the upstream's status (0, and ``error``, when none came).

The router calls these only when its stream has a trace (``decoder_callbacks.trace``): a stream
without tracing pays one attribute read per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envoi.tracing.span import Span
from envoi.tracing.tags import upstream_tags

if TYPE_CHECKING:
    from envoi.http.headers import HeaderMap

    from envoi_http.hcm.tracing import StreamTrace

__all__ = ["end_attempt", "start_attempt"]

def start_attempt(trace: StreamTrace, start_child_span: bool, cluster: str,
                  headers: HeaderMap, retries: int) -> Span | None:
    """An upstream attempt begins (after ``retries`` others): its egress span (None without
    one, or when the request is not sampled; a retry's is tagged ``retry.count``), and the
    context of that span, or of the ingress span, written into the upstream request's
    headers."""
    parent = trace.span
    tracing = trace.tracing
    child_wanted = start_child_span or tracing.spawn_upstream_span
    if parent is None:  # not sampled: only the context goes upstream
        tracing.fast.inject_unsampled(trace.context, headers, child_wanted, retries)
        return None
    if child_wanted:
        child = parent.spawn_child(f"router {cluster} egress")
        if retries:
            child.set_tag("retry.count", str(retries))
        tracing.fast.inject_headers(child, headers)
        return child
    tracing.fast.inject_headers(parent, headers)
    return None


def end_attempt(trace: StreamTrace, child: Span, info: Any, status: int, route: Any,
                headers: HeaderMap, flags_at: int, reset: str = "", flag: str = "",
                protocol: str = "HTTP/1.1") -> None:
    """The attempt is over (answered with ``status``; 0: reset, timed out, never connected):
    the egress span's tags (its flags: the stream's from ``flags_at`` on, and ``flag``; a
    ``reset`` reason is Envoy's ``error.reason``; ``protocol`` is the upstream's,
    ``HTTP/1.1`` or ``HTTP/2`` as Envoy writes ``http.protocol``, ``-`` when no connection was
    made), then it is finished."""
    if not child.sampled:
        return
    if reset:
        child.set_tag("error", "true")
        child.set_tag("error.reason", reset)
    # The attempt's own flags (Envoy keeps an upstream request's apart from the stream's: a
    # URX that the last answer brings is the stream's).
    flags = [f for f in info.response_flags[flags_at:] if f != "URX"]
    if flag:
        flags.append(flag)
    upstream_tags(child, protocol=protocol,
                  upstream_address=info.upstream_host or "",
                  upstream_cluster=info.upstream_cluster or "", status=status,
                  response_flags=",".join(flags),
                  custom=trace.custom_tags(route), get_header=headers.get)
    child.finish()
