"""mongo_proxy's runtime keys, driving the filter with a real ``envoi.runtime.Runtime`` (a static
layer and an admin layer) on a fake server: which decision each key gates, and when it is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from envoi.network.filter import ConnectionCloseType, ConnectionEvent, FilterStatus
from envoi.stats import Store
from envoi_mongo.config import FaultDelay, MongoProxyConfig
from envoi_mongo.proxy import MongoProxyFilter, MongoProxyShared
from mongo_frames import op_insert, op_msg, op_query, op_reply
from mongo_harness import FakeCallbacks, Proxy, make_runtime


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def lines(path: Path) -> list[str]:
    return [json.loads(ln)["message"]["opcode"] for ln in path.read_text().splitlines()] \
        if path.exists() else []


# -- mongo.proxy_enabled -------------------------------------------------------------------------


def test_proxy_enabled_is_read_on_every_read_and_write() -> None:
    p = Proxy("m")
    c = p.connect()
    assert c.client(op_query("a.b", {"x": 1}, request_id=1)) is FilterStatus.CONTINUE
    assert p.stat("op_query") == 1
    p.server.runtime_modify(proxy_enabled=0)  # on a live connection
    assert c.server(op_reply([{}], response_to=1, request_id=2)) is FilterStatus.CONTINUE
    assert c.client(op_query("a.b", {"x": 1}, request_id=3)) is FilterStatus.CONTINUE
    assert c.client(b"not mongo at all, not a decoding error") is FilterStatus.CONTINUE
    assert p.nonzero() == {"op_query": 1, "op_query_scatter_get": 1, "op_query_no_max_time": 1,
                           "collection.b.query.total": 1, "collection.b.query.scatter_get": 1,
                           "op_query_active": 1}
    p.server.runtime_modify(proxy_enabled="")  # override removed: the default, 100
    c.client(op_query("a.b", {"_id": 5}, request_id=4))
    c.server(op_reply([{}], response_to=4, request_id=5))
    assert p.stat("op_query") == 2 and p.stat("op_reply") == 1 and p.stat("decoding_error") == 0
    # Request 1's reply was not seen: still active, and counted as such at close (Envoy's
    # onEvent is not gated by the runtime).
    assert p.stat("op_query_active") == 1
    c.close(ConnectionEvent.REMOTE_CLOSE)
    assert p.stat("cx_destroy_remote_with_active_rq") == 1


def test_proxy_disabled_drops_the_partial_frame() -> None:
    """Envoy drains its buffer when the key is off: half a frame buffered before the flip is
    lost with the rest of it, and decoding starts afresh on the next frame."""
    p = Proxy("m")
    c = p.connect()
    q = op_query("a.b", {"_id": 1}, request_id=1)
    c.client(q[:10])
    p.server.runtime_modify(proxy_enabled=0)
    c.client(q[10:])
    p.server.runtime_modify(proxy_enabled=100)
    c.client(op_query("a.c", {"_id": 1}, request_id=2))
    assert p.stat("op_query") == 1 and p.stat("decoding_error") == 0
    assert "collection.c.query.total" in p.names() and "collection.b.query.total" not in p.names()
    c.close()  # and no truncated-frame error at close either
    assert p.stat("decoding_error") == 0


def test_proxy_enabled_from_the_static_layer_and_as_a_percentage() -> None:
    p = Proxy("m", runtime=make_runtime({"mongo": {"proxy_enabled": 0}}))
    c = p.connect()
    c.client(op_query("a.b", {}, request_id=1))
    assert p.nonzero() == {}
    p.server.runtime_modify(proxy_enabled=50)  # drawn per read: about half the frames decoded
    for i in range(400):
        c.client(op_msg({"ping": 1}, request_id=10 + i))
    assert 100 < p.stat("op_msg") < 300
    p.server.runtime_modify(proxy_enabled=150)  # above 100: always
    before = p.stat("op_msg")
    for i in range(50):
        c.client(op_msg({"ping": 1}, request_id=1000 + i))
    assert p.stat("op_msg") == before + 50


def test_a_decoding_error_is_not_undone_by_the_runtime() -> None:
    p = Proxy("m")
    c = p.connect()
    c.client(b"\x05\x00\x00\x00" + bytes(12))  # length 5 < 16
    assert p.stat("decoding_error") == 1
    p.server.runtime_modify(proxy_enabled=100)
    c.client(op_query("a.b", {}, request_id=1))
    assert p.stat("op_query") == 0  # sniffing stays off for this connection


# -- mongo.logging_enabled / mongo.connection_logging_enabled -------------------------------------


def test_logging_enabled_is_read_per_message(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    p = Proxy("m", access_log=log)
    c = p.connect()
    c.client(op_query("a.b", {}, request_id=1))
    p.server.runtime_modify(logging_enabled=0)
    c.server(op_reply([{}], response_to=1, request_id=2))
    c.client(op_insert("a.b", [{"x": 1}], request_id=3))
    p.server.runtime_modify(logging_enabled=100)
    c.client(op_msg({"ping": 1}, request_id=4))
    assert p.log is not None
    p.log.flush()
    assert lines(log) == ["OP_QUERY", "OP_MSG"]
    # Stats are not gated by the logging keys.
    assert p.stat("op_reply") == 1 and p.stat("op_insert") == 1 and p.stat("op_msg") == 1


def test_connection_logging_enabled_is_read_once_per_connection(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    p = Proxy("m", access_log=log)
    p.server.runtime_modify(connection_logging_enabled=0)
    quiet = p.connect()
    p.server.runtime_modify(connection_logging_enabled=100)
    loud = p.connect()
    p.server.runtime_modify(connection_logging_enabled=0)  # too late for both
    quiet.client(op_query("a.quiet", {}, request_id=1))
    loud.client(op_query("a.loud", {}, request_id=1))
    assert p.log is not None
    p.log.flush()
    entries = [json.loads(ln)["message"] for ln in log.read_text().splitlines()]
    assert [e["collection"] for e in entries] == ["a.loud"]
    assert p.stat("op_query") == 2


# -- mongo.drain_close_enabled --------------------------------------------------------------------


def test_drain_close_enabled() -> None:
    async def run() -> None:
        p = Proxy("m", runtime=make_runtime({"mongo.drain_close_enabled": 0}))
        c = p.connect()
        p.server.draining = True
        c.client(op_query("a.b", {}, request_id=1))
        c.server(op_reply([{}], response_to=1, request_id=2))
        assert p.stat("cx_drain_close") == 0
        p.server.runtime_modify(drain_close_enabled=100)
        c.client(op_query("a.b", {}, request_id=3))
        c.server(op_reply([{}], response_to=3, request_id=4))
        assert p.stat("cx_drain_close") == 1
        await wait_for(lambda: c.cb.connection.closed_with is ConnectionCloseType.FLUSH_WRITE)

    asyncio.run(run())


# -- mongo.fault.fixed_delay.* --------------------------------------------------------------------


def test_fixed_delay_percent_overrides_the_configured_percentage() -> None:
    async def run() -> None:
        p = Proxy("m", delay=FaultDelay(1, 0, 100))  # configured, 0 %
        c = p.connect()
        assert c.client(op_query("a.b", {}, request_id=1)) is FilterStatus.CONTINUE
        p.server.runtime_modify(fault__fixed_delay__percent=100)
        assert c.client(op_query("a.b", {}, request_id=2)) is FilterStatus.STOP_ITERATION
        assert p.stat("delays_injected") == 1
        await wait_for(lambda: c.cb.continued == 1)
        c.close()
        # A FractionalPercent in the runtime (static layer) is taken as is.
        frac = Proxy("frac", delay=FaultDelay(1, 100, 100), runtime=make_runtime(
            {"mongo.fault.fixed_delay.percent": {"numerator": 0, "denominator": "TEN_THOUSAND"}}))
        assert frac.connect().client(op_msg({"ping": 1})) is FilterStatus.CONTINUE

        full = Proxy("full", delay=FaultDelay(1, 100, 100))
        full.server.runtime_modify(fault__fixed_delay__percent=0)
        assert full.connect().client(op_msg({"ping": 1})) is FilterStatus.CONTINUE
        full.server.runtime_modify(fault__fixed_delay__percent="yes")  # not a number: config's
        conn = full.connect()
        assert conn.client(op_msg({"ping": 1})) is FilterStatus.STOP_ITERATION
        conn.close()
        assert full.stat("delays_injected") == 1

    asyncio.run(run())


def test_fixed_delay_duration_ms_overrides_the_configured_delay() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        # A configured delay of 0 ms injects nothing...
        p = Proxy("m", delay=FaultDelay(0, 100, 100))
        c = p.connect()
        assert c.client(op_query("a.b", {}, request_id=1)) is FilterStatus.CONTINUE
        assert p.stat("delays_injected") == 0
        # ... unless the runtime gives a duration.
        p.server.runtime_modify(fault__fixed_delay__duration_ms=120)
        start = loop.time()
        assert c.client(op_query("a.b", {}, request_id=2)) is FilterStatus.STOP_ITERATION
        await wait_for(lambda: c.cb.continued == 1)
        assert loop.time() - start >= 0.11
        # A runtime duration of 0 turns a configured delay off, and counts nothing.
        q = Proxy("q", delay=FaultDelay(5000, 100, 100))
        q.server.runtime_modify(fault__fixed_delay__duration_ms=0)
        assert q.connect().client(op_msg({"ping": 1})) is FilterStatus.CONTINUE
        assert q.stat("delays_injected") == 0
        c.close()

    asyncio.run(run())


def test_delay_keys_do_nothing_without_a_configured_delay() -> None:
    p = Proxy("m", runtime=make_runtime({"mongo": {"fault": {"fixed_delay": {
        "percent": 100, "duration_ms": 1000}}}}))
    assert p.connect().client(op_query("a.b", {})) is FilterStatus.CONTINUE
    assert p.stat("delays_injected") == 0


def test_a_filter_without_a_server_uses_the_defaults(tmp_path: Path) -> None:
    shared = MongoProxyShared(MongoProxyConfig(stat_prefix="s"), Store().root, None, None)
    f = MongoProxyFilter(shared)
    f.initialize_read_filter_callbacks(FakeCallbacks())  # type: ignore[arg-type]
    f.on_new_connection()
    assert f.on_data(op_query("a.b", {}), False) is FilterStatus.CONTINUE
    assert shared.stats.op_query.value == 1
