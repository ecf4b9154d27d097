"""Worker pool pieces without processes: control frames, backoff, exit reasons, and the fold of
a dead worker's stats into the totals."""

from __future__ import annotations

import signal
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from envoi.stats import Histogram, Store
from envoi.workers import backoff, describe_status
from envoi.workers.control import FrameReader, encode
from envoi.workers.pool import Worker, WorkerPool
from envoi.workers.updates import (
    UpdateRejected,
    WorkerUpdate,
    apply_here,
    get_update,
    register_update,
)


def test_frames_split_and_joined() -> None:
    data = encode({"id": 1, "op": "stats"}) + encode({"event": "ready"})
    reader = FrameReader()
    out = []
    for i in range(len(data)):  # one byte at a time
        out += reader.feed(data[i:i + 1])
    assert out == [{"id": 1, "op": "stats"}, {"event": "ready"}]
    assert FrameReader().feed(data) == out


def test_a_huge_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="control frame"):
        FrameReader().feed(b"\xff\xff\xff\xff")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n) for n in range(1, 9)] == [0, 0.25, 0.5, 1, 2, 4, 8, 16]
    assert backoff(50) == 30


def test_exit_reasons() -> None:
    assert describe_status(1 << 8) == "exited with status 1"
    assert describe_status(0) == "exited with status 0"
    assert describe_status(signal.SIGKILL) == "was killed by signal 9 (SIGKILL)"
    assert describe_status(signal.SIGSEGV | 0x80) == "was killed by signal 11 (SIGSEGV)"
    assert describe_status(None) == "exited (status unknown)"


def _report(counter: int, gauge: int, samples: list[float]) -> dict[str, Any]:
    h = Histogram("cluster.c.upstream_cx_length_ms")
    for v in samples:
        h.record(v)
    return {"counters": {"cluster.c.upstream_cx_total": counter},
            "gauges": {"cluster.c.upstream_cx_active": gauge},
            "histograms": {h.name: h.export()}, "texts": {},
            "hosts": {"c": [(gauge, 1, counter, 0, 0, counter, 0, counter, 0)]}}


def _pool() -> tuple[WorkerPool, list[socket.socket]]:
    server: Any = SimpleNamespace(stats=Store())
    server.stats.counter("cluster.c.upstream_cx_total").value = 1  # the main's own
    pool = WorkerPool(server, 2)
    socks = []
    for i, rep in enumerate((_report(10, 2, [1, 2]), _report(20, 3, [5]))):
        a, b = socket.socketpair()
        socks += [a, b]
        # closed: the pool does not ask it, and counts it with its last report
        pool.workers[i] = Worker(i, 0, a, 0.0, closed=True, report=rep)
    return pool, socks


def test_a_dead_workers_counters_stay_in_the_totals() -> None:
    pool, socks = _pool()
    before = pool.merged_stats()
    assert before.counter("cluster.c.upstream_cx_total").value == 31
    assert before.gauge("cluster.c.upstream_cx_active").value == 5
    assert before.histogram("cluster.c.upstream_cx_length_ms").sample_count == 3
    dead = pool.workers[0]
    pool._retire(dead)
    dead.exited = True
    after = pool.merged_stats()
    assert after.counter("cluster.c.upstream_cx_total").value == 31  # not back to 21
    assert after.gauge("cluster.c.upstream_cx_active").value == 3  # its connections are gone
    assert after.histogram("cluster.c.upstream_cx_length_ms").sample_count == 3
    # Per host: counters stay (cx_connect_fail, cx_total, ...), gauges (cx_active) go.
    assert pool.host_counters()["c"][0] == [3, 2, 30, 0, 0, 30, 0, 30, 0]
    # A replacement counts from zero on top.
    pool.workers[0] = Worker(0, 0, socks[0], 0.0, closed=True, report=_report(4, 1, []))
    assert pool.merged_stats().counter("cluster.c.upstream_cx_total").value == 35
    pool.retired.reset_counters()
    for s in socks:
        s.close()


def test_updates_run_both_phases_or_neither() -> None:
    seen: list[Any] = []

    def prepare(server: Any, payload: int) -> int:
        if payload < 0:
            raise UpdateRejected("negative")
        return payload * 2

    update = WorkerUpdate("test.double", prepare, lambda server, p: seen.append(p))
    register_update(update)
    register_update(update)  # the same object again is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_update(WorkerUpdate("test.double", prepare, lambda s, p: None))
    assert apply_here(None, "test.double", 4) is None  # type: ignore[arg-type]
    assert apply_here(None, "test.double", -1) == "negative"  # type: ignore[arg-type]
    assert seen == [8]
    with pytest.raises(ValueError, match="no update named"):
        get_update("test.nope")


def test_runtime_modify_without_an_admin_layer_is_refused() -> None:
    server: Any = SimpleNamespace(runtime=SimpleNamespace(layers=[]))
    assert apply_here(server, "runtime_modify", {"a": "1"}) == "No admin layer specified"


def test_worker_operations_are_registered_once() -> None:
    from envoi.workers.control import register_worker_op, worker_op

    def op(ctx: Any, msg: dict[str, Any]) -> Any:
        return msg["x"]

    register_worker_op("test.echo", op)
    register_worker_op("test.echo", op)
    assert worker_op("test.echo") is op
    assert worker_op("stats") is not None and worker_op("update_prepare") is not None
    with pytest.raises(ValueError, match="registered twice"):
        register_worker_op("test.echo", lambda ctx, msg: None)
