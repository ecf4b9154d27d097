"""Exchange shapes through a router-only config, end to end, against a scripted upstream: plain,
HEAD, 204, 256 KiB, chunked, 500, connection: close, an upstream 100-continue, resets before and
in the middle of the body, garbage, a route timeout, trailers, clients leaving mid-exchange (FIN
and RST), pipelining, keep-alive, and a pipelined request after an upstream answered with bytes
no request asked for. Each scenario runs on its own connection; the client's statuses and bytes,
the requests the upstream got, the counters and admin /clusters are checked.

(These were the scenarios of the express lane's differential test; the lane is gone and every
exchange takes the one request path, so they are checked once, as ordinary e2e tests.)"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import TcpUpstream, read_head

CONFIG = HCM_LISTENER + """\
          stat_prefix: exp
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/slow"}}
                route: {{cluster: up, timeout: 2s}}
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER

PLAIN_BODY = b"plain response body\n"
BIG_BODY = bytes(range(256)) * 1024  # 256 KiB
ERROR_BODY = b"upstream says no\n"


# -- the scripted upstream ------------------------------------------------------------------------


class ScriptedUpstream(TcpUpstream):
    """An HTTP/1.1 server that answers by path (query ignored) and records the raw bytes of
    every request it receives, by request target. One thread per connection; connections are
    kept alive unless the behaviour ends them."""

    def __init__(self) -> None:
        self.requests: dict[str, list[bytes]] = {}
        super().__init__()

    def received(self, target: str) -> int:
        with self.lock:
            return len(self.requests.get(target, []))

    def serve(self, c: socket.socket) -> None:
        buf = b""
        while (got := read_head(c, buf)) is not None:
            head, buf = got
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            with self.lock:
                self.requests.setdefault(target.decode(), []).append(head + b"\r\n\r\n")
            path = target.split(b"?", 1)[0].decode()
            if not self._answer(c, method, path):
                return

    def _answer(self, c: socket.socket, method: bytes, path: str) -> bool:
        """Send the scripted answer; False when the connection is to be closed."""
        common = b"server: scripted-upstream\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\nx-up: 1\r\n"
        if path == "/plain":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"content-type: text/plain\r\n"
                      b"content-length: %d\r\n\r\n" % len(PLAIN_BODY)
                      + (b"" if method == b"HEAD" else PLAIN_BODY))
        elif path == "/chunked":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"transfer-encoding: chunked\r\n\r\n")
            for piece in (b"first piece\n", b"second piece\n", b"third\n"):
                time.sleep(0.03)
                c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.03)
            c.sendall(b"0\r\n\r\n")
        elif path == "/big":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"content-type: application/octet-stream"
                      b"\r\ncontent-length: %d\r\n\r\n" % len(BIG_BODY))
            step = len(BIG_BODY) // 8
            for i in range(0, len(BIG_BODY), step):
                c.sendall(BIG_BODY[i:i + step])
                time.sleep(0.005)
        elif path == "/204":
            c.sendall(b"HTTP/1.1 204 No Content\r\n" + common + b"\r\n")
        elif path == "/continue":
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.03)
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common
                      + b"content-length: %d\r\n\r\n" % len(PLAIN_BODY) + PLAIN_BODY)
        elif path == "/reset-before":
            return False
        elif path == "/reset-mid":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"content-length: 1000\r\n\r\n")
            time.sleep(0.03)
            c.sendall(b"x" * 100)
            time.sleep(0.03)
            return False
        elif path == "/garbage":
            c.sendall(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            c.settimeout(3)
            while c.recv(65536):  # until the proxy gives up on the connection
                pass
            return False
        elif path == "/slow":
            # Well after the route's 2 s timeout, even when a loaded box fires it late.
            time.sleep(6.0)
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common
                      + b"content-length: %d\r\n\r\n" % len(PLAIN_BODY) + PLAIN_BODY)
        elif path == "/500":
            c.sendall(b"HTTP/1.1 500 Internal Server Error\r\n" + common
                      + b"content-length: %d\r\n\r\n" % len(ERROR_BODY) + ERROR_BODY)
        elif path == "/trailers":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"transfer-encoding: chunked\r\n"
                      b"trailer: x-checksum\r\n\r\n")
            time.sleep(0.03)
            c.sendall(b"5\r\nhello\r\n")
            time.sleep(0.03)
            c.sendall(b"0\r\nx-checksum: 1234\r\n\r\n")
        elif path == "/extra":
            # A whole response, then (in the same send) bytes no request asked for: the proxy's
            # codec reports them after the response's end, in the same read.
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"content-length: %d\r\n\r\n"
                      % len(PLAIN_BODY) + PLAIN_BODY + b"UNASKED FOR\r\n\r\n")
            return False
        elif path == "/close":
            c.sendall(b"HTTP/1.1 200 OK\r\n" + common + b"connection: close\r\n"
                      b"content-length: %d\r\n\r\n" % len(PLAIN_BODY) + PLAIN_BODY)
            return False
        else:
            c.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        return True


