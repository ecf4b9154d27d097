"""The e2e test kit: raw upstreams a test scripts byte by byte, a raw client, and the proxy
under test started on a config's free ports.

* :class:`TcpUpstream`: a loopback server on a free port, one thread per connection running
  ``serve(conn)``, ``close()`` ends them all; every raw upstream of the e2e tests builds on it
  (a test whose upstream needs its own shape - silence, a half-sent body, an upgrade - writes
  only ``serve``). :func:`read_head` and :func:`parse_head` read and split one request head.
* :class:`ScriptedUpstream`: the general one. It reads each request (head, and a
  ``content-length`` or chunked body), records it, and asks the test's ``answer(request,
  attempt)`` for the writes to make: a list of ``(bytes, delay)`` pairs, each sent with its own
  ``sendall`` after sleeping ``delay`` seconds. One write holding a head and its body is what a
  real server's short answer looks like on the wire (one read at the proxy).
* :func:`exchange` / :func:`read_reply`: one request on a new connection, one parsed reply.
* :func:`send_then_read` / :func:`read_until_close`: raw bytes in (paced if need be), then
  everything until the proxy closes or a wait ends, with when the first and last bytes came
  (timeouts, bad input, upgrades).
* :func:`start_config`: a config template on free ports under Envoy or envoi (``PROXIES``, with
  the ``proxy_process`` fixture), as a :class:`Proxy` (``port``, ``stats()``, ``wait_stat``).
  :func:`distinct_ports` for a config with many listeners.

Config pieces (the HCM listener, the router-only filter list, the cluster ``up``) are in
``http_peers``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoi.testing import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated name keeps the last value
    body: bytes
    raw_head: bytes = b""
    received: float = field(default_factory=time.monotonic)


Answer = Callable[[Request, int], list[tuple[bytes, float]]]


class TcpUpstream:
    """A TCP server on ``127.0.0.1`` and a free ``port``; each accepted connection runs
    ``serve(conn)`` on its own daemon thread and is closed when ``serve`` returns (``OSError``
    there ends the connection quietly). ``connections`` counts the accepted ones; ``stop`` is set
    by ``close()``, which also closes the listening socket and every connection still open, so a
    ``serve`` that waits on ``stop`` (not on a fixed sleep) ends with the test."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def serve(self, c: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.close()

    def __enter__(self) -> TcpUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c, contextlib.suppress(OSError):
            self.serve(c)


def read_head(c: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes] | None:
    """Read from ``c`` (after ``buf``) up to the blank line that ends a head: (the head without
    its ``\\r\\n\\r\\n``, the bytes after it); None when the peer closes first."""
    while b"\r\n\r\n" not in buf:
        chunk = c.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, target, headers with lower-case names; a repeated name keeps the last value)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    return method, target, {k.strip().lower(): v.strip()
                            for k, _, v in (ln.partition(":") for ln in lines[1:])}


class ScriptedUpstream(TcpUpstream):
    """``answer(request, attempt)``: ``attempt`` counts the requests seen with the same
    ``x-test-id`` (1 for the first). ``seen[test_id]`` lists the requests in arrival order."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: dict[str, list[Request]] = {}
        super().__init__()

    def serve(self, c: socket.socket) -> None:
        buf = b""
        while True:
            got = read_head(c, buf)
            if got is None:
                return
            head, buf = got
            method, path, hdrs = parse_head(head)
            if hdrs.get("transfer-encoding", "").lower() == "chunked":
                chunked = _read_chunked(c, buf)
                if chunked is None:
                    return
                body, buf = chunked
            else:
                n = int(hdrs.get("content-length") or 0)
                while len(buf) < n:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:n], buf[n:]
            req = Request(method, path, hdrs, body, head)
            tid = hdrs.get("x-test-id", "")
            with self.lock:
                self.seen.setdefault(tid, []).append(req)
                attempt = len(self.seen[tid])
            for data, delay in self.answer(req, attempt):
                if delay:
                    time.sleep(delay)
                c.sendall(data)


def _read_chunked(c: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """A chunked body from ``buf`` and ``c``: (body, the bytes after it), None if closed."""
    body = b""

    def line() -> bytes | None:
        nonlocal buf
        while b"\r\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                return None
            buf += chunk
        out, _, buf = buf.partition(b"\r\n")
        return out

    while True:
        size_line = line()
        if size_line is None:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while True:  # trailers, up to the blank line
                t = line()
                if t is None:
                    return None
                if not t:
                    return body, buf
        while len(buf) < size + 2:
            chunk = c.recv(65536)
            if not chunk:
                return None
            buf += chunk
        body += buf[:size]
        buf = buf[size + 2:]


def response(status: int, body: bytes = b"", reason: str = "", *,
             extra: str = "") -> bytes:
    """One HTTP/1.1 response with a content-length, as bytes."""
    reason = reason or {200: "OK", 503: "Service Unavailable", 500: "Internal Server Error",
                        502: "Bad Gateway", 404: "Not Found"}.get(status, "Whatever")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool  # the proxy closed the connection after this reply

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def read_reply(s: socket.socket, timeout: float = 15.0, head_request: bool = False) -> Reply:
    """Read one response (content-length or chunked framing, or close-delimited) from ``s``;
    a proxy that never answers fails the test with ``TimeoutError`` after ``timeout``."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip())
               for k, _, v in (ln.partition(":") for ln in lines[1:])]
    hd = dict(headers)
    closed = False
    if head_request or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in hd:
        n = int(hd["content-length"])
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            rest += chunk
        body = rest[:n]
    elif hd.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                break
    else:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, closed = rest, True
    if hd.get("connection", "").lower() == "close":
        closed = True
    return Reply(status, headers, body, closed)


