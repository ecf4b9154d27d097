"""``regex_rewrite`` through the real Envoy 1.39.3 and envoi with the same config and requests:
the path the upstream sees must be the same. Envoy substitutes with RE2's rules (``\\1``..``\\9``
name capture groups, ``\\0`` the whole match, ``\\\\`` is a backslash; every match is replaced),
which envoi used to ignore (``/r/\\2/\\1`` reached the upstream literally)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoi.testing import free_port
from http_peers import HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import Request, ScriptedUpstream, exchange, response

ROUTES = [
    # (prefix, pattern, substitution) -- YAML single-quoted: backslashes are literal
    ("/r/", r"^/r/([^/]+)/([^/]+)$", r"/r/\2/\1"),
    ("/all/", "o", "0"),  # every match
    ("/whole/", "o+", r"<\0>"),
    ("/bs/", r"^/bs/(.*)$", r"/bs/a\\b/\1"),  # \\ is one backslash
    ("/big/", r"^/big/(.*)$", r"/big/\2"),  # a group the pattern lacks: no replacement
    ("/bad/", r"^/bad/(.*)$", r"/bad/x\qy\1"),  # an invalid escape ends the rewrite there
    ("/empty/", "x*", "-"),  # empty matches, RE2's rule next to a previous match
]
PATHS = ["/r/one/two", "/r/one/two?q=1&z=2", "/r/one", "/all/foo/boo", "/whole/foo/boooo",
         "/bs/c", "/big/c", "/bad/c", "/empty/abxd"]


def config(admin: int, port: int, up: int) -> str:
    routes = "".join(f"""
              - match: {{{{prefix: "{prefix}"}}}}
                route:
                  cluster: up
                  regex_rewrite: {{{{pattern: {{{{regex: '{pat}'}}}}, substitution: '{sub}'}}}}"""
                     for prefix, pat, sub in ROUTES)
    text = HCM_LISTENER + """\
          stat_prefix: rw
""" + ROUTER_ONLY + """\
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:""" + routes + """
  clusters:
""" + UP_CLUSTER
    return text.format(admin=admin, port=port, up=up)


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(200, b"ok"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def upstream_paths(port: int, up: ScriptedUpstream, tag: str) -> list[tuple[str, str, str]]:
    out = []
    for i, path in enumerate(PATHS):
        tid = f"{tag}-{i}"
        r = exchange(port, f"GET {path} HTTP/1.1\r\nhost: a\r\nx-test-id: {tid}\r\n\r\n"
                     .encode())
        assert r.status == 200, (path, r)
        seen = up.seen[tid][0]
        out.append((path, seen.path, seen.headers.get("x-envoy-original-path", "-")))
    return out


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_regex_rewrite_as_envoy(kind: str, upstream: ScriptedUpstream,
                                proxy_process: Callable[[str, str, int], Any]) -> None:
    port, admin = free_port(), free_port()
    proxy_process(kind, config(admin, port, upstream.port), admin)
    got = upstream_paths(port, upstream, kind)
    assert got == [
        ("/r/one/two", "/r/two/one", "/r/one/two"),
        ("/r/one/two?q=1&z=2", "/r/two/one?q=1&z=2", "/r/one/two?q=1&z=2"),
        ("/r/one", "/r/one", "/r/one"),
        ("/all/foo/boo", "/all/f00/b00", "/all/foo/boo"),
        ("/whole/foo/boooo", "/wh<o>le/f<oo>/b<oooo>", "/whole/foo/boooo"),
        ("/bs/c", "/bs/a\\b/c", "/bs/c"),
        ("/big/c", "/big/c", "/big/c"),
        ("/bad/c", "/bad/x", "/bad/c"),
        ("/empty/abxd", "-/-e-m-p-t-y-/-a-b-d-", "/empty/abxd"),
    ], got
