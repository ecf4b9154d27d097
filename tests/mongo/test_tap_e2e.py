"""The live tap end to end: pymongo -> envoi (mongo_proxy + tcp_proxy) -> SecantusDB while a
client streams ``GET /tap`` from the admin, in one process and with two workers. Every command
appears once, in order, with its collection and duration; a match on a field keeps only what
matches; a reader that never reads costs counted drops, within its buffer, and the traffic
goes on."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoi.testing import wait_for
from mongo_peers import free_port, secantusdb
from pymongo import MongoClient
from test_e2e import CONFIG

MONGO = "envoy.filters.network.mongo_proxy"


@pytest.fixture(scope="module")
def db() -> Iterator[int]:
    with secantusdb() as port:
        yield port


def start(envoi_process: Callable[..., Any], db: int, concurrency: int) -> tuple[Any, int]:
    admin, listen = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, listen=listen, db=db, log="/dev/null"),
                         admin, concurrency=concurrency)
    return proc, listen


def tap_stat(proc: Any, name: str) -> int:
    return int(proc.stats().get(f"envoi.tap.{name}", 0))


class TapReader(threading.Thread):
    """Streams ``/tap`` with http.client and keeps every JSON line."""

    def __init__(self, admin: int, query: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        self.conn.request("GET", "/tap?" + query)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("content-type") == "application/x-ndjson"
        self.events: list[dict[str, Any]] = []

    def run(self) -> None:
        for line in self.response:
            self.events.append(json.loads(line))


@pytest.mark.parametrize("concurrency", [1, 2])
def test_every_command_once_in_order_with_collection_and_duration(
        envoi_process: Callable[..., Any], db: int, concurrency: int) -> None:
    proc, listen = start(envoi_process, db, concurrency)
    n = 12
    reader = TapReader(proc.admin_port, f"filter={MONGO}&collection=users&limit={n + 1}")
    reader.start()
    wait_for(lambda: tap_stat(proc, "sessions") == 1, 10, what="the tap session")
    with MongoClient(f"mongodb://127.0.0.1:{listen}/?directConnection=true") as client:
        database = client[f"tap{concurrency}"]
        coll = database.users
        for i in range(n):
            coll.insert_one({"i": i})
            database.orders.insert_one({"i": i})  # another collection: not matched
        assert len(list(coll.find({}))) == n
    reader.join(30)
    assert not reader.is_alive(), f"the stream did not end: {reader.events}"
    events = reader.events
    assert [(e["command"], e["collection"]) for e in events] == \
        [("insert", "users")] * n + [("find", "users")]
    assert all(e["type"] == "mongo.command" and e["listener"] == "mongo_in"
               and e["filter"] == MONGO and e["database"] == f"tap{concurrency}"
               and e["duration_ms"] >= 0 and e["reply_docs"] >= 1 for e in events)
    # One connection carried them (pymongo reuses it): one (worker, connection), in order.
    assert len({(e.get("worker"), e["connection"]) for e in events}) == 1
    assert events[-1]["reply_docs"] == n
    assert len({e["request_id"] for e in events}) == n + 1  # each once
    if concurrency == 2:
        assert events[0]["worker"] in (0, 1)
    wait_for(lambda: tap_stat(proc, "sessions") == 0, 10, what="the session closed")


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_reader_that_never_reads(envoi_process: Callable[..., Any], db: int,
                                   concurrency: int) -> None:
    proc, listen = start(envoi_process, db, concurrency)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", proc.admin_port))
    stalled.sendall(b"GET /tap?buffer=4096 HTTP/1.1\r\nhost: admin\r\n\r\n")
    wait_for(lambda: tap_stat(proc, "sessions") == 1, 10, what="the tap session")
    with MongoClient(f"mongodb://127.0.0.1:{listen}/?directConnection=true",
                     serverSelectionTimeoutMS=10000, socketTimeoutMS=10000) as client:
        coll = client[f"stalled{concurrency}"].big
        # Until the kernel's and the transport's buffers are full and events are dropped.
        sent = 0
        while sent < 5000 and not (sent % 250 == 0 and sent and tap_stat(proc, "dropped")):
            coll.insert_one({"i": sent})
            sent += 1
        assert coll.count_documents({}) == sent
        # The traffic went through; what the reader could not take was dropped and counted,
        # and no more than its buffer waits for it.
        assert tap_stat(proc, "dropped") > 0
        assert tap_stat(proc, "buffered_bytes") <= 4096
        assert tap_stat(proc, "published") >= sent
    stalled.close()
    wait_for(lambda: tap_stat(proc, "sessions") == 0, 10, what="the session closed")
    assert tap_stat(proc, "buffered_bytes") == 0


def test_admin_tap_errors(envoi_process: Callable[..., Any], db: int) -> None:
    proc, _ = start(envoi_process, db, 1)
    conn = http.client.HTTPConnection("127.0.0.1", proc.admin_port, timeout=10)
    conn.request("GET", "/tap?listener=nope")
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 404 and f"listener=mongo_in filter={MONGO}" in body
    conn.request("POST", "/tap")
    r = conn.getresponse()
    assert r.status == 400 and "not implemented" in r.read().decode()
    conn.request("GET", "/tap?limit=zero")
    r = conn.getresponse()
    assert r.status == 400 and r.read() == b"limit: a number of events\n"
    conn.request("GET", "/tap/points")
    r = conn.getresponse()
    assert json.loads(r.read()) == {"tap_points": [{"listener": "mongo_in", "filter": MONGO}]}
