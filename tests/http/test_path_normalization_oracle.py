"""HCM path normalisation through the real Envoy 1.39.3 and envoi, same config, same raw
requests: ``normalize_path``, ``merge_slashes`` and each ``path_with_escaped_slashes_action``.
Compared: the status, the ``location`` of a redirect, and the path the upstream saw. The paths
cover dot segments (plain and escaped), escapes of unreserved and reserved characters, bytes a
path may not hold, backslashes, ``%2F``/``%5C`` in both cases, and queries (left alone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from envoi.testing import free_port
from scripted_upstream import Request, ScriptedUpstream, exchange, response

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
VARIANTS: dict[str, dict[str, Any]] = {
    "normalize": {"normalize_path": True},
    "merge": {"merge_slashes": True},
    "both": {"normalize_path": True, "merge_slashes": True},
    "reject": {"path_with_escaped_slashes_action": "REJECT_REQUEST"},
    "redirect": {"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT"},
    "redirect_all": {"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                     "normalize_path": True, "merge_slashes": True},
    "forward": {"path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"},
    "keep": {"path_with_escaped_slashes_action": "KEEP_UNCHANGED", "normalize_path": True},
    "off": {},
}
PATHS = [
    "/a/b", "/a/./b", "/a/../b", "/a/b/..", "/a/b/.", "/../a", "/..", "/.", "/a/b/../../..",
    "/a/%2e%2e/b", "/a/%2E/b", "/a/.%2e/b", "/a/%2e./b", "/a/%2E%2e", "/a%2e", "/a/%2e",
    "/a//b///c", "/a%2Fb", "/a%2fb/c", "/a%5Cb", "/a%5cb", "/a\\b", "/a/%2E%2E%2Fb",
    "/a/b%2F..%2Fc", "/a/%41%42c", "/a%7Eb", "/a%20b", "/a%3Ab", "/a%zzb", "/a%2", "/a%252Fb",
    "/a%e2%82%acb", "/a%00b", '/a"b', "/a<b>", "/a{b}", "/a|b", "/a^b", "/a`b", "/a'b",
    "/a!b$&()*+,;=@", "/a/.hidden", "/a/..hidden", "/a/...", "/~user/x", "/a/b;c/../d",
    "/a?x=/../y", "/a/..?q=1", "/a%2Fb?q=%2F", "/a/./../../b",
]


def config(admin: int, ports: dict[str, int], up: int) -> str:
    listeners = []
    for name, options in VARIANTS.items():
        listeners.append({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[name]}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM, "stat_prefix": name, **options,
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router."
                                 "v3.Router"}}],
                }}]}],
        })
    return yaml.safe_dump({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": listeners, "clusters": [{
            "name": "up", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": up}}}}]}]}}]},
    })


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(200, b"ok"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def outcomes(kind: str, ports: dict[str, int], up: ScriptedUpstream,
             ) -> dict[tuple[str, str], tuple[int, str | None, str | None]]:
    """(variant, path) -> (status, location, path the upstream saw)."""
    out = {}
    for name, port in ports.items():
        for i, path in enumerate(PATHS):
            tid = f"{kind}-{name}-{i}"
            r = exchange(port, f"GET {path} HTTP/1.1\r\nhost: a\r\nx-test-id: {tid}\r\n\r\n"
                         .encode("latin-1"))
            seen = up.seen.get(tid)
            out[(name, path)] = (r.status, r.header("location"), seen[0].path if seen else None)
    return out


@pytest.fixture(scope="module")
def envoy_outcomes(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory,
                   ) -> dict[tuple[str, str], tuple[int, str | None, str | None]]:
    from envoi.testing import EnvoyProcess

    ports = {name: free_port() for name in VARIANTS}
    admin = free_port()
    folder = tmp_path_factory.mktemp("envoy")
    cfg = folder / "envoy.yaml"
    cfg.write_text(config(admin, ports, upstream.port))
    with EnvoyProcess(cfg, admin, folder / "envoy.log"):
        return outcomes("envoy", ports, upstream)


def test_envoy_normalises_as_documented(envoy_outcomes: dict[Any, Any]) -> None:
    # The premise, so the comparison below cannot pass by both doing nothing.
    assert envoy_outcomes[("normalize", "/a/../b")] == (200, None, "/b")
    assert envoy_outcomes[("merge", "/a//b///c")] == (200, None, "/a/b/c")
    assert envoy_outcomes[("reject", "/a%2Fb")][0] == 400
    assert envoy_outcomes[("redirect", "/a%2Fb")][:2] == (307, "/a/b")
    assert envoy_outcomes[("off", "/a/../b")] == (200, None, "/a/../b")


def test_envoi_normalises_as_envoy(envoy_outcomes: dict[Any, Any], upstream: ScriptedUpstream,
                                   proxy_process: Callable[[str, str, int], Any]) -> None:
    ports = {name: free_port() for name in VARIANTS}
    admin = free_port()
    proxy = proxy_process("envoi", config(admin, ports, upstream.port), admin)
    got = outcomes("envoi", ports, upstream)
    diff = {k: (envoy_outcomes[k], v) for k, v in got.items() if envoy_outcomes[k] != v}
    assert not diff, "\n".join(f"{k}: envoy {e}, envoi {i}" for k, (e, i) in diff.items())
    stats = proxy.stats()
    assert stats["http.reject.downstream_rq_failed_path_normalization"] == sum(
        1 for (name, _), v in got.items() if name == "reject" and v[0] == 400)
    assert stats["http.redirect.downstream_rq_redirected_with_normalized_path"] == sum(
        1 for (name, _), v in got.items() if name == "redirect" and v[0] == 307)