def exchange(port: int, request: bytes, timeout: float = 15.0,
             head_request: bool = False) -> Reply:
    """Send one request on a new connection and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return read_reply(s, timeout, head_request)


@dataclass
class Received:
    """What a raw client read: the bytes, whether the peer closed (EOF or a reset), and the
    seconds from ``start`` to the first byte (0.0: none) and to the last byte or the close."""

    data: bytes
    closed: bool
    first: float
    last: float


def read_until_close(s: socket.socket, wait: float, *, until: bytes = b"",
                     start: float | None = None, poll: float = 0.05) -> Received:
    """Read until the peer closes, ``until`` is seen, or ``wait`` seconds pass; a test that
    times the proxy reads with a short ``poll`` so the times are close to when bytes came."""
    t0 = time.monotonic() if start is None else start
    s.settimeout(poll)
    out, closed, first, last = b"", False, 0.0, 0.0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not (until and until in out):
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # a reset
            chunk = b""
        last = time.monotonic() - t0
        if not chunk:
            closed = True
            break
        first = first or last
        out += chunk
    return Received(out, closed, first, last)


def send_then_read(port: int, *steps: bytes | tuple[bytes, float], wait: float = 5.0,
                   until: bytes = b"", poll: float = 0.05) -> Received:
    """On a new connection send each step (bytes, or ``(bytes, pause)``: the client's own
    pacing, which is what a slow-client test tests), stop sending once the peer refuses more,
    then :func:`read_until_close`. Times count from before the connect."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for step in steps:
            data, pause = step if isinstance(step, tuple) else (step, 0.0)
            try:
                s.sendall(data)
            except OSError:
                break
            if pause:
                time.sleep(pause)
        return read_until_close(s, wait, until=until, start=t0, poll=poll)


# The proxies an oracle test runs: the real Envoy and envoi.
PROXIES = ["envoy", "envoi"]


def distinct_ports(n: int) -> list[int]:
    """``n`` free ports, no two the same (``free_port()`` may hand one out twice)."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


@dataclass
class Proxy:
    """Envoy or envoi (``kind``) running a test's config: its listener ``port``, its ``admin``
    port and its ``process`` (``stats()``, ``get(path)``, an envoi's ``signal()``...)."""

    kind: str
    port: int
    admin: int
    process: Any

    ports: dict[str, int] = field(default_factory=dict)  # start_config's ``more_ports``

    def stats(self) -> dict[str, Any]:
        return dict(self.process.stats())

    def wait_stat(self, name: str, want: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until stat ``name`` is ``want`` (a stat not there yet counts as 0) and return
        the stats that showed it; fail with the last value after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (st := self.stats()).get(name, 0) != want:
            assert time.monotonic() < deadline, (self.kind, name, st.get(name))
            time.sleep(0.02)
        return st


def start_config(kind: str, template: str, proxy_process: Callable[..., Any],
                 more_ports: tuple[str, ...] = (), **fields: Any) -> Proxy:
    """``template.format(port=..., admin=..., **fields)`` on free ports, started under ``kind``
    with the ``proxy_process`` fixture (which stops it after the test). Each name in
    ``more_ports`` is one more free port, a format field and an entry of ``Proxy.ports``."""
    port, admin, *more = distinct_ports(2 + len(more_ports))
    ports = dict(zip(more_ports, more, strict=True))
    text = template.format(port=port, admin=admin, **ports, **fields)
    return Proxy(kind, port, admin, proxy_process(kind, text, admin), ports)
