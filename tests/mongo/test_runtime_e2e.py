"""mongo_proxy's runtime keys end to end: envoi as a real process with a ``layered_runtime``
(a static layer that turns the proxy off, then an admin layer), raw legacy-opcode traffic to the
scripted peer (legacy_peer.py), keys flipped with ``POST /runtime_modify`` between phases.

The same config and the same phases run through the real Envoy 1.39.3 (the oracle) and through
envoi; after every phase each ``mongo.rt.*`` counter and gauge must be equal, and so must the
whole access log (``time`` removed). A last test flips keys on ``--concurrency 2``: the admin's
broadcast must reach every worker.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from envoy_oracle import EnvoyProcess, http_text
from legacy_peer import LegacyPeer
from mongo_frames import op_get_more, op_insert, op_kill_cursors, op_query
from test_envoy_oracle import read_frame, read_log, read_stats

CALLSITE = '{"callingFunction": "listOpen"}'


def config(admin: int, port: int, peer: int, log: Path, static: str) -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
layered_runtime:
  layers:
  - name: static_layer_0
    static_layer: {static}
  - name: admin_layer_0
    admin_layer: {{}}
static_resources:
  listeners:
  - name: rt
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: rt
          access_log: {log}
          delay:
            fixed_delay: 0.001s
            percentage: {{numerator: 0, denominator: HUNDRED}}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: rt_tcp
          cluster: peer
  clusters:
  - name: peer
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: peer
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {peer}}}}}}}
"""


class Client:
    """One client connection sending legacy frames; ``ask`` waits for the reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def ask(self, coll: str, query: dict[str, Any], n_return: int = 0) -> bytes:
        rid = self._id()
        self.sock.sendall(op_query(coll, query, n_return=n_return, request_id=rid))
        reply = read_frame(self.sock)
        assert struct.unpack_from("<iii", reply)[2] == rid
        return reply

    def send(self, data: Callable[[int], bytes]) -> None:
        self.sock.sendall(data(self._id()))

    def close(self) -> None:
        self.sock.close()


def session(port: int) -> None:
    """10 access-log lines: 6 requests (3 queries, a get_more, an insert, a kill_cursors), 4
    replies. The last query's reply proves the insert and kill_cursors went through."""
    c = Client(port)
    c.ask("admin.$cmd", {"isMaster": 1}, n_return=-1)
    c.ask("shop.orders", {"$query": {"status": "open"}, "$comment": CALLSITE})
    rid = c._id()
    c.sock.sendall(op_get_more("shop.orders", 12345, n_return=10, request_id=rid))
    read_frame(c.sock)
    c.send(lambda rid: op_insert("shop.orders", [{"_id": 1}], request_id=rid))
    c.send(lambda rid: op_kill_cursors([12345], request_id=rid))
    c.ask("shop.orders", {"last": True})
    c.close()


Snapshot = dict[str, int]


def scenario(port: int, admin: int, log: Path) -> tuple[list[Snapshot], list[dict[str, Any]]]:
    """The phases; after each, wait until ``op_query`` and the access log reach what the phase
    should give, then keep every ``mongo.rt.*`` counter and gauge."""
    snaps: list[Snapshot] = []

    def post(query: str) -> None:
        assert http_text(admin, f"/runtime_modify?{query}", "POST") == "OK\n"

    def settle(what: str, op_query: int, lines: int, **more: int) -> None:
        def ready() -> Snapshot | None:
            stats, _ = read_stats(admin)
            mine = {k[len("mongo.rt."):]: v for k, v in stats.items() if k.startswith("mongo.rt.")}
            want = {"op_query": op_query, **more}
            if any(mine.get(k, 0) != v for k, v in want.items()):
                return None
            return mine if len(read_log(log)) == lines else None

        snaps.append(wait_for(ready, 30, interval=0.05, what=what))

    # A: the static layer has mongo.proxy_enabled: 0 -> nothing decoded, counted or logged.
    session(port)
    settle("A: proxy disabled by the static layer", 0, 0)
    # B: the admin layer turns the proxy on and logging off -> counted, not logged.
    post("mongo.proxy_enabled=100&mongo.logging_enabled=0")
    session(port)
    settle("B: logging disabled", 3, 0, op_reply=4)
    # C: logging_enabled override removed (default 100) -> counted and logged.
    post("mongo.logging_enabled=")
    session(port)
    settle("C: everything on", 6, 10, op_reply=8)
    # D: proxy_enabled flipped on a live connection: read on every read/write.
    c = Client(port)
    c.ask("admin.$cmd", {"isMaster": 1}, n_return=-1)  # counted, logged
    post("mongo.proxy_enabled=0")
    c.ask("shop.orders", {"_id": 1}, n_return=1)  # not seen
    post("mongo.proxy_enabled=100")
    c.send(lambda rid: op_query("shop.silent", {"wait": True}, request_id=rid))  # no reply
    settle("D: the silent query is active", 8, 13, op_query_active=1)
    c.close()
    # Closed with a query in flight: counted although the runtime flipped meanwhile (Envoy's
    # onEvent is not gated); local or remote as Envoy names it (compared below).
    settle("D: closed with a query in flight", 8, 13, op_query_active=0)
    # E: connection_logging_enabled is read when the connection's filter is made.
    post("mongo.connection_logging_enabled=0")
    quiet = Client(port)
    quiet.ask("shop.quiet", {"n": 1})  # the filter exists now, made with logging off
    post("mongo.connection_logging_enabled=100")
    quiet.ask("shop.quiet", {"n": 2})  # still not logged
    loud = Client(port)
    loud.ask("shop.loud", {"n": 3})
    quiet.close()
    loud.close()
    settle("E: connection logging", 11, 15)
    # F: the fault delay keys: configured at 0 %; the runtime makes it 100 % of 60 ms.
    post("mongo.fault.fixed_delay.percent=100&mongo.fault.fixed_delay.duration_ms=60")
    c = Client(port)
    start = time.monotonic()
    for i in range(3):
        c.ask("shop.slow", {"i": i})
    assert time.monotonic() - start >= 0.17
    post("mongo.fault.fixed_delay.percent=")  # back to the config's 0 %
    c.ask("shop.slow", {"i": 3})
    c.close()
    settle("F: delays", 15, 23, delays_injected=3)
    return snaps, read_log(log)