# -- the client ---------------------------------------------------------------------------------


class Client:
    """A raw downstream connection that reads whole HTTP/1.1 responses (interim ones included)
    and keeps every byte it received."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(15)
        self.buf = b""
        self.raw = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.raw += data
        return True

    def _take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, head_request: bool = False) -> int:
        """Read one final response (after any 1xx); its status, or 0 if the connection ended
        first."""
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    return 0
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            hdrs = {k.strip().lower(): v.strip()
                    for k, _, v in (ln.partition(b":") for ln in lines[1:])}
            if 100 <= status < 200:
                continue
            if head_request or status in (204, 304):
                return status
            if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
                while True:
                    size_line = self._line()
                    if size_line is None:
                        return 0
                    size = int(size_line.split(b";")[0], 16)
                    if size == 0:
                        while (trailer := self._line()) != b"":
                            if trailer is None:
                                return 0
                        return status
                    if self._take(size + 2) is None:
                        return 0
            if b"content-length" in hdrs:
                return status if self._take(int(hdrs[b"content-length"])) is not None else 0
            while self._fill():
                pass
            return status

    def finish(self) -> bytes:
        """Half-close, read until the proxy closes, and return all bytes received."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        while self._fill():
            pass
        self.sock.close()
        return self.raw


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One envoi process's results."""

    responses: dict[str, bytes] = field(default_factory=dict)  # scenario -> bytes received
    statuses: dict[str, list[int]] = field(default_factory=dict)
    upstream: dict[str, list[bytes]] = field(default_factory=dict)  # target -> requests
    stats: dict[str, Any] = field(default_factory=dict)
    clusters: str = ""  # admin /clusters: the per-host counters


