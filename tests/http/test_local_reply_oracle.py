"""The HCM's ``local_reply_config`` through the real Envoy 1.39.3 and envoi, same config, same
requests, whole replies compared (status, headers but ``date``, body): mappers with every
filter kind envoi evaluates (status code with a runtime key, header, response flag, gRPC
status, duration, not-health-check, and/or), status rewrites, bodies, ``headers_to_add`` with
command operators, ``body_format_override`` and ``body_format`` (text, text from a data source,
JSON, a custom content type), on the replies the router, a direct response, the codec and path
normalisation make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from envoi.testing import free_port
from h2_peers import curl
from scripted_upstream import Reply, Request, ScriptedUpstream, exchange, response

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _status(op: str, value: int, runtime_key: str = "") -> dict[str, Any]:
    v: dict[str, Any] = {"default_value": value, "runtime_key": runtime_key or "lr.unset"}
    return {"status_code_filter": {"comparison": {"op": op, "value": v}}}


def _header(name: str) -> dict[str, Any]:
    return {"header_filter": {"header": {"name": name, "present_match": True}}}


MAPPERS: list[dict[str, Any]] = [
    # A header chooses a JSON body (with its own content type) for any local reply.
    {"filter": _header("x-json"),
     "body_format_override": {
         "json_format": {"code": "%RESPONSE_CODE%", "body": "%LOCAL_REPLY_BODY%",
                         "path": "%REQ(:PATH)%", "flags": "%RESPONSE_FLAGS%",
                         "details": "%RESPONSE_CODE_DETAILS%", "missing": "%REQ(x-none)%",
                         "n": {"nested": "%RESP(:STATUS)%"}},
         "content_type": "application/problem+json"}},
    # The runtime key (static layer: 418) wins over the default value.
    {"filter": _status("EQ", 400, "lr.teapot"), "status_code": 299,
     "body": {"inline_string": "was a teapot"},
     "headers_to_add": [{"header": {"key": "x-was", "value": "%RESPONSE_CODE%"}}]},
    {"filter": {"and_filter": {"filters": [
        _status("GE", 500), {"response_flag_filter": {"flags": ["UF", "UH"]}}]}},
     "status_code": 502, "body": {"inline_string": "upstream trouble\n"},
     "headers_to_add": [
         {"header": {"key": "x-flags", "value": "%RESPONSE_FLAGS%"}},
         {"header": {"key": "x-req", "value": "%REQ(x-a)%/%REQ(x-none)%"}},
         {"header": {"key": "x-empty", "value": "%REQ(x-none)%"}},
         {"header": {"key": "x-kept-empty", "value": "%REQ(x-none)%"},
          "keep_empty_value": True}]},
    {"filter": {"or_filter": {"filters": [_status("EQ", 404), _header("x-or")]}},
     "status_code": 410,
     "headers_to_add": [{"header": {"key": "content-type", "value": "text/x-custom"},
                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
    {"filter": {"grpc_status_filter": {"statuses": ["UNAVAILABLE"]}},
     "body": {"inline_string": "unavailable (grpc 14)"},
     "body_format_override": {"text_format_source": {
         "inline_string": "src: %LOCAL_REPLY_BODY% %RESPONSE_CODE%\n"}}},
    {"filter": {"grpc_status_filter": {"statuses": ["INTERNAL"], "exclude": True}},
     "headers_to_add": [{"header": {"key": "x-not-internal", "value": "1"}}]},
    {"filter": {"and_filter": {"filters": [
        {"not_health_check_filter": {}},
        {"duration_filter": {"comparison": {"op": "LE", "value": {
            "default_value": 600000, "runtime_key": "lr.unset"}}}}]}},
     "status_code": 500, "body": {"inline_string": ""}},
]

BODY_FORMATS: dict[str, dict[str, Any] | None] = {
    "mappers_only": None,
    "text": {"text_format": "[%LOCAL_REPLY_BODY%] %RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(x-a)%\n"},
    "json": {"json_format": {"status": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%"}},
    "typed": {"text_format": "<%LOCAL_REPLY_BODY%>", "content_type": "text/html; charset=UTF-8"},
}

GRPC = "content-type: application/grpc\r\ncontent-length: 0\r\n"
REQUESTS: list[tuple[str, str, str]] = [  # (method, path, extra header lines)
    ("GET", "/nothing", ""),
    ("GET", "/nothing", "x-json: 1\r\n"),
    ("GET", "/nothing", "x-a: hello\r\n"),
    ("HEAD", "/nothing", ""),
    ("GET", "/teapot", ""),
    ("GET", "/teapot", "x-json: 1\r\n"),
    ("GET", "/direct", ""),
    ("GET", "/direct", "x-or: 1\r\n"),
    ("GET", "/direct-internal", ""),
    ("GET", "/direct-empty", ""),
    ("GET", "/ok", ""),
    ("GET", "/up", ""),  # the upstream's own 404: not a local reply, never rewritten
    ("GET", "/down", ""),
    ("GET", "/down", "x-a: A\r\n"),
    ("GET", "/down", "x-json: 1\r\n"),
    ("GET", "/empty-cluster", ""),
    ("GET", "/a%2Fb", ""),
    ("GET", "/a%2Fb", "x-json: 1\r\n"),
    # gRPC requests: the rewritten reply becomes the gRPC error (trailers-only, grpc-status
    # from the rewritten status, the formatted body as grpc-message)
    ("POST", "/nothing", GRPC),
    ("POST", "/down", "content-type: application/grpc\r\ncontent-length: 0\r\nx-json: 1\r\n"),
]
H2_REQUESTS = [("GET", "/nothing", ""), ("GET", "/down", "x-json: 1"), ("GET", "/teapot", ""),
               ("GET", "/direct-empty", "")]
H2_DROP = {"date", "x-envoy-upstream-service-time"}
RAW = [  # requests the codec refuses
    b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
]


def config(admin: int, ports: dict[str, int], down: int, up: int) -> str:
    routes = [
        {"match": {"prefix": "/up"}, "route": {"cluster": "up"}},
        {"match": {"prefix": "/teapot"}, "direct_response": {
            "status": 418, "body": {"inline_string": "short and stout"}}},
        {"match": {"prefix": "/direct-internal"}, "direct_response": {
            "status": 500, "body": {"inline_string": "internal"}}},
        {"match": {"prefix": "/direct-empty"}, "direct_response": {"status": 503}},
        {"match": {"prefix": "/direct"}, "direct_response": {
            "status": 503, "body": {"inline_string": "direct body"}}},
        {"match": {"prefix": "/ok"}, "direct_response": {
            "status": 200, "body": {"inline_string": "fine"}}},
        {"match": {"prefix": "/down"}, "route": {"cluster": "down"}},
        {"match": {"prefix": "/empty-cluster"}, "route": {"cluster": "empty"}},
    ]
    listeners = []
    for name, port in ports.items():
        lrc: dict[str, Any] = {"mappers": MAPPERS}
        if BODY_FORMATS[name] is not None:
            lrc["body_format"] = BODY_FORMATS[name]
        listeners.append({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM, "stat_prefix": name, "local_reply_config": lrc,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "route_config": {"virtual_hosts": [
                        {"name": "v", "domains": ["*"], "routes": routes}]},
                    "http_filters": [ROUTER]}}]}]})
    clusters = [
        {"name": "down", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "down", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": down}}}}]}]}},
        {"name": "up", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": up}}}}]}]}},
        {"name": "empty", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": "empty"}},
    ]
    return yaml.safe_dump({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {"lr.teapot": 418}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters}})


def _shape(r: Reply, head: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
    # Envoy's HTTP/1.1 codec says "transfer-encoding: chunked" on a reply to HEAD that has no
    # content-length (envoi says nothing; a difference of the codec, in the README, not of
    # local_reply_config).
    drop = {"date", "transfer-encoding"} if head else {"date"}
    drop.add("x-envoy-upstream-service-time")  # a duration
    return r.status, [(k, v) for k, v in r.headers if k not in drop], r.body


def _upstream(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(404, b"upstream's own"), 0.0)]


def _run(kind: str, proxy_process: Callable[[str, str, int], Any],
         up: ScriptedUpstream) -> dict[Any, Any]:
    ports = {name: free_port() for name in BODY_FORMATS}
    admin = free_port()
    proxy_process(kind, config(admin, ports, free_port(), up.port), admin)
    got: dict[Any, Any] = {}
    for name, port in ports.items():
        for method, path, extra in REQUESTS:
            req = f"{method} {path} HTTP/1.1\r\nhost: lr.test\r\n{extra}\r\n".encode()
            head = method == "HEAD"
            got[(name, method, path, extra)] = _shape(exchange(port, req, head_request=head),
                                                      head)
        for raw in RAW:
            got[(name, raw)] = _shape(exchange(port, raw))
        for method, path, extra in H2_REQUESTS:  # HTTP/2 (codec AUTO, prior knowledge)
            args = ["--http2-prior-knowledge", "-X", method]
            if extra:
                args += ["-H", extra]
            r = curl(f"http://127.0.0.1:{port}{path}", *args)
            got[(name, "h2", method, path, extra)] = (
                r.version, r.status, [(k, v) for k, v in r.headers if k not in H2_DROP], r.body)
    return got


def test_local_replies_as_envoy(proxy_process: Callable[[str, str, int], Any]) -> None:
    with ScriptedUpstream(_upstream) as up:
        envoy = _run("envoy", proxy_process, up)
        envoi = _run("envoi", proxy_process, up)
    # Known difference (README): Envoy drops the newline a JSON body_format ends with from a
    # gRPC error's grpc-message when a mapper also set a content-type; envoi keeps it.
    odd = ("json", "POST", "/nothing", GRPC)
    assert envoy[odd][1][2] == ("grpc-message", '{"message":"","status":410}')
    assert envoi[odd][1][2] == ("grpc-message", '{"message":"","status":410}%0A')
    diffs = {k: (envoy[k], envoi[k]) for k in envoy if envoy[k] != envoi[k] and k != odd}
    assert not diffs, "\n".join(f"{k}:\n  envoy {a}\n  envoi {b}" for k, (a, b) in diffs.items())
    # The test means something: the mappers did rewrite (the oracle agrees on each).
    assert envoy[("mappers_only", "GET", "/teapot", "")][0] == 299
    assert envoy[("mappers_only", "GET", "/nothing", "")][0] == 410
    assert envoy[("json", "GET", "/down", "")][0] == 502
    assert envoy[("text", "GET", "/ok", "")][2] == b"[fine] 200 - -\n"  # direct: local too
    assert envoy[("text", "GET", "/up", "")][2] == b"upstream's own"
    assert envoy[("json", "h2", "GET", "/nothing", "")][:2] == ("2", 410)
