"""Worker processes: Envoy's ``--concurrency N`` for a Python proxy.

The main process loads the config, binds every listener once per worker with SO_REUSEPORT (so
the kernel spreads connections), and forks N workers *before* any event loop exists. Each worker
serves its own copy of the listeners on its own event loop; the main process keeps the admin.

Stats stay per process: each worker notes every stat's value when it starts, and when the admin
asks (over a socketpair; the request is small and the admin is not the hot path) answers with
the change since then plus its histograms and per-host counters. The main process adds those to
its own store, so ``/stats`` shows one sum, as Envoy's shared store does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoi.stats import Counter, Gauge, Histogram, Store, TextReadout

if TYPE_CHECKING:
    from envoi.server import Server

log = logging.getLogger("envoi.workers")

_LEN = struct.Struct("!I")
#: Stats that mirror process-wide state the main process owns (each worker keeps a copy of the
#: runtime, say): reported by the main process only, like Envoy's "never import" gauges.
MAIN_ONLY_PREFIXES = ("runtime.",)
REPLY_TIMEOUT = 5.0


def _send(sock: socket.socket, msg: Any) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("worker control socket closed")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    (n,) = _LEN.unpack(_recv_exactly(sock, _LEN.size))
    return pickle.loads(_recv_exactly(sock, n))


# ------------------------------------------------------------------------------- worker side


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
            if s.name.startswith(MAIN_ONLY_PREFIXES):
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
            name: [(h.cx_active, h.cx_connect_fail, h.cx_total, h.rq_active, h.rq_error,
                    h.rq_success, h.rq_timeout, h.rq_total, h.rq_pending_active)
                   for h in cluster.hosts]
            for name, cluster in server.cluster_manager.clusters.items()
        }
        return {"counters": counters, "gauges": gauges, "histograms": histograms,
                "texts": texts, "hosts": hosts}

    def reset_counters(self) -> None:
        self.store.reset_counters()
        for s in self.store:
            if isinstance(s, Counter):
                self.baseline[s.name] = 0


async def serve_control(server: Server, sock: socket.socket, stats: WorkerStats) -> None:
    """Answer the main process until it closes the socket (then drain and stop)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while True:
            head = await reader.readexactly(_LEN.size)
            msg = pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
            op = msg.get("op")
            reply: Any = "ok"
            if op == "stats":
                reply = stats.report(server)
            elif op == "reset_counters":
                stats.reset_counters()
            elif op == "healthcheck":
                server.healthcheck_failed = bool(msg["failed"])
            elif op == "drain_listeners":
                server.drain_listeners(msg["graceful"], msg["inbound_only"])
            elif op == "runtime_modify":
                server.runtime.modify(msg["updates"])
            elif op == "shutdown":
                server.shutdown()
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            writer.write(_LEN.pack(len(data)) + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        server.shutdown()  # the main process went away: drain and stop


def run_worker(server: Server, index: int, sock: socket.socket) -> int:
    """The body of a forked worker; returns its exit status."""
    from envoi.event_loop import new_event_loop

    server.worker_index = index
    # The baseline first: the worker_<index> names made next are then reported even at zero.
    stats = WorkerStats(server.stats)
    for lst in server.listeners:
        lst.use_worker_socket(index)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            server.serve(admin=False, control=lambda srv: serve_control(srv, sock, stats)))
    finally:
        loop.close()


# --------------------------------------------------------------------------------- main side


@dataclass
class Worker:
    index: int
    pid: int
    control: socket.socket
    exited: bool = False


class WorkerPool:
    def __init__(self, server: Server, count: int) -> None:
        self.server = server
        self.count = count
        self.workers: list[Worker] = []

    def fork(self) -> int | None:
        """Fork the workers. In a worker this runs it and never returns (``os._exit``)."""
        for i in range(self.count):
            parent_end, child_end = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the worker
                parent_end.close()
                for w in self.workers:
                    w.control.close()
                code = 1
                try:
                    code = run_worker(self.server, i, child_end)
                except BaseException:  # a crash in a worker must not run the main's code
                    log.exception("worker %d crashed", i)
                finally:
                    from envoi.access_log import flush_all

                    flush_all()
                    os._exit(code)
            child_end.close()
            self.workers.append(Worker(i, pid, parent_end))
        for lst in self.server.listeners:
            lst.close_worker_sockets()  # only workers accept
        return None

    def request(self, msg: dict[str, Any]) -> list[Any]:
        """Send ``msg`` to every live worker and collect the answers (blocking, bounded)."""
        replies = []
        for w in self.workers:
            if w.exited:
                continue
            try:
                w.control.settimeout(REPLY_TIMEOUT)
                _send(w.control, msg)
                replies.append(_recv(w.control))
            except (OSError, ConnectionError, EOFError) as exc:
                log.warning("worker %d did not answer %s: %s", w.index, msg.get("op"), exc)
        return replies

    def merged_stats(self) -> Store:
        merged = Store()
        own = self.server.stats
        for s in own:
            if isinstance(s, Counter):
                merged.counter(s.name).value = s.value
            elif isinstance(s, Gauge):
                g = merged.gauge(s.name)
                g.value = s.value
                if s.used:
                    g.set(s.value)
            elif isinstance(s, Histogram):
                merged.histogram(s.name).merge_export(s.export())
            elif isinstance(s, TextReadout):
                merged.text_readout(s.name).set(s.value)
        for rep in self.request({"op": "stats"}):
            for name, d in rep["counters"].items():
                merged.counter(name).value += d
            for name, d in rep["gauges"].items():
                merged.gauge(name).inc(d)
            for name, exported in rep["histograms"].items():
                merged.histogram(name).merge_export(exported)
            for name, v in rep["texts"].items():
                merged.text_readout(name).set(v)
        return merged

    def host_counters(self) -> dict[str, list[list[int]]]:
        """Per cluster, per host: the workers' host counters summed."""
        total: dict[str, list[list[int]]] = {}
        for rep in self.request({"op": "stats"}):
            for cluster, hosts in rep["hosts"].items():
                acc = total.setdefault(cluster, [[0] * 9 for _ in hosts])
                for i, vals in enumerate(hosts):
                    if i < len(acc):
                        acc[i] = [a + b for a, b in zip(acc[i], vals, strict=True)]
        return total

    def broadcast(self, msg: dict[str, Any]) -> None:
        self.request(msg)

    def reap(self) -> list[Worker]:
        """Collect exited workers (non-blocking); returns the ones that exited now."""
        gone = []
        for w in self.workers:
            if w.exited:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 0
            if pid == w.pid:
                w.exited = True
                w.control.close()
                gone.append(w)
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    log.error("worker %d (pid %d) exited with %d", w.index, w.pid, code)
        return gone

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers if not w.exited)

    def kill(self) -> None:
        for w in self.workers:
            if not w.exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
