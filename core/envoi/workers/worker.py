"""The worker side: what a forked worker process does, and the requests it answers.

A worker is forked from the main process (see :mod:`envoi.workers.pool`). It keeps its own
SO_REUSEPORT socket of each listener, runs its own event loop, and answers the main process on
its control socket. The operations it answers are a registry
(:func:`envoi.workers.control.register_worker_op`) so a
feature that pushes state from the main process to every worker (host health, say) adds its own
operation without touching the control loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoi.stats import Counter, Gauge, Histogram, Store, TextReadout
from envoi.workers.control import (
    OpContext,
    encode,
    register_worker_op,
    set_event_pusher,
    worker_op,
)

if TYPE_CHECKING:
    from envoi.server import Server

log = logging.getLogger("envoi.workers")

#: Stats that mirror process-wide state the main process owns (each worker keeps a copy of the
#: runtime, say): reported by the main process only, like Envoy's "never import" gauges.
MAIN_ONLY_PREFIXES = ("runtime.", "server.worker_restarts")
#: Cluster stats the main process owns: it runs the active health checks and keeps every
#: cluster's host set (membership) current for the whole server.
MAIN_ONLY_CLUSTER_STATS = (".health_check.", ".membership_total", ".membership_healthy",
                           ".membership_degraded", ".membership_excluded")


def main_only(name: str) -> bool:
    """A stat only the main process reports (workers' copies would be counted N+1 times)."""
    if name.startswith(MAIN_ONLY_PREFIXES):
        return True
    return name.startswith("cluster.") and any(p in name for p in MAIN_ONLY_CLUSTER_STATS)
#: Bytes a worker's pushed events may wait to be written to the main process.
PUSH_BUFFER_LIMIT = 4 * 1024 * 1024
#: Per-host values reported for ``/clusters``; which of them are counters (summed for ever,
#: kept when a worker dies) and which are gauges (gone with the worker).
HOST_FIELDS = ("cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error",
               "rq_success", "rq_timeout", "rq_total", "rq_pending_active")
HOST_COUNTERS = tuple(f not in ("cx_active", "rq_active", "rq_pending_active")
                      for f in HOST_FIELDS)


class WorkerStats:
    """What a worker reports: the change of each stat since it started."""

    def __init__(self, store: Store) -> None:
        self.store = store
        for stat in store:
            if isinstance(stat, Histogram):
                stat.clear()  # the main process keeps what was recorded before the fork
        self.baseline = self._values()

    def _values(self) -> dict[str, int]:
        return {s.name: s.value for s in self.store if isinstance(s, Counter | Gauge)}

    def report(self, server: Server) -> dict[str, Any]:
        counters: dict[str, int] = {}
        gauges: dict[str, int] = {}
        histograms: dict[str, Any] = {}
        texts: dict[str, str] = {}
        base = self.baseline
        for s in self.store:
            if main_only(s.name):
                continue
            if isinstance(s, Counter):
                d = s.value - base.get(s.name, 0)
                if d or s.name not in base:
                    counters[s.name] = d
            elif isinstance(s, Gauge):
                d = s.value - base.get(s.name, 0)
                if d or s.name not in base:
                    gauges[s.name] = d
            elif isinstance(s, Histogram):
                if s.used:
                    histograms[s.name] = s.export()
            elif isinstance(s, TextReadout) and s.value:
                texts[s.name] = s.value
        hosts = {
            name: [tuple(getattr(h, f) for f in HOST_FIELDS) for h in cluster.hosts]
            for name, cluster in server.cluster_manager.clusters.items()
        }
        return {"counters": counters, "gauges": gauges, "histograms": histograms,
                "texts": texts, "hosts": hosts}

    def reset_counters(self) -> None:
        self.store.reset_counters()
        for s in self.store:
            if isinstance(s, Counter):
                self.baseline[s.name] = 0


@dataclass
class WorkerContext:
    """What a worker operation sees."""

    server: Server
    index: int
    stats: WorkerStats
    #: Updates prepared and not yet committed or aborted, by transaction id.
    prepared: dict[int, tuple[str, Any]] = field(default_factory=dict)


def _op_stats(ctx: OpContext, msg: dict[str, Any]) -> Any:
    assert isinstance(ctx, WorkerContext)
    return ctx.stats.report(ctx.server)


def _op_reset_counters(ctx: OpContext, msg: dict[str, Any]) -> Any:
    assert isinstance(ctx, WorkerContext)
    ctx.stats.reset_counters()
    return None


def _op_healthcheck(ctx: OpContext, msg: dict[str, Any]) -> Any:
    ctx.server.healthcheck_failed = bool(msg["failed"])
    return None


def _op_drain_listeners(ctx: OpContext, msg: dict[str, Any]) -> Any:
    ctx.server.drain_listeners(msg["graceful"], msg["inbound_only"])
    return None


def _op_shutdown(ctx: OpContext, msg: dict[str, Any]) -> Any:
    ctx.server.shutdown()
    return None


for _name, _op in (("stats", _op_stats), ("reset_counters", _op_reset_counters),
                   ("healthcheck", _op_healthcheck), ("drain_listeners", _op_drain_listeners),
                   ("shutdown", _op_shutdown)):
    register_worker_op(_name, _op)


async def serve_control(server: Server, sock: socket.socket, stats: WorkerStats) -> None:
    """Say ready, then answer the main process until it closes the socket (then drain and
    stop: a worker never outlives its main process)."""
    assert server.worker_index is not None
    ctx = WorkerContext(server, server.worker_index, stats)
    reader, writer = await asyncio.open_connection(sock=sock)

    def push(frame: dict[str, Any]) -> bool:
        # Events a worker sends on its own (the tap's lines) wait in the transport's buffer,
        # up to a bound: past it they are refused (the caller drops and counts them).
        if writer.transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
            return False
        writer.write(encode(frame))
        return True

    set_event_pusher(push)
    try:
        writer.write(encode({"event": "ready"}))
        while True:
            head = await reader.readexactly(4)
            msg = pickle.loads(await reader.readexactly(int.from_bytes(head, "big")))
            op = worker_op(msg.get("op", ""))
            answer: dict[str, Any] = {"id": msg.get("id")}
            if op is None:
                answer["error"] = f"unknown worker operation {msg.get('op')!r}"
            else:
                try:
                    answer["reply"] = op(ctx, msg)
                except Exception as exc:  # one bad request must not take the worker down
                    log.exception("worker operation %r failed", msg.get("op"))
                    answer["error"] = f"{type(exc).__name__}: {exc}"
            writer.write(encode(answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        server.shutdown()  # the main process went away: drain and stop
    finally:
        set_event_pusher(None)


def run_worker(server: Server, index: int, sock: socket.socket) -> int:
    """Serve as worker ``index`` on a fresh event loop; returns the exit status."""
    from envoi.event_loop import new_event_loop

    server.worker_index = index
    # The baseline first: the worker_<index> names made next are then reported even at zero.
    stats = WorkerStats(server.stats)
    for lst in server.listeners:
        lst.use_worker_socket(index)
    loop = new_event_loop(server.options.event_loop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            server.serve(admin=False, control=lambda srv: serve_control(srv, sock, stats)))
    finally:
        loop.close()


#: What a worker forked from a running main process inherited and must never release: the
#: main's event loop, admin and pool hold descriptors that are no longer this process's.
_INHERITED: list[Any] = []


def become_worker(server: Server, index: int, control: socket.socket, keep_fds: set[int],
                  signal_mask: set[int] | set[signal.Signals], inherited: list[Any]) -> None:
    """Run in the child right after ``fork``: drop what belongs to the main process, serve as
    worker ``index``, and exit. Never returns."""
    code = 1
    try:
        # Signals first (they were blocked across the fork): the main's handlers write to its
        # loop's wake-up socket, which this process shares until it is replaced below.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process too
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        _INHERITED.extend(inherited)
        server.admin = None
        server.pool = None
        _release_descriptors(keep_fds | {control.fileno()})
        gc.freeze()  # nothing inherited is collected (and its pages stay shared)
        code = run_worker(server, index, control)
    except BaseException as exc:  # a crash in a worker must not run the main's code
        reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.exception("worker %d failed: %s", index, reason)
        with contextlib.suppress(OSError):
            control.setblocking(True)
            control.sendall(encode({"event": "failed", "error": reason}))
    finally:
        from envoi.access_log import flush_all

        with contextlib.suppress(BaseException):
            flush_all()
        os._exit(code)


def _release_descriptors(keep: set[int]) -> None:
    """Point every descriptor the main process opened after start-up (its admin connections,
    its event loop, other workers' control sockets) at /dev/null. Closing them would free
    their numbers for reuse while objects from the main process still name them; /dev/null
    keeps the numbers taken, and the main's sockets and files lose this process's reference
    (so an admin connection the main closes really closes)."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            if fd > 2 and fd not in keep and fd != null:
                with contextlib.suppress(OSError):
                    os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
