"""The live tap without a server: tap points are inactive until a session listens, events are
scoped by listener and filter and matched on fields, a slow reader's events are dropped and
counted within a byte bound, ``/tap``'s body honours ``limit`` and backpressure, and a worker
forked with a session open forwards instead of reading."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from envoi.admin.handlers import TapStream
from envoi.stats import Store
from envoi.tap import TapHub, parse_query
from envoi.workers import control


def hub() -> TapHub:
    return TapHub.create(Store().root)


def lines(session: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in session.take()]


def test_points_are_inactive_until_someone_listens() -> None:
    h = hub()
    a = h.point("ingress", "envoy.filters.network.mongo_proxy")
    b = h.point("other", "envoy.filters.network.mongo_proxy")
    assert h.point("ingress", "envoy.filters.network.mongo_proxy") is a  # one per pair
    assert not a.active and not b.active
    session = h.open(listener="ingress")
    assert a.active and not b.active
    late = h.point("ingress", "acme.sniffer")  # a point made while the session is open
    assert late.active
    session.close()
    assert not a.active and not late.active
    assert h.stats.sessions.value == 0


def test_events_match_on_fields_and_are_serialized_once() -> None:
    h = hub()
    p = h.point("l", "f")
    users = h.open(match={"collection": "users", "command": "f*"})
    everything = h.open()
    p.publish("mongo.command", 7, {"command": "find", "collection": "users", "n": 3})
    p.publish("mongo.command", 7, {"command": "insert", "collection": "users"})
    p.publish("mongo.command", 8, {"command": "find", "collection": "orders"})
    p.publish("other", None, {"flag": True})
    got = lines(users)
    assert [(e["command"], e["connection"]) for e in got] == [("find", 7)]
    assert {"ts", "listener", "filter", "type"} <= set(got[0])
    assert got[0]["listener"] == "l" and got[0]["filter"] == "f" and got[0]["n"] == 3
    assert [e["type"] for e in lines(everything)] == ["mongo.command"] * 3 + ["other"]
    assert h.stats.published.value == 4  # the first event went to two sessions, once encoded
    flag = h.open(match={"flag": "true"})
    p.publish("other", None, {"flag": True, "odd": object()})  # not JSON: written with str()
    (e,) = lines(flag)
    assert e["odd"].startswith("<object")


def test_a_slow_reader_loses_events_counted_within_its_bound() -> None:
    h = hub()
    p = h.point("l", "f")
    session = h.open(buffer_bytes=2048)
    for i in range(200):
        p.publish("e", 1, {"i": i, "pad": "x" * 40})
    assert h.stats.buffered_bytes.value <= 2048
    got = session.take()
    assert h.stats.buffered_bytes.value == 0
    dropped = h.stats.dropped.value
    assert dropped > 100 and len(got) == 200 - dropped + 1
    assert json.loads(got[-1]) == {"type": "tap.dropped", "count": dropped}
    assert [json.loads(x)["i"] for x in got[:-1]] == list(range(200 - dropped))  # in order


class FakeOut:
    def __init__(self) -> None:
        self.paused = False
        self.data = b""
        self.ended = False

    def write(self, data: bytes) -> None:
        self.data += data

    def end(self) -> None:
        self.ended = True


def test_tap_stream_limit_and_backpressure() -> None:
    async def scenario() -> None:
        h = hub()
        p = h.point("l", "f")
        session = h.open()
        stream = TapStream(session, limit=3)
        out = FakeOut()
        stream.start(out)
        out.paused = True
        p.publish("e", 1, {"i": 0})
        await asyncio.sleep(0)
        assert out.data == b""  # paused: the lines wait in the session
        out.paused = False
        stream.writable()
        p.publish("e", 1, {"i": 1})
        p.publish("e", 1, {"i": 2})
        p.publish("e", 1, {"i": 3})
        await asyncio.sleep(0)
        assert [json.loads(x)["i"] for x in out.data.splitlines()] == [0, 1, 2]
        assert out.ended and not p.active and h.stats.sessions.value == 0
        stream.stop()  # the connection goes later: nothing left to do

    asyncio.run(scenario())


def test_parse_query() -> None:
    assert parse_query({"listener": "a", "collection": "u*", "limit": "5"}) == (
        "a", "", {"collection": "u*"}, 5, 1 << 20)
    for bad in ({"limit": "x"}, {"limit": "0"}, {"buffer": "10"}, {"buffer": "y"}):
        with pytest.raises(ValueError):
            parse_query(bad)


def test_a_forked_worker_forwards_its_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker forked with a session open does: its copy of the session sends lines to
    the main process (batched once per loop iteration); refused batches count as dropped and
    are reported with the next batch that gets through."""
    frames: list[dict[str, Any]] = []
    accept = [True]

    def push(frame: dict[str, Any]) -> bool:
        if accept[0]:
            frames.append(frame)
        return accept[0]

    async def scenario() -> None:
        h = hub()
        p = h.point("l", "f")
        session = h.open()
        h._after_fork()  # as os.register_at_fork does in the child
        control.set_event_pusher(push)
        try:
            p.publish("e", 1, {"i": 1})
            p.publish("e", 1, {"i": 2})
            await asyncio.sleep(0)
            accept[0] = False
            p.publish("e", 1, {"i": 3})
            await asyncio.sleep(0)
            accept[0] = True
            p.publish("e", 1, {"i": 4})
            await asyncio.sleep(0)
        finally:
            control.set_event_pusher(None)
        assert [len(f["lines"]) for f in frames] == [2, 1]
        assert frames[0]["session"] == session.spec.id and frames[1]["dropped"] == 1
        main = hub()  # the main process's side
        main_session = main.open()
        for f in frames:
            main.deliver(main_session.spec.id, f["lines"], f["dropped"])
        got = lines(main_session)
        assert [e.get("i") for e in got] == [1, 2, 4, None]
        assert got[-1] == {"type": "tap.dropped", "count": 1}
        h.stop_forwarding(session.spec.id)
        assert not p.active

    asyncio.run(scenario())