@pytest.fixture(scope="module")
def peer() -> Any:
    with LegacyPeer() as p:
        yield p


STATIC_OFF = "{mongo.proxy_enabled: 0}"


def test_runtime_keys_match_envoy(peer: LegacyPeer,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("envoy")
    admin, port = free_port(), free_port()
    cfg = d / "envoy.yaml"
    cfg.write_text(config(admin, port, peer.port, d / "access.log", STATIC_OFF))
    envoy = EnvoyProcess(cfg, admin, d / "envoy.out").start()
    try:
        theirs, their_log = scenario(port, admin, d / "access.log")
    finally:
        envoy.stop()

    d = tmp_path_factory.mktemp("envoi")
    admin, port = free_port(), free_port()
    envoi = EnvoiProcess.from_yaml(config(admin, port, peer.port, d / "access.log", STATIC_OFF),
                                   d, admin)
    with envoi:
        ours, our_log = scenario(port, admin, d / "access.log")

    for phase, (mine, envoys) in enumerate(zip(ours, theirs, strict=True)):
        assert mine == envoys, (phase, {k: (mine.get(k), envoys.get(k))
                                        for k in set(mine) | set(envoys)
                                        if mine.get(k) != envoys.get(k)})
    assert our_log == their_log
    # What the phases claim really happened (guards against both sides counting nothing).
    assert ours[0] and not any(ours[0].values())  # A: Envoy's names exist, all zero
    assert ours[4]["cx_destroy_local_with_active_rq"] \
        + ours[4]["cx_destroy_remote_with_active_rq"] == 1  # D
    assert [e["message"]["collection"] for e in our_log
            if e["message"]["opcode"] == "OP_QUERY"][-5:] == \
        ["shop.loud", "shop.slow", "shop.slow", "shop.slow", "shop.slow"]
    assert not any(e["message"].get("collection") == "shop.quiet" for e in our_log)


def test_runtime_modify_reaches_every_worker(peer: LegacyPeer, tmp_path: Path) -> None:
    """--concurrency 2: the admin broadcasts /runtime_modify; once it has landed, no worker
    decodes, and after the flip back every connection is counted again."""
    admin, port = free_port(), free_port()
    envoi = EnvoiProcess.from_yaml(
        config(admin, port, peer.port, tmp_path / "access.log", "{}"), tmp_path, admin,
        args=["--concurrency", "2"])
    with envoi:
        def op_query() -> int:
            return int(envoi.stats().get("mongo.rt.op_query", 0))

        def round_counts(n: int = 8) -> int:
            before = op_query()
            for _ in range(n):
                c = Client(port)
                c.ask("shop.orders", {"_id": 1}, n_return=1)
                c.close()
            return op_query() - before

        assert round_counts() == 8
        assert envoi.post("/runtime_modify?mongo.proxy_enabled=0") == (200, "OK\n")
        wait_for(lambda: round_counts() == 0, 20, what="no worker decoding")
        assert round_counts() == 0
        assert envoi.post("/runtime_modify?mongo.proxy_enabled=") == (200, "OK\n")
        wait_for(lambda: round_counts() == 8, 20, what="every worker decoding again")
