"""The HCM's ``local_reply_config``: how envoi rewrites the replies it makes itself (404 for no
route, 503 for no healthy upstream, a filter's 403, a codec's 400...), as Envoy 1.39 does.

Envoy's order (``LocalReplyImpl::rewrite`` and ``Utility::sendLocalReply``): the reply's status
is set in the headers and the stream info; the ``mappers`` are tried in order and the first
whose ``filter`` (an access-log filter, ``envoi_http.access_log_filter``) matches rewrites: its
``body`` replaces the body, its ``headers_to_add`` are applied, its ``status_code`` replaces the
status; then the body is formatted by the matching mapper's ``body_format_override``, else by
``body_format``, else left as it is (``%LOCAL_REPLY_BODY%``). A non-empty body gets
``content-length`` and the formatter's content type (``text/plain``; ``application/json`` for
``json_format``; ``content_type`` when set) unless a header added by a mapper set one; an empty
body has neither header.

Configured once per HCM; the connection manager hands it to each stream (``local_reply``), and
``ActiveStream.send_local_reply`` calls :meth:`LocalReply.apply` only when it is set, so a
listener without ``local_reply_config`` pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoi.config import ConfigError, ConfigIssue, data_source_bytes, implements
from envoi.extensions import FactoryContext
from envoi.http.grpc import local_reply_headers as grpc_local_reply_headers
from envoi.http.headers import HeaderMap
from envoi.stream_info import StreamInfo

from envoi_http.access_log_filter import LogFilter, build_filter
from envoi_http.router.route_policies import header_mutations

_H = "envoy.extensions.filters.network.http_connection_manager.v3."
implements(_H + "LocalReplyConfig", "mappers", "body_format")
implements(_H + "ResponseMapper",
           "filter", "status_code", "body", "body_format_override", "headers_to_add")
# content_type is what a local reply's body is sent as (access logs refuse it: access_log.py).
implements("envoy.config.core.v3.SubstitutionFormatString", "content_type")

TEXT = b"text/plain"
JSON = b"application/json"
LOCAL_REPLY_BODY = "local_reply_body"  # the stream_info.extra key %LOCAL_REPLY_BODY% reads


class LocalReplyContext:
    """The log/filter context of a reply being made: the request's headers, the reply's
    headers so far, its status, its body (``%LOCAL_REPLY_BODY%``); no trailers."""

    __slots__ = ("local_reply_body", "request_headers", "response_headers", "stream_info")

    def __init__(self, stream_info: StreamInfo, request_headers: HeaderMap,
                 response_headers: HeaderMap, body: bytes) -> None:
        self.stream_info = stream_info
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.local_reply_body = body.decode("utf-8", "replace")

    def request_header(self, name: str) -> str | None:
        return self.request_headers.get(name)

    def response_header(self, name: str) -> str | None:
        return self.response_headers.get(name)

    def response_trailer(self, name: str) -> str | None:
        return None

    @property
    def protocol(self) -> str | None:
        return getattr(self.stream_info, "protocol", None)

    @property
    def response_code(self) -> int:
        return self.response_headers.status


class BodyFormat:
    """A ``SubstitutionFormatString`` for a reply body, and the content type it is sent as."""

    __slots__ = ("content_type", "render")

    def __init__(self, render: Callable[[Any], str], content_type: bytes) -> None:
        self.render = render
        self.content_type = content_type

    @classmethod
    def from_proto(cls, msg: Any, path: str, ctx: FactoryContext) -> BodyFormat:
        from envoi.access_log import compile_format, compile_json_format
        from google.protobuf import json_format

        operators = ctx.access_log_operators
        kind = msg.WhichOneof("format")
        issues: list[ConfigIssue] = []
        for name in ("omit_empty_values", "formatters", "json_format_options"):
            if msg.HasField(name) if name == "json_format_options" else getattr(msg, name):
                issues.append(ConfigIssue(f"{path}.{name}", "not implemented by envoi"))
        if issues:
            raise ConfigError(issues)
        render: Callable[[Any], str]
        if kind == "json_format":
            render = compile_json_format(json_format.MessageToDict(msg.json_format),
                                         path + ".json_format", operators)
        elif kind == "text_format_source":
            text = data_source_bytes(msg.text_format_source, path + ".text_format_source")
            render = compile_format(text.decode("utf-8", "replace"),
                                    path + ".text_format_source", operators)
        elif kind == "text_format":
            render = compile_format(msg.text_format, path + ".text_format", operators)
        else:
            raise ConfigError([ConfigIssue(path, "value is required (text_format, "
                                                 "json_format or text_format_source)")])
        if msg.content_type:
            content_type = msg.content_type.encode("latin-1")
        else:
            content_type = JSON if kind == "json_format" else TEXT
        return cls(render, content_type)


class Mapper:
    __slots__ = ("body", "body_format", "filter", "headers", "status_code")

    def __init__(self, filt: LogFilter, status_code: int | None, body: bytes | None,
                 headers: Any, body_format: BodyFormat | None) -> None:
        self.filter = filt
        self.status_code = status_code
        self.body = body
        self.headers = headers  # router.route_policies.HeaderMutations (or None)
        self.body_format = body_format


class LocalReply:
    """One HCM's ``local_reply_config``."""

    __slots__ = ("body_format", "mappers")

    def __init__(self, mappers: tuple[Mapper, ...], body_format: BodyFormat | None) -> None:
        self.mappers = mappers
        self.body_format = body_format

    def apply(self, stream_info: StreamInfo, request_headers: HeaderMap | None,
              headers: HeaderMap, body: bytes) -> tuple[bytes, bool]:
        """Rewrite a local reply: ``headers`` (status set; the caller's extra headers added)
        in place; returns the body to send, with content-length / content-type set, and
        whether a body format made it."""
        ctx = LocalReplyContext(stream_info, request_headers or HeaderMap(), headers, body)
        _set_code(ctx, headers.status)
        original = body
        content_type_before = headers.get_bytes(b"content-type")
        fmt = self.body_format
        for m in self.mappers:
            if not m.filter(ctx):
                continue
            if m.body is not None:
                body = m.body
                ctx.local_reply_body = body.decode("utf-8", "replace")
            if m.headers is not None:
                m.headers.apply(headers, ctx)
            if m.status_code is not None and m.status_code != headers.status:
                _set_code(ctx, m.status_code)
            if m.body_format is not None:
                fmt = m.body_format
            break
        content_type = TEXT
        formatted = fmt is not None
        if fmt is not None:
            body = fmt.render(ctx).encode("utf-8")
            content_type = fmt.content_type
        custom_type = headers.get_bytes(b"content-type") != content_type_before
        if body:
            headers.set_bytes(b"content-length", b"%d" % len(body))
            if headers.get_bytes(b"content-type") is None or (body != original
                                                                and not custom_type):
                headers.set_bytes(b"content-type", content_type)
            stream_info.extra[LOCAL_REPLY_BODY] = ctx.local_reply_body
        else:
            headers.remove_bytes(b"content-length")
            headers.remove_bytes(b"content-type")
        return body, formatted


