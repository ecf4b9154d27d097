"""Small things through the real Envoy 1.39.3 and envoi with the same config and bytes:

* the local reply to a bad request (status line, ``content-length``, ``content-type``, body):
  Envoy answers a request without ``Host`` with an empty 400, other codec errors with a body;
* the ``content-length: 0`` Envoy adds upstream to a bodiless request of a method that may carry
  a body (``OPTIONS``, ``POST``, ``PROPFIND``...; not ``GET``, ``HEAD``, ``DELETE``, ``TRACE``);
* the reason phrase of every status an upstream can answer with (Envoy's own table: 418 and 451
  are ``Unknown``, 599 is ``Last Unassigned Server Error Code``)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import PROXIES, Request, ScriptedUpstream, exchange, response, start_config

CONFIG = HCM_LISTENER + """\
          stat_prefix: sm
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER
BAD = {
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "garbage": b"GARBAGE\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "te_gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "http2_version": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "http12": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "http30": b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
    "http09": b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
    "no_version": b"GET /\r\n\r\n",
    "bad_version": b"GET / HTTP/x.y\r\nHost: a\r\n\r\n",
    "many_headers": b"GET / HTTP/1.1\r\nHost: a\r\n"
                    + b"".join(b"x-h%d: v\r\n" % i for i in range(120)) + b"\r\n",
    "bad_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
           "MKCOL", "COPY", "LOCK"]
CODES = sorted({s.value for s in HTTPStatus if s.value >= 200} | {306, 499, 509, 599})


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    if req.path.startswith("/status/"):
        return [(response(int(req.path.rsplit("/", 1)[1]), b"", "Upstream Says"), 0.0)]
    return [(response(200, b"ok"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        n = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")), 0)
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


def shape(reply: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    keep = {k: v for k, v in hdrs.items() if k in (b"content-length", b"content-type",
                                                   b"connection")}
    return lines[0], keep, body


@pytest.mark.parametrize("kind", PROXIES)
def test_small_things_as_envoy(kind: str, upstream: ScriptedUpstream,
                               proxy_process: Callable[..., Any]) -> None:
    port = start_config(kind, CONFIG, proxy_process, up=upstream.port).port
    got: dict[str, Any] = {name: shape(raw(port, data)) for name, data in BAD.items()}
    for m in METHODS:
        tid = f"{kind}-{m}"
        exchange(port, f"{m} /m HTTP/1.1\r\nhost: a\r\nx-test-id: {tid}\r\n\r\n".encode(),
                 head_request=m == "HEAD")
        h = upstream.seen[tid][0].headers
        got[m] = (h.get("content-length"), h.get("transfer-encoding"))
    for code in CODES:
        got[code] = raw(port, f"GET /status/{code} HTTP/1.1\r\nhost: a\r\n\r\n".encode()
                        ).split(b"\r\n", 1)[0]
    assert got == EXPECTED


def _expected() -> dict[Any, Any]:
    """Envoy 1.39.3's answers (the envoy run checks them)."""
    close = {b"connection": b"close"}

    def body(status: bytes, text: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        return (b"HTTP/1.1 " + status, {b"content-length": b"%d" % len(text),
                                        b"content-type": b"text/plain", **close}, text)

    out: dict[Any, Any] = {
        "no_host": (b"HTTP/1.1 400 Bad Request", {b"content-length": b"0", **close}, b""),
        "garbage": body(b"400 Bad Request", b"Bad Request"),
        "bare_cr": body(b"400 Bad Request", b"Bad Request"),
        "te_gzip": body(b"501 Not Implemented", b"Not Implemented"),
        "cl_and_te": body(b"400 Bad Request", b"Bad Request"),
        "http10": body(b"426 Upgrade Required", b"Upgrade Required"),
        "http2_version": body(b"426 Upgrade Required", b"Upgrade Required"),
        "http12": body(b"426 Upgrade Required", b"Upgrade Required"),
        "http30": body(b"426 Upgrade Required", b"Upgrade Required"),
        "http09": body(b"426 Upgrade Required", b"Upgrade Required"),
        "no_version": body(b"426 Upgrade Required", b"Upgrade Required"),
        "bad_version": body(b"400 Bad Request", b"Bad Request"),
        "many_headers": body(b"431 Request Header Fields Too Large",
                             b"Request Header Fields Too Large"),
        "bad_cl": body(b"400 Bad Request", b"Bad Request"),
    }
    for m in METHODS:
        out[m] = (None if m in ("GET", "HEAD", "DELETE", "TRACE") else "0", None)
    envoy_phrase = {418: "Unknown", 451: "Unknown", 306: "Unknown", 499: "Unknown",
                    509: "Unknown", 599: "Last Unassigned Server Error Code"}
    for code in CODES:
        phrase = envoy_phrase.get(code) or HTTPStatus(code).phrase
        phrase = {413: "Payload Too Large", 414: "URI Too Long",
                  416: "Range Not Satisfiable"}.get(code, phrase)
        out[code] = b"HTTP/1.1 %d %s" % (code, phrase.encode())
    return out


EXPECTED = _expected()