def get(target: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nhost: express.test\r\nuser-agent: raw\r\n\r\n".encode()


def one(target: str, method: str = "GET") -> Step:
    def go(c: Client, up: ScriptedUpstream) -> list[int]:
        c.send(get(target, method))
        return [c.response(head_request=method == "HEAD")]
    return go


def keep_alive(c: Client, up: ScriptedUpstream) -> list[int]:
    out = []
    for i in (1, 2, 3):
        c.send(get(f"/plain?s=ka{i}"))
        out.append(c.response())
    return out


def pipelined(first: str, second: str) -> Step:
    def go(c: Client, up: ScriptedUpstream) -> list[int]:
        c.send(get(first) + get(second))
        return [c.response(), c.response()]
    return go


def abandon(target: str, rst: bool) -> Step:
    """GET /slow..., and close (FIN, or RST with ``rst``) once the upstream has the request:
    before the route's 2 s timeout, with the exchange in flight upstream."""
    def go(c: Client, up: ScriptedUpstream) -> list[int]:
        c.send(get(target))
        # Close as soon as the upstream has it (well before the 2 s route timeout).
        wait_for(lambda: up.received(target), 20, interval=0.002, what=f"upstream got {target}")
        if rst:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()
        return []
    return go


Step = Callable[[Client, ScriptedUpstream], list[int]]


class Scenario(NamedTuple):
    how: Step  # what the client does on its fresh connection; the statuses it read
    statuses: list[int]  # expected (0: the connection ended before the response did)
    taken: list[str]  # request targets (each reaches the upstream once)


SCENARIOS: dict[str, Scenario] = {
    "plain": Scenario(one("/plain?s=plain"), [200], ["/plain?s=plain"]),
    "head": Scenario(one("/plain?s=head", "HEAD"), [200], ["/plain?s=head"]),
    "204": Scenario(one("/204"), [204], ["/204"]),
    "big": Scenario(one("/big"), [200], ["/big"]),
    "chunked": Scenario(one("/chunked"), [200], ["/chunked"]),
    "500": Scenario(one("/500"), [500], ["/500"]),
    "close": Scenario(one("/close"), [200], ["/close"]),
    "continue": Scenario(one("/continue"), [200], ["/continue"]),
    "reset-before": Scenario(one("/reset-before"), [503], ["/reset-before"]),
    # The head and 100 body bytes reach the client, then the proxy resets the stream: the
    # connection ends before the response does.
    "reset-mid": Scenario(one("/reset-mid"), [0], ["/reset-mid"]),
    "garbage": Scenario(one("/garbage"), [503], ["/garbage"]),
    "slow": Scenario(one("/slow"), [504], ["/slow"]),
    # The upstream codec drops HTTP/1 response trailers (Envoy's default; envoi's pool codec is
    # never told otherwise), so no Trailers event reaches the router: the last chunk ends the
    # exchange as for /chunked, and no trailer reaches the client.
    "trailers": Scenario(one("/trailers"), [200], ["/trailers"]),
    "abandoned": Scenario(abandon("/slow?s=abandoned", rst=False), [], ["/slow?s=abandoned"]),
    # The same with a reset: the connection event, not the codec's end of input, tells the HCM.
    "abandoned-rst": Scenario(abandon("/slow?s=abandoned-rst", rst=True), [],
                              ["/slow?s=abandoned-rst"]),
    "pipelined": Scenario(pipelined("/plain?s=pipe1", "/plain?s=pipe2"), [200, 200],
                          ["/plain?s=pipe1", "/plain?s=pipe2"]),
    "keep-alive": Scenario(keep_alive, [200, 200, 200],
                           ["/plain?s=ka1", "/plain?s=ka2", "/plain?s=ka3"]),
}

# /extra answers a whole 200 and, in the same send, bytes no request asked for: the proxy's
# upstream codec parses the response and then reports a protocol error, all in one read, and
# the connection is not reused. The second, pipelined request is a new exchange (on a new
# upstream connection) that has nothing to do with that error.
SPOILED = {
    "pipelined-after-extra": Scenario(pipelined("/extra", "/plain?s=after-extra"), [200, 200],
                                      ["/extra", "/plain?s=after-extra"]),
}

N_REQUESTS = sum(len(s.taken) for s in SCENARIOS.values())


def settled(proc: EnvoiProcess) -> bool:
    st = proc.stats()
    return (st.get("http.exp.downstream_rq_active") == 0
            and st.get("cluster.up.upstream_rq_active") == 0)


def run_envoi(directory: Path, scenarios: dict[str, Scenario]) -> Run:
    """Start a scripted upstream and envoi, play the scenarios one after the other, each on its
    own connection, and collect what happened."""
    up = ScriptedUpstream()
    port, admin = free_port(), free_port()
    proc = EnvoiProcess.from_yaml(CONFIG.format(admin=admin, port=port, up=up.port), directory,
                                  admin)
    run = Run()
    try:
        proc.start()
        for name, sc in scenarios.items():
            c = Client(port)
            run.statuses[name] = sc.how(c, up)
            wait_for(lambda: settled(proc), 10, what=f"{name}: no request active")
            run.responses[name] = c.raw if c.sock.fileno() < 0 else c.finish()
            # Every downstream connection is closed before the next scenario starts.
            wait_for(lambda: proc.stats().get("http.exp.downstream_cx_active") == 0, 10,
                     what=f"{name}: downstream connection closed")
        wait_for(lambda: settled(proc), 10, what="no request active")
        # The listener's stats are named after its address (a free port).
        run.stats = {k.replace(f"listener.127.0.0.1_{port}.", "listener.<http_in>."): v
                     for k, v in proc.stats().items()}
        status, clusters = proc.get("/clusters")
        assert status == 200, clusters
        run.clusters = clusters.replace(f"127.0.0.1:{up.port}::", "<upstream>::")
        with up.lock:
            run.upstream = {k: list(v) for k, v in up.requests.items()}
    finally:
        proc.stop()
        up.close()
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_envoi(tmp_path_factory.mktemp("shapes"), SCENARIOS)


# -- the checks ---------------------------------------------------------------------------------


def expected_statuses(run: Run, scenarios: dict[str, Scenario]) -> None:
    want = {name: sc.statuses for name, sc in scenarios.items()}
    assert run.statuses == want


def upstream_requests(run: Run, scenarios: dict[str, Scenario]) -> None:
    assert set(run.upstream) == {t for sc in scenarios.values() for t in sc.taken}
    assert all(len(rs) == 1 for rs in run.upstream.values())


def counters(run: Run, scenarios: dict[str, Scenario]) -> None:
    n = sum(len(sc.taken) for sc in scenarios.values())
    assert run.stats["http.exp.downstream_rq_total"] == n
    assert run.stats["listener.<http_in>.downstream_cx_total"] == len(scenarios)
    assert f"up::<upstream>::rq_total::{n}" in run.clusters.splitlines()


def test_statuses(run: Run) -> None:
    expected_statuses(run, SCENARIOS)
    assert run.responses["plain"].endswith(PLAIN_BODY)
    assert run.responses["big"].endswith(BIG_BODY)
    assert b"x-up: 1\r\n" in run.responses["head"]
    assert run.responses["head"].endswith(b"\r\n\r\n")
    assert run.responses["reset-mid"].endswith(b"\r\n\r\n" + b"x" * 100)
    assert run.responses["abandoned"] == run.responses["abandoned-rst"] == b""


def test_upstream_got_each_request_once(run: Run) -> None:
    upstream_requests(run, SCENARIOS)


def test_counters(run: Run) -> None:
    counters(run, SCENARIOS)


def test_pipelined_request_after_unasked_for_upstream_bytes(tmp_path: Path) -> None:
    """When a response ends, the next, pipelined, request starts; the rest of the upstream read
    that ended the response (here the protocol error of /extra's unasked-for bytes) must not be
    taken for the new exchange's: the finished router ignores it, and the second request gets
    its 200 from a new connection."""
    run = run_envoi(tmp_path, SPOILED)
    expected_statuses(run, SPOILED)
    upstream_requests(run, SPOILED)
    counters(run, SPOILED)