def grpc_error(headers: HeaderMap, body: bytes, grpc_status: int | None = None) -> bytes:
    """A rewritten local reply to a gRPC request as Envoy sends it: HTTP 200,
    ``application/grpc``, ``grpc-status`` unless a header set one: the reply's own
    (``grpc_status``: the stream's duration timeout says DEADLINE_EXCEEDED) or mapped from the
    (rewritten) status, the body as ``grpc-message``; no body, no content-length. (One case
    differs: Envoy drops
    the newline of a JSON ``body_format`` when a mapper also set a content-type; envoi keeps
    it, as Envoy does otherwise.)"""
    code = headers.status
    headers.status = 200
    headers.remove_bytes(b"content-length")
    for name, value in grpc_local_reply_headers(code, body, grpc_status):
        if name == b"grpc-status" and headers.get_bytes(name) is not None:
            continue
        headers.set_bytes(name, value)
    return b""


def _set_code(ctx: LocalReplyContext, code: int) -> None:
    # As Envoy: the status in the headers (%RESP(:STATUS)%) and the stream info
    # (status_code_filter, %RESPONSE_CODE%) both follow a rewrite.
    ctx.response_headers.status = code
    info = ctx.stream_info
    if hasattr(info, "response_code"):
        info.response_code = code


def build_local_reply(config: Any, path: str, ctx: FactoryContext) -> LocalReply | None:
    """The HCM's ``local_reply_config`` (None when it is not set)."""
    if not config.HasField("local_reply_config"):
        return None
    lrc = config.local_reply_config
    path = path + ".local_reply_config"
    issues: list[ConfigIssue] = []
    mappers: list[Mapper] = []
    runtime = _runtime(ctx)
    for i, m in enumerate(lrc.mappers):
        mpath = f"{path}.mappers[{i}]"
        filt: LogFilter | None = None
        if not m.HasField("filter"):
            issues.append(ConfigIssue(mpath + ".filter", "value is required"))
        else:
            try:
                filt = build_filter(m.filter, mpath + ".filter", runtime)
            except ConfigError as exc:
                issues.extend(exc.errors)
        status: int | None = None
        if m.HasField("status_code"):
            status = m.status_code.value
            if not 200 <= status < 600:
                issues.append(ConfigIssue(mpath + ".status_code.value",
                                          "value must be inside range [200, 600)"))
        body: bytes | None = None
        if m.HasField("body"):
            try:
                body = data_source_bytes(m.body, mpath + ".body")
            except ConfigError as exc:
                issues.extend(exc.errors)
        fmt: BodyFormat | None = None
        if m.HasField("body_format_override"):
            try:
                fmt = BodyFormat.from_proto(m.body_format_override,
                                            mpath + ".body_format_override", ctx)
            except ConfigError as exc:
                issues.extend(exc.errors)
        headers = None
        if len(m.headers_to_add):
            if len(m.headers_to_add) > 1000:
                issues.append(ConfigIssue(mpath + ".headers_to_add",
                                          "value must contain no more than 1000 item(s)"))
            try:
                headers = header_mutations(m.headers_to_add, (), mpath + ".headers_to_add",
                                           mpath + ".headers_to_remove", ctx)
            except ConfigError as exc:
                issues.extend(exc.errors)
        if filt is not None:
            mappers.append(Mapper(filt, status, body, headers, fmt))
    body_format: BodyFormat | None = None
    if lrc.HasField("body_format"):
        try:
            body_format = BodyFormat.from_proto(lrc.body_format, path + ".body_format", ctx)
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues:
        raise ConfigError(issues)
    return LocalReply(tuple(mappers), body_format)


def _runtime(ctx: FactoryContext) -> Any:
    try:
        return ctx.runtime
    except Exception:  # a context without a server (unit tests): no runtime keys
        return None
