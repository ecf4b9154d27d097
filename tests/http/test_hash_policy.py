"""Route hash_policy: Envoy's hash of header, cookie, source IP and query parameter values."""

from __future__ import annotations

import pytest
import xxhash
from envoi.config import ConfigError
from envoi.http.headers import HeaderMap
from envoi_http.router.hash_policy import build_hash_policy
from envoy.config.route.v3 import route_components_pb2 as rc


def policy(*items: dict[str, object]) -> object:
    out = []
    for item in items:
        p = rc.RouteAction.HashPolicy()
        for k, v in item.items():
            if k == "terminal":
                p.terminal = bool(v)
            elif k == "header":
                p.header.header_name = str(v)
            elif k == "cookie":
                p.cookie.name = str(v)
            elif k == "query":
                p.query_parameter.name = str(v)
            elif k == "source_ip":
                p.connection_properties.source_ip = True
        out.append(p)
    hp = build_hash_policy(out, "route.hash_policy")
    assert hp is not None
    return hp


def xx(v: bytes, seed: int = 0) -> int:
    return xxhash.xxh64_intdigest(v, seed)


def req(headers: list[tuple[bytes, bytes]], path: bytes = b"/") -> HeaderMap:
    return HeaderMap(headers, method=b"GET", path=path, authority=b"h")


def rotl1(x: int) -> int:
    return ((x << 1) | (x >> 63)) & (2**64 - 1)


def test_each_kind() -> None:
    assert policy({"header": "X-User"}).compute(req([(b"x-user", b"alice")]), "") == xx(b"alice")
    assert policy({"header": "x-user"}).compute(req([]), "") is None
    # Several values: sorted, each seeding the next (Envoy's HashUtil::xxHash64 of a list).
    two = policy({"header": "x-v"}).compute(req([(b"x-v", b"b"), (b"x-v", b"a")]), "")
    assert two == xx(b"b", xx(b"a"))
    assert policy({"cookie": "sid"}).compute(
        req([(b"cookie", b"a=1; sid=xyz; z=2")]), "") == xx(b"xyz")
    assert policy({"query": "u"}).compute(req([], b"/p?x=1&u=bob%20x"), "") == xx(b"bob x")
    assert policy({"source_ip": True}).compute(req([]), "10.1.2.3:5555") == xx(b"10.1.2.3")
    assert policy({"source_ip": True}).compute(req([]), "[::1]:5555") == xx(b"::1")


def test_combination_and_terminal() -> None:
    h = req([(b"a", b"1"), (b"b", b"2")])
    both = policy({"header": "a"}, {"header": "b"}).compute(h, "")
    assert both == rotl1(xx(b"1")) ^ xx(b"2")
    assert policy({"header": "a", "terminal": True}, {"header": "b"}).compute(h, "") == xx(b"1")
    # A terminal policy that produced nothing does not stop the list.
    assert policy({"header": "zz", "terminal": True}, {"header": "b"}).compute(h, "") == xx(b"2")


def test_unsupported_parts_are_config_errors() -> None:
    p = rc.RouteAction.HashPolicy()
    p.cookie.name = "sid"
    p.cookie.ttl.seconds = 5
    with pytest.raises(ConfigError, match=r"hash_policy\[0\].cookie.ttl"):
        build_hash_policy([p], "route.hash_policy")
    f = rc.RouteAction.HashPolicy()
    f.filter_state.key = "k"
    with pytest.raises(ConfigError, match="filter_state: is not supported"):
        build_hash_policy([f], "route.hash_policy")
