"""The tags Envoy puts on HTTP spans, and ``custom_tags``.

Ingress (downstream) span, when the stream ends (Envoy's ``finalizeDownstreamSpan``), in this
order: ``node_id``, ``zone``, ``guid:x-request-id``, ``http.url``, ``http.method``,
``downstream_cluster`` (``x-envoy-downstream-service-cluster`` or ``-``), ``user_agent`` (or
``-``), ``http.protocol``, ``peer.address`` (the downstream's address without port),
``guid:x-client-trace-id`` (when the request has one),
``request_size``, ``response_size``, ``component: proxy``, ``upstream_cluster``,
``upstream_cluster.name``, ``http.status_code``, ``response_flags`` (``-`` when none),
``error: true`` for a 5xx or no response, then the custom tags.

Egress (upstream) span, per attempt (``finalizeUpstreamSpan``): ``http.protocol``,
``upstream_address``, ``peer.address``, ``component``, ``upstream_cluster``,
``upstream_cluster.name``, ``http.status_code``, ``response_flags``, ``error``, custom tags.

``http.url`` is ``<scheme>://<host><path>``, the path cut to ``max_path_tag_length`` (256).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.tracing.span import Span

__all__ = ["CustomTag", "downstream_tags", "parse_custom_tags", "upstream_tags"]

implements("envoy.type.tracing.v3.CustomTag", "tag", "literal", "environment",
           "request_header")
implements("envoy.type.tracing.v3.CustomTag.Literal", "value")
implements("envoy.type.tracing.v3.CustomTag.Environment", "name", "default_value")
implements("envoy.type.tracing.v3.CustomTag.Header", "name", "default_value")

DEFAULT_MAX_PATH_TAG_LENGTH = 256


@dataclass(frozen=True, slots=True)
class CustomTag:
    """One ``custom_tags`` entry: a fixed value (literal, or the environment read at config
    time, as Envoy does) or a request header read per request."""

    tag: str
    value: str | None = None
    header: str = ""
    default: str = ""

    def apply(self, span: Span, get_header: Callable[[str], str | None]) -> None:
        if self.value is not None:
            span.set_tag(self.tag, self.value)
            return
        value = get_header(self.header)
        if value is None:
            value = self.default
        if value:
            span.set_tag(self.tag, value)


def parse_custom_tags(entries: Sequence[Any], path: str) -> tuple[CustomTag, ...]:
    out = []
    for i, e in enumerate(entries):
        p = f"{path}[{i}]"
        kind = e.WhichOneof("type")
        if kind == "literal":
            out.append(CustomTag(e.tag, e.literal.value))
        elif kind == "environment":
            out.append(CustomTag(e.tag, os.environ.get(e.environment.name,
                                                        e.environment.default_value)))
        elif kind == "request_header":
            out.append(CustomTag(e.tag, header=e.request_header.name.lower(),
                                 default=e.request_header.default_value))
        else:
            raise ConfigError([ConfigIssue(p, "a custom tag needs literal, environment or "
                                              "request_header (metadata and value are not "
                                              "implemented)")])
    return tuple(out)


def http_url(scheme: str, host: str, path: str, max_length: int) -> str:
    return f"{scheme}://{host}{path[:max_length]}"


def downstream_tags(span: Span, *, node_id: str, zone: str, request_id: str, url: str,
                    method: str, downstream_cluster: str, user_agent: str, protocol: str,
                    peer_address: str, request_size: int, response_size: int,
                    upstream_cluster: str, status: int, response_flags: str,
                    custom: Sequence[CustomTag] = (),
                    get_header: Callable[[str], str | None] = lambda _: None,
                    client_trace_id: str = "") -> None:
    t = span.set_tag
    t("node_id", node_id)
    t("zone", zone)
    t("guid:x-request-id", request_id)
    t("http.url", url)
    t("http.method", method)
    t("downstream_cluster", downstream_cluster or "-")
    t("user_agent", user_agent or "-")
    t("http.protocol", protocol)
    t("peer.address", peer_address)
    if client_trace_id:
        t("guid:x-client-trace-id", client_trace_id)
    t("request_size", str(request_size))
    t("response_size", str(response_size))
    _common(span, upstream_cluster, status, response_flags)
    for tag in custom:
        tag.apply(span, get_header)


def upstream_tags(span: Span, *, protocol: str, upstream_address: str, upstream_cluster: str,
                  status: int, response_flags: str, custom: Sequence[CustomTag] = (),
                  get_header: Callable[[str], str | None] = lambda _: None) -> None:
    t = span.set_tag
    t("http.protocol", protocol)
    if upstream_address:
        t("upstream_address", upstream_address)
        t("peer.address", upstream_address)
    _common(span, upstream_cluster, status, response_flags)
    for tag in custom:
        tag.apply(span, get_header)


def _common(span: Span, upstream_cluster: str, status: int, response_flags: str) -> None:
    t = span.set_tag
    t("component", "proxy")
    if upstream_cluster:
        t("upstream_cluster", upstream_cluster)
        t("upstream_cluster.name", upstream_cluster)
    t("http.status_code", str(status) if status else "0")
    t("response_flags", response_flags or "-")
    if not status or status >= 500:
        t("error", "true")
