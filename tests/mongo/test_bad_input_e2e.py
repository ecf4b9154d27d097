"""Bad input through the real envoi process (mongo_proxy + tcp_proxy): HTTP bytes on the mongo
port, a length field that lies (too small, shorter than the body, longer than what comes), a
truncated frame then close, an oversized message, random bytes after a valid message.

Each case: ``decoding_error`` is counted once for its connection, every byte is passed unchanged
(checked against a raw echo upstream: what it received and what came back), envoi stays up, and
a pymongo client running at the same time, through the same filter config, in front of
SecantusDB (a wire-compatible server, not MongoDB), gets correct results and exact stats.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from legacy_peer import LegacyPeer
from mongo_frames import op_msg, op_query
from mongo_peers import secantusdb
from pymongo import MongoClient

MAX = 48 * 1024 * 1024  # maxMessageSizeBytes, the default

CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: to_db
    address: {{socket_address: {{address: 127.0.0.1, port_value: {db_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: db
          commands: [insert, find, getMore, update, delete]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db_tcp
          cluster: db
  - name: to_echo
    address: {{socket_address: {{address: 127.0.0.1, port_value: {echo_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: echo
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo_tcp
          cluster: echo
  clusters:
  - name: db
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: db
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {db}}}}}}}
  - name: echo
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
"""


def ping(request_id: int = 1) -> bytes:
    return op_msg({"ping": 1, "$db": "admin"}, request_id=request_id)


def with_length(frame: bytes, length: int) -> bytes:
    return struct.pack("<i", length) + frame[4:]


def random_tail() -> bytes:
    return random.Random(5).randbytes(4096)


# name -> bytes the client sends before closing its side.
CASES: dict[str, bytes] = {
    "http": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n",
    "length_below_header": struct.pack("<iiii", 8, 1, 0, 2004) + b"rest of it",
    # The length says 22: the frame ends inside the collection name (no NUL): unparseable.
    "length_shorter_than_body": with_length(op_query("shop.orders", {"a": 1}), 22),
    # The length says 100 more than is ever sent: the stream ends inside the frame.
    "length_longer_than_stream": (lambda f: with_length(f, len(f) + 100))(
        op_query("shop.orders", {"a": 1})),
    "truncated_then_close": ping()[:30],
    "oversized": struct.pack("<iiiiI", MAX + 1, 1, 0, 2013, 0) + b"\x00" * (MAX + 1 - 20),
    "random_after_valid": ping() + random_tail(),
}


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` (from a thread, so a large echo cannot deadlock), half-close, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        def send() -> None:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = bytearray()
        while chunk := s.recv(1 << 20):
            got += chunk
        t.join(timeout)
        return bytes(got)


@dataclass
class Stack:
    envoi: EnvoiProcess
    db_port: int
    echo_port: int
    echo: LegacyPeer

    def stat(self, name: str) -> int:
        return int(self.envoi.stats().get(name, 0))

    def alive(self) -> None:
        assert self.envoi.proc is not None and self.envoi.proc.poll() is None, self.envoi.log()
        assert self.envoi.get("/ready")[0] == 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with secantusdb() as db, LegacyPeer(echo=True) as echo:
        d = tmp_path_factory.mktemp("bad_input")
        admin, db_port, echo_port = free_port(), free_port(), free_port()
        cfg = CONFIG.format(admin=admin, db_port=db_port, echo_port=echo_port, db=db,
                            echo=echo.port)
        with EnvoiProcess.from_yaml(cfg, d, admin) as envoi:
            yield Stack(envoi, db_port, echo_port, echo)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_passes_unchanged_and_counts(stack: Stack, case: str) -> None:
    data = CASES[case]
    before = stack.stat("mongo.echo.decoding_error")
    conns_before = len(stack.echo.received)
    back = exchange(stack.echo_port, data)
    assert back == data, f"{case}: {len(back)} bytes came back of {len(data)}"
    received = stack.echo.received[conns_before]
    assert bytes(received) == data  # the upstream got exactly the client's bytes
    wait_for(lambda: stack.stat("mongo.echo.decoding_error") == before + 1, 10,
             what=f"decoding_error after {case}")
    stack.alive()


def test_http_is_counted_at_once_not_awaited(stack: Stack) -> None:
    """Envoy reads ``GET `` as a 542 MB frame and waits; envoi counts it with the connection
    still open."""
    before = stack.stat("mongo.echo.decoding_error")
    with socket.create_connection(("127.0.0.1", stack.echo_port), timeout=10) as s:
        s.sendall(CASES["http"])
        got = b""
        while len(got) < len(CASES["http"]):
            got += s.recv(65536)
        assert got == CASES["http"]
        wait_for(lambda: stack.stat("mongo.echo.decoding_error") == before + 1, 10,
                 what="decoding_error while the connection is open")
        # Sniffing is off for this connection, the traffic keeps flowing.
        s.sendall(ping())
        got = b""
        while len(got) < len(ping()):
            got += s.recv(65536)
        assert got == ping()
    assert stack.stat("mongo.echo.decoding_error") == before + 1


def bad_to_db(port: int, data: bytes, valid_first: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if valid_first:
            s.sendall(ping(7))
            reply = b""
            while len(reply) < 4 or len(reply) < struct.unpack_from("<i", reply)[0]:
                chunk = s.recv(65536)
                assert chunk
                reply += chunk
            assert struct.unpack_from("<iiii", reply)[2:] == (7, 2013)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)


def test_pymongo_unaffected_by_bad_neighbours(stack: Stack) -> None:
    """Bad connections to the same filter config (same stats) as a running pymongo client."""
    n = 200
    errors: list[BaseException] = []
    done = threading.Event()
    before = {k: stack.stat(f"mongo.db.{k}") for k in
              ("decoding_error", "cmd.insert.total", "cmd.find.total",
               "collection.items.query.total")}

    def workload() -> None:
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{stack.db_port}/?directConnection=true"
            "&serverSelectionTimeoutMS=10000")
        try:
            coll = client.bad_input.items
            for i in range(n):
                coll.insert_one({"_id": i, "v": f"value {i}"})
                assert coll.find_one({"_id": i}) == {"_id": i, "v": f"value {i}"}
            assert coll.count_documents({}) == n
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            client.close()
            done.set()

    t = threading.Thread(target=workload, daemon=True)
    t.start()
    bad: list[Callable[[], None]] = [
        lambda: bad_to_db(stack.db_port, CASES["http"], False),
        lambda: bad_to_db(stack.db_port, CASES["length_below_header"], False),
        lambda: bad_to_db(stack.db_port, CASES["truncated_then_close"], False),
        lambda: bad_to_db(stack.db_port, CASES["oversized"][:65536], False),
        lambda: bad_to_db(stack.db_port, random_tail(), True),
    ]
    for send_bad in bad:
        send_bad()
    assert done.wait(120), "pymongo workload did not finish"
    t.join(10)
    assert not errors, errors
    want = {"decoding_error": len(bad), "cmd.insert.total": n, "cmd.find.total": n,
            "collection.items.query.total": n}
    wait_for(lambda: all(stack.stat(f"mongo.db.{k}") - before[k] == v for k, v in want.items()),
             15, what=f"stats {want}")
    wait_for(lambda: stack.stat("mongo.db.op_query_active") == 0, 15, what="no active query")
    stack.alive()

