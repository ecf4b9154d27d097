from typing import Any

import pytest
from envoi.http import HeaderMap
from envoi.stats import Store
from envoi.testing.context import factory_context
from envoi_http.router.config import build_route_table
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

RC = {
    "virtual_hosts": [
        {"name": "api", "domains": ["api.local", "api.local:*"],
         "routes": [
             {"match": {"path": "/exact"}, "route": {"cluster": "a"}},
             {"match": {"safe_regex": {"regex": "^/items/[0-9]+$"}}, "route": {"cluster": "b"}},
             {"match": {"path_separated_prefix": "/sep"}, "route": {"cluster": "sep"}},
             {"match": {"prefix": "/CI", "case_sensitive": False}, "route": {"cluster": "ci"}},
             {"match": {"prefix": "/", "headers": [
                 {"name": "x-canary", "string_match": {"exact": "1"}}]}, "route": {"cluster": "b"}},
             {"match": {"prefix": "/", "headers": [
                 {"name": "x-absent", "present_match": True, "invert_match": True},
                 {"name": ":method", "string_match": {"exact": "DELETE"}}]},
              "route": {"cluster": "del"}},
             {"match": {"prefix": "/", "query_parameters": [
                 {"name": "backend", "string_match": {"exact": "b"}}]}, "route": {"cluster": "b"}},
             {"match": {"prefix": "/"}, "route": {"cluster": "a"}},
         ]},
        {"name": "wild", "domains": ["*.example.com"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]},
        {"name": "pre", "domains": ["foo.*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 201}}]},
        {"name": "any", "domains": ["*"], "routes": [
            {"match": {"prefix": "/only"}, "route": {"cluster": "default"}}]},
    ]
}


@pytest.fixture(scope="module")
def table() -> Any:
    rc = json_format.ParseDict(RC, route_pb2.RouteConfiguration())
    store = Store()
    ctx = factory_context(stats=store)
    return build_route_table(rc, "route_config", ctx)


def pick(table: Any, path: str, host: str = "api.local", method: str = "GET",
         **hdrs: str) -> Any:
    h = HeaderMap([(k.replace("_", "-").encode(), v.encode()) for k, v in hdrs.items()],
                  method=method.encode(), path=path.encode(), authority=host.encode())
    r = table.route(h)
    return None if r is None else (r.vhost.name, r.cluster or r.direct_status)


def test_paths(table: Any) -> None:
    assert pick(table, "/exact") == ("api", "a")
    assert pick(table, "/exact?x=1") == ("api", "a")
    assert pick(table, "/items/42") == ("api", "b")
    assert pick(table, "/items/42x") == ("api", "a")
    assert pick(table, "/sep") == ("api", "sep")
    assert pick(table, "/sep/x") == ("api", "sep")
    assert pick(table, "/sepx") == ("api", "a")
    assert pick(table, "/ci/lower") == ("api", "ci")


def test_headers_and_query(table: Any) -> None:
    assert pick(table, "/x", x_canary="1") == ("api", "b")
    assert pick(table, "/x", x_canary="2") == ("api", "a")
    assert pick(table, "/x", method="DELETE") == ("api", "del")
    assert pick(table, "/x", method="DELETE", x_absent="y") == ("api", "a")
    assert pick(table, "/x?backend=b") == ("api", "b")
    assert pick(table, "/x?backend=c") == ("api", "a")


def test_domains(table: Any) -> None:
    assert pick(table, "/", host="API.local:8080") == ("api", "a")
    assert pick(table, "/", host="a.example.com") == ("wild", 200)
    assert pick(table, "/", host="foo.bar") == ("pre", 201)
    assert pick(table, "/only", host="other") == ("any", "default")
    assert pick(table, "/nope", host="other") is None
