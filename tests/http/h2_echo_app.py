"""The ASGI app the HTTP/2 end-to-end tests run under hypercorn (HTTP/1.1, h2c prior knowledge,
h2c Upgrade and TLS on one port):

- ``/anything...``: JSON ``{http_version, method, path, query, scheme, headers, body_len, sha}``;
- ``/bytes?n=N``: N bytes of a repeating pattern, streamed in 64 KiB chunks;
- ``/trailers``: a body then the HTTP/2 trailer ``x-checksum`` (hypercorn sends trailers only
  over HTTP/2 and only when the request had ``te: trailers``);
- ``/status/NNN``: that status, empty body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
PATTERN = bytes(range(256)) * 256  # 64 KiB


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    body = await _body(receive)
    if path.startswith("/bytes"):
        n = int(dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
                .get("n", "0"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", b"%d" % n)]})
        sent = 0
        while sent < n:
            piece = PATTERN[:min(len(PATTERN), n - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < n})
        if n == 0:
            await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/status/"):
        await send({"type": "http.response.start", "status": int(path[8:11]), "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/trailers"):
        payload = b"trailer test body"
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        await send({"type": "http.response.trailers",
                    "headers": [(b"x-checksum", hashlib.sha1(payload).hexdigest().encode())]})
        return
    info = {
        "http_version": scope["http_version"], "method": scope["method"], "path": path,
        "query": scope["query_string"].decode(), "scheme": scope["scheme"],
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body_len": len(body), "sha": hashlib.sha256(body).hexdigest(),
    }
    out = json.dumps(info).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})
