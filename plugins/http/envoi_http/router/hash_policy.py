"""A route's ``hash_policy``: the request hash that RING_HASH and MAGLEV clusters balance on.

Built once per route at config time; :meth:`HashPolicy.compute` runs per request and its result
goes to the load balancer in a :class:`envoi.upstream.lb.LoadBalancerContext`. As in Envoy, each
policy hashes its value with xxHash64; the hashes of several policies are combined by rotating
the running hash left by one bit and XOR-ing the next; a ``terminal`` policy that produced a hash
ends the list. A policy whose value is missing contributes nothing; with no hash at all the
balancer picks at random.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import xxhash
from envoi.config import ConfigError, ConfigIssue
from envoi.http.headers import HeaderMap

_MASK = (1 << 64) - 1
# (headers, downstream remote address "ip:port") -> hash or None
_Method = Callable[[HeaderMap, str], int | None]


def _xx(values: list[bytes]) -> int:
    """Envoy's HashUtil::xxHash64 over a list: each value seeds the next."""
    h = 0
    for v in values:
        h = xxhash.xxh64_intdigest(v, h)
    return int(h)


def _header(name: bytes) -> _Method:
    def compute(h: HeaderMap, _addr: str) -> int | None:
        if name == b":authority":
            values = [h.authority] if h.authority else []
        elif name == b":path":
            values = [h.path] if h.path else []
        elif name == b":method":
            values = [h.method] if h.method else []
        else:
            values = [v for k, v in h.headers if k == name]
        return _xx(sorted(values)) if values else None

    return compute


def _cookie(name: bytes) -> _Method:
    def compute(h: HeaderMap, _addr: str) -> int | None:
        for k, v in h.headers:
            if k != b"cookie":
                continue
            for part in v.split(b";"):
                key, sep, value = part.strip().partition(b"=")
                if sep and key == name:
                    return _xx([value.strip(b'"')])
        return None

    return compute


def _source_ip(h: HeaderMap, addr: str) -> int | None:
    if not addr:
        return None
    ip = addr.rsplit(":", 1)[0] if not addr.startswith("[") else addr[1:addr.index("]")]
    return _xx([ip.encode()])


def _query(name: bytes) -> _Method:
    def compute(h: HeaderMap, _addr: str) -> int | None:
        _, sep, query = h.path.partition(b"?")
        if not sep:
            return None
        for part in query.split(b"&"):
            key, _, value = part.partition(b"=")
            if unquote_to_bytes(key) == name:
                return _xx([unquote_to_bytes(value)])
        return None

    return compute


class HashPolicy:
    """The compiled ``hash_policy`` list of one route."""

    __slots__ = ("methods",)

    def __init__(self, methods: list[tuple[_Method, bool]]) -> None:
        self.methods = methods

    def compute(self, headers: HeaderMap, remote_address: str) -> int | None:
        result: int | None = None
        for method, terminal in self.methods:
            h = method(headers, remote_address)
            if h is None:
                continue
            result = h if result is None else \
                ((((result << 1) | (result >> 63)) & _MASK) ^ h)
            if terminal:
                break
        return result


def build_hash_policy(policies: Any, path: str) -> HashPolicy | None:
    """``RouteAction.hash_policy`` to a HashPolicy (None for an empty list)."""
    methods: list[tuple[_Method, bool]] = []
    issues: list[ConfigIssue] = []
    for i, p in enumerate(policies):
        ppath = f"{path}[{i}]"
        kind = p.WhichOneof("policy_specifier")
        if kind == "header":
            if p.header.HasField("regex_rewrite"):
                issues.append(ConfigIssue(ppath + ".header.regex_rewrite",
                                          "is not supported by envoi"))
            methods.append((_header(p.header.header_name.lower().encode()), p.terminal))
        elif kind == "cookie":
            c = p.cookie
            for fd, _ in c.ListFields():
                if fd.name != "name":
                    issues.append(ConfigIssue(f"{ppath}.cookie.{fd.name}",
                                              "is not supported by envoi (no generated "
                                              "cookies)"))
            methods.append((_cookie(c.name.encode()), p.terminal))
        elif kind == "connection_properties":
            if not p.connection_properties.source_ip:
                issues.append(ConfigIssue(ppath + ".connection_properties.source_ip",
                                          "must be true"))
            methods.append((_source_ip, p.terminal))
        elif kind == "query_parameter":
            methods.append((_query(p.query_parameter.name.encode()), p.terminal))
        else:
            issues.append(ConfigIssue(f"{ppath}.{kind}", "is not supported by envoi"))
    if issues:
        raise ConfigError(issues)
    return HashPolicy(methods) if methods else None
