"""``local_reply_config`` at config time: what envoi refuses (with the field's path) and what a
mapper does to a reply's headers (content type and length rules of Envoy's sendLocalReply).
The replies themselves are compared with Envoy's in test_local_reply_oracle.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoi.config import ConfigError
from envoi.http.filter import HttpStreamInfo
from envoi.http.headers import HeaderMap
from envoi.server import Options, Server
from envoi.testing import envoy_validate
from envoi_http.hcm.local_reply import BodyFormat, LocalReply, Mapper

HCM_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
           "HttpConnectionManager")
TC = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
LRC = f"{TC}.local_reply_config"
BASE: dict[str, Any] = {"static_resources": {"listeners": [{
    "name": "in",
    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
    "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_URL, "stat_prefix": "in",
            "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }}]}]}]}}


def _verdicts(tmp_path: Path, hcm_extra: dict[str, Any]) -> tuple[bool, list[str]]:
    cfg = copy.deepcopy(BASE)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"].update(hcm_extra)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    envoy_ok = envoy_validate(path)[0]
    try:
        Server(Options(config_path=str(path))).load()
    except ConfigError as exc:
        return envoy_ok, [str(i) for i in exc.errors]
    return envoy_ok, []


@pytest.mark.parametrize("kind,body", [
    ("traceable_filter", {}),
    ("runtime_filter", {"runtime_key": "k"}),
    ("metadata_filter", {}),
    ("log_type_filter", {"types": ["DownstreamEnd"]}),
])
def test_filter_kinds_envoi_lacks_are_refused_by_path(tmp_path: Path, kind: str,
                                                      body: dict[str, Any]) -> None:
    envoy_ok, errors = _verdicts(tmp_path, {"local_reply_config": {"mappers": [
        {"filter": {kind: body}, "status_code": 500}]}})
    assert envoy_ok  # Envoy acts on them; envoi says it does not
    assert errors == [f"{LRC}.mappers[0].filter.{kind}: not implemented by envoi"]


def test_nested_unimplemented_filter_is_named_inside_or_filter(tmp_path: Path) -> None:
    envoy_ok, errors = _verdicts(tmp_path, {"local_reply_config": {"mappers": [
        {"filter": {"or_filter": {"filters": [{"not_health_check_filter": {}},
                                              {"traceable_filter": {}}]}}}]}})
    assert envoy_ok
    assert errors == [f"{LRC}.mappers[0].filter.or_filter.filters[1].traceable_filter: "
                      "not implemented by envoi"]


def test_format_options_envoi_lacks_are_refused(tmp_path: Path) -> None:
    envoy_ok, errors = _verdicts(tmp_path, {"local_reply_config": {"body_format": {
        "text_format": "%LOCAL_REPLY_BODY%", "omit_empty_values": True}}})
    assert envoy_ok
    assert errors == [f"{LRC}.body_format.omit_empty_values: not implemented by envoi"]


def test_access_log_content_type_is_refused(tmp_path: Path) -> None:
    # content_type means something for a local reply's body only; an access log line has none.
    _, errors = _verdicts(tmp_path, {"access_log": [{
        "name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
                     "StdoutAccessLog",
            "log_format": {"text_format": "x\n", "content_type": "text/x"}}}]})
    assert len(errors) == 1 and errors[0].endswith(
        "log_format.content_type: not implemented by envoi"), errors


def _always(ctx: Any) -> bool:
    return True


def _apply(lr: LocalReply, status: int, body: bytes,
           extra: dict[str, str] | None = None) -> tuple[HeaderMap, bytes, HttpStreamInfo]:
    info = HttpStreamInfo("1.2.3.4:5", "127.0.0.1:80")
    h = HeaderMap(status=status)
    for k, v in (extra or {}).items():
        h.set(k, v)
    out, _ = lr.apply(info, HeaderMap(method=b"GET", path=b"/p"), h, body)
    return h, out, info


def test_identity_without_mappers_or_format() -> None:
    h, body, info = _apply(LocalReply((), None), 404, b"nope")
    assert (h.status, body, h.get("content-type"), h.get("content-length")) == (
        404, b"nope", "text/plain", "4")
    assert info.response_code == 404


def test_empty_body_drops_content_headers_even_a_mapper_set_one() -> None:
    class AddType:
        def apply(self, h: HeaderMap, ctx: Any) -> None:
            h.set("content-type", "text/x")

    lr = LocalReply((Mapper(_always, 401, b"", AddType(), None),), None)
    h, body, info = _apply(lr, 404, b"was here")
    assert (h.status, body, h.get("content-type"), h.get("content-length")) == (
        401, b"", None, None)
    assert info.response_code == 401


def test_caller_content_type_kept_unless_the_body_changes() -> None:
    fmt = BodyFormat(lambda ctx: "formatted", b"text/plain")
    h, body, _ = _apply(LocalReply((), None), 403, b"x", {"content-type": "application/grpc"})
    assert (body, h.get("content-type")) == (b"x", "application/grpc")
    h, body, _ = _apply(LocalReply((), fmt), 403, b"x", {"content-type": "application/grpc"})
    assert (body, h.get("content-type")) == (b"formatted", "text/plain")


def test_first_matching_mapper_only() -> None:
    lr = LocalReply((Mapper(lambda ctx: ctx.response_code == 500, 501, b"a", None, None),
                     Mapper(_always, 502, b"b", None, None),
                     Mapper(_always, 503, b"c", None, None)), None)
    assert _apply(lr, 500, b"")[0].status == 501
    h, body, _ = _apply(lr, 404, b"")
    assert (h.status, body) == (502, b"b")
