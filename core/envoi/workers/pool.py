"""The main process's side: fork the workers, keep them running, and speak for them.

* **Forking.** Workers are forked from the main process: the first ones before any event loop
  exists, replacements while the main's loop is stopped between two runs (:meth:`WorkerPool.run`),
  so no process ever runs a loop it inherited. A replacement thus starts from the main's current
  state: the config it validated plus every update applied since (runtime overrides, a failed
  health check, a drained listener). It drops every descriptor the main process opened after
  start-up (:func:`envoi.workers.worker.become_worker`).
* **Listening sockets** (one SO_REUSEPORT socket per listener per worker) stay open in the main
  process until it drains. While a worker is dead its socket keeps queueing the connections the
  kernel hashes to it, and its replacement accepts them: no connection attempt is refused.
* **Supervision.** A worker that dies is logged with its exit status or signal, and the reason
  it gave when it could not start, and replaced (``server.worker_restarts``). A worker that dies
  while starting, or soon after, waits longer each time (0, 0.25 s, 0.5 s, ... up to 30 s), so a
  worker that cannot start does not spin.
* **Stats.** The admin asks every worker for its stats (change since its start); each answer is
  kept, and when a worker dies its last counters, histograms and per-host counters are folded into
  a store of retired totals, so no counter shown by ``/stats`` or ``/stats/prometheus`` goes
  backwards. A worker that does not answer counts with its last answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoi.stats import Counter, Gauge, Histogram, Store, TextReadout
from envoi.workers.control import FrameReader, encode, event_handler
from envoi.workers.updates import get_update, prepare_here
from envoi.workers.worker import HOST_COUNTERS, HOST_FIELDS, become_worker

if TYPE_CHECKING:
    from envoi.network.listener import ActiveListener
    from envoi.server import Server

log = logging.getLogger("envoi.workers")

REPLY_TIMEOUT = 5.0
SLOW_REPLY_TIMEOUT = 0.25
REAP_INTERVAL = 0.1
BACKOFF_STEP = 0.25
BACKOFF_MAX = 30.0
#: A worker that served this long before it died starts its backoff afresh.
STABLE_AFTER = 10.0
#: Blocked across ``fork`` so that no signal meant for the child runs the main's handlers.
FORK_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP}
_EMPTY_INTERVAL: tuple[dict[float, int], int, float] = ({}, 0, 0.0)


def backoff(failures: int) -> float:
    """Seconds before the next start after ``failures`` early deaths in a row."""
    if failures <= 1:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_STEP * 2 ** (failures - 2)))


def describe_status(status: int | None) -> str:
    if status is None:
        return "exited (status unknown)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "?"
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _open_fds() -> set[int]:
    try:
        return {int(n) for n in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


@dataclass(eq=False)
class Worker:
    index: int
    pid: int
    control: socket.socket
    started: float
    frames: FrameReader = field(default_factory=FrameReader)
    #: The request id this worker's answer is awaited for, and the answer once it came.
    waiting: int | None = None
    answer: dict[str, Any] | None = None
    ready_at: float | None = None
    error: str | None = None
    closed: bool = False
    #: It let a request time out and has not answered anything since.
    slow: bool = False
    exited: bool = False
    #: The last stats report it sent.
    report: dict[str, Any] | None = None


class WorkerPool:
    def __init__(self, server: Server, count: int) -> None:
        self.server = server
        self.count = count
        self.workers: dict[int, Worker] = {}
        #: What a worker keeps of the main's descriptors: those open before the first fork
        #: (listening sockets, access log files, plugins' files), minus those closed since.
        self.keep_fds = _open_fds()
        self.failures = [0] * count
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.retired = Store()
        self.retired_hosts: dict[str, list[list[int]]] = {}
        self._ids = itertools.count(1)
        self._wanted: set[int] = set()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._wake: asyncio.Future[None] | None = None
        self._ever_ready: set[int] = set()
        self._all_ready: asyncio.Event | None = None

    # -- forking --------------------------------------------------------------------------

    def start(self) -> None:
        """Fork the first workers (before any event loop exists)."""
        # What start-up left for the collector goes now, and the rest is frozen (see spawn).
        gc.collect()
        for i in range(self.count):
            self.spawn(i)

    def spawn(self, index: int) -> Worker:
        """Fork worker ``index``. Call it with no event loop running; in the child this never
        returns."""
        parent_end, child_end = socket.socketpair()
        # Every object so far leaves the collector's generations, in this process and (forked)
        # in the worker: a collection writes to the header of each object it visits, which
        # would copy every page of the shared heap into whichever process collected first.
        gc.freeze()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        pid = os.fork()
        if pid == 0:
            become_worker(self.server, index, child_end, self.keep_fds, mask,
                          [self.loop, self.server.admin, self, parent_end])
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        parent_end.settimeout(REPLY_TIMEOUT)
        w = Worker(index, pid, parent_end, time.monotonic())
        self.workers[index] = w
        if self.loop is not None:
            self.loop.add_reader(parent_end.fileno(), self._on_readable, w)
        return w

    def run(self) -> int:
        """The main process: serve the admin and supervise until it stops; returns the exit
        status. Forks replacements between two runs of the loop."""
        from envoi.event_loop import new_event_loop

        loop = new_event_loop(self.server.options.event_loop)
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._all_ready = asyncio.Event()
        for w in self.workers.values():
            if not w.exited:
                loop.add_reader(w.control.fileno(), self._on_readable, w)
        try:
            main = loop.create_task(self.server.serve_main(self))
            while True:
                self._wake = loop.create_future()
                waiting: set[asyncio.Future[Any]] = {main, self._wake}
                loop.run_until_complete(
                    asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED))
                if main.done():
                    if main.exception() is not None:  # the admin could not start, say
                        self._abandon()
                    return main.result()
                wanted, self._wanted = sorted(self._wanted), set()
                for index in wanted:
                    if self.stopping or self.server.draining:
                        break
                    w = self.spawn(index)
                    self.server.server_stats.worker_restarts.inc()
                    log.info("worker %d started again (pid %d)", index, w.pid)
        finally:
            loop.close()

    def _abandon(self) -> None:
        """The main process cannot go on: take the workers down with it, now."""
        self.stopping = True
        self.kill()
        deadline = time.monotonic() + 5
        while self.alive and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)

    # -- supervision ----------------------------------------------------------------------

    async def supervise(self, poll_interval: float) -> None:
        """Reap and replace workers; refresh every worker's stats every ``poll_interval`` s, so
        a worker that dies loses little of what it counted."""
        next_poll = time.monotonic() + poll_interval
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self.reap()
            if time.monotonic() >= next_poll and not self.stopping:
                next_poll = time.monotonic() + poll_interval
                self._collect_reports()

    async def wait_ready(self) -> None:
        """Until every worker has once said its listeners accept."""
        assert self._all_ready is not None
        await self._all_ready.wait()

    def reap(self) -> list[Worker]:
        """Collect workers that exited (non-blocking); schedule their replacements."""
        gone = []
        for w in list(self.workers.values()):
            if w.exited:
                continue
            status: int | None
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, None
            if pid != w.pid:
                continue
            w.exited = True
            self._read_rest(w)
            self._close_control(w)
            self._retire(w)
            gone.append(w)
            self._on_exit(w, status)
        return gone

    def _on_exit(self, w: Worker, status: int | None) -> None:
        how = describe_status(status)
        if self.stopping:
            clean = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            (log.debug if clean else log.warning)("worker %d (pid %d) %s", w.index, w.pid, how)
            return
        now = time.monotonic()
        if w.ready_at is None:
            when = "while starting"
            self.failures[w.index] += 1
        elif now - w.ready_at < STABLE_AFTER:
            when = f"{now - w.ready_at:.1f}s after it started serving"
            self.failures[w.index] += 1
        else:
            when = f"after serving for {now - w.ready_at:.0f}s"
            self.failures[w.index] = 1
        failures = self.failures[w.index]
        delay = backoff(failures)
        reason = f" ({w.error})" if w.error else ""
        in_a_row = f", {failures} times in a row" if failures > 1 else ""
        log.error("worker %d (pid %d) %s %s%s%s; starting a replacement in %.2gs",
                  w.index, w.pid, how, when, reason, in_a_row, delay)
        assert self.loop is not None
        self._timers[w.index] = self.loop.call_later(delay, self._want, w.index)

    def _want(self, index: int) -> None:
        self._timers.pop(index, None)
        if self.stopping:
            return
        self._wanted.add(index)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers.values() if not w.exited)

    def kill(self) -> None:
        for w in self.workers.values():
            if not w.exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)

    async def stop(self, grace: float) -> None:
        """Drain: no more replacements, close the main's listening sockets (so the ports
        refuse once the workers stop accepting), tell every worker to drain, wait up to
        ``grace`` seconds, then kill what is left."""
        self.stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._wanted.clear()
        self.close_listen_sockets(self.server.listeners)
        self.request({"op": "shutdown"}, quiet=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.alive and loop.time() < deadline:
            await asyncio.sleep(0.05)
            self.reap()
        if self.alive:
            log.warning("%d workers still running after %gs: killing them", self.alive, grace)
            self.kill()
            deadline = loop.time() + 5
            while self.alive and loop.time() < deadline:
                await asyncio.sleep(0.05)
                self.reap()

    def close_listen_sockets(self, listeners: list[ActiveListener]) -> None:
        """The main's copies of these listeners' sockets; workers forked later do not serve
        them."""
        for lst in listeners:
            for s in lst.worker_socks:
                self.keep_fds.discard(s.fileno())
            lst.close_worker_sockets()

    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None:
        self.close_listen_sockets([lst for lst in self.server.listeners
                                   if not inbound_only or lst.traffic_direction == "INBOUND"])
        self.broadcast({"op": "drain_listeners", "graceful": graceful,
                        "inbound_only": inbound_only})

    # -- the control channel ----------------------------------------------------------------

    def _on_readable(self, w: Worker) -> None:
        self._read_once(w)

    def _read_once(self, w: Worker) -> None:
        try:
            data = w.control.recv(1 << 20)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._mark_closed(w)
            return
        try:
            frames = w.frames.feed(data)
        except Exception as exc:  # a garbled frame: this worker's channel is unusable
            log.error("worker %d sent a bad control frame (%s); restarting it", w.index, exc)
            self._mark_closed(w)
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
            return
        for frame in frames:
            self._dispatch(w, frame)

    def _mark_closed(self, w: Worker) -> None:
        if not w.closed:
            w.closed = True
            if self.loop is not None:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(w.control.fileno())

    def _read_rest(self, w: Worker) -> None:
        """What an exited worker sent last (the reason it could not start)."""
        if w.closed:
            return
        try:
            w.control.setblocking(False)
            while data := w.control.recv(1 << 20):
                for frame in w.frames.feed(data):
                    self._dispatch(w, frame)
        except Exception:  # nothing more to read, or nothing readable: either way, done
            return

    def _close_control(self, w: Worker) -> None:
        self._mark_closed(w)
        w.control.close()

    def _dispatch(self, w: Worker, frame: dict[str, Any]) -> None:
        w.slow = False
        event = frame.get("event")
        if event == "ready":
            w.ready_at = time.monotonic()
            log.debug("worker %d (pid %d) is serving", w.index, w.pid)
            self._ever_ready.add(w.index)
            if len(self._ever_ready) == self.count and self._all_ready is not None:
                self._all_ready.set()
        elif event == "failed":
            w.error = str(frame.get("error", ""))
        elif frame.get("id") is not None and frame.get("id") == w.waiting:
            w.answer = frame
        elif event is not None and (handler := event_handler(event)) is not None:
            try:
                handler(w.index, frame)
            except Exception:  # a broken handler must not break the control channel
                log.exception("worker %d: handling event %r failed", w.index, event)

    def request(self, msg: dict[str, Any], *, quiet: bool = False
                ) -> dict[Worker, dict[str, Any]]:
        """Send ``msg`` to every live worker and collect their answers, all at once and within
        :data:`REPLY_TIMEOUT`. Returns the answer frames (``reply`` or ``error``) by worker."""
        msg_id = next(self._ids)
        data = encode({**msg, "id": msg_id})
        targets = []
        for w in self.workers.values():
            if w.exited or w.closed:
                continue
            w.waiting, w.answer = msg_id, None
            try:
                w.control.sendall(data)
            except OSError as exc:
                self._no_answer(w, msg, str(exc), quiet)
                w.waiting = None
                continue
            targets.append(w)
        start = time.monotonic()
        # A worker that let the last request time out (wedged in a filter, say) gets a short
        # wait until it answers again, so it cannot hold the admin up on every request.
        deadlines = {w: start + (SLOW_REPLY_TIMEOUT if w.slow else REPLY_TIMEOUT)
                     for w in targets}
        with selectors.DefaultSelector() as sel:
            for w in targets:
                sel.register(w.control, selectors.EVENT_READ, w)
            pending = set(targets)
            while pending:
                left = min(deadlines[w] for w in pending) - time.monotonic()
                if left <= 0:
                    for w in [w for w in pending if deadlines[w] <= time.monotonic()]:
                        pending.discard(w)
                        sel.unregister(w.control)
                    continue
                for key, _ in sel.select(left):
                    w = key.data
                    self._read_once(w)
                    if w.answer is not None or w.closed:
                        pending.discard(w)
                        sel.unregister(w.control)
        answers = {}
        for w in targets:
            w.waiting = None
            if w.answer is None:
                w.slow = not w.closed
                self._no_answer(w, msg, "closed" if w.closed else "timed out", quiet)
                continue
            answers[w] = w.answer
            if "error" in w.answer:
                log.error("worker %d: %s failed: %s", w.index, msg.get("op"), w.answer["error"])
        return answers

    def _no_answer(self, w: Worker, msg: dict[str, Any], why: str, quiet: bool) -> None:
        # A worker that is exiting (killed, or told to shut down) cannot answer; reap says why.
        gone = w.closed or quiet or self.stopping
        (log.debug if gone else log.warning)("worker %d did not answer %s: %s", w.index,
                                             msg.get("op"), why)

    def broadcast(self, msg: dict[str, Any]) -> None:
        self.request(msg)

    # -- updates every worker applies, or none ----------------------------------------------

    def apply_update(self, name: str, payload: Any) -> str | None:
        """Apply update ``name`` (see :mod:`envoi.workers.updates`) in the main process and
        every worker, or nowhere; returns the reason it was refused, or None."""
        update = get_update(name)
        prepared, error = prepare_here(self.server, name, payload)
        if error is not None:
            return error
        txn = next(self._ids)
        answers = self.request({"op": "update_prepare", "update": name, "payload": payload,
                                "txn": txn})
        refusals = [a.get("reply") or a.get("error") for a in answers.values()
                    if a.get("reply") is not None or "error" in a]
        if refusals:
            self.request({"op": "update_abort", "txn": txn})
            return str(refusals[0])
        update.commit(self.server, prepared)
        committed = self.request({"op": "update_commit", "txn": txn})
        for w in self.workers.values():
            if not w.exited and (w not in answers or w not in committed):
                # It may hold the old state: a replacement forks from the main, which has it.
                log.error("worker %d did not take update %s in time; replacing it", w.index,
                          name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        return None

    # -- stats ------------------------------------------------------------------------------

    def _collect_reports(self) -> list[dict[str, Any]]:
        """Every running worker's stats: a fresh answer, or the last one it gave."""
        for w, answer in self.request({"op": "stats"}).items():
            if "reply" in answer:
                w.report = answer["reply"]
        return [w.report for w in self.workers.values()
                if not w.exited and w.report is not None]

    def _retire(self, w: Worker) -> None:
        """Fold a dead worker's last counters into the retired totals."""
        rep = w.report
        if rep is None:
            return
        for name, d in rep["counters"].items():
            self.retired.counter(name).value += d
        for name, (cumulative, _) in rep["histograms"].items():
            self.retired.histogram(name).merge_export((cumulative, _EMPTY_INTERVAL))
        for cluster, hosts in rep["hosts"].items():
            acc = self.retired_hosts.setdefault(cluster, [])
            for i, vals in enumerate(hosts):
                if i >= len(acc):
                    acc.append([0] * len(HOST_FIELDS))
                acc[i] = [a + (v if keep else 0)
                          for a, v, keep in zip(acc[i], vals, HOST_COUNTERS, strict=True)]

    def merged_stats(self) -> Store:
        merged = Store()
        for s in self.server.stats:
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
        for s in self.retired:
            if isinstance(s, Counter):
                merged.counter(s.name).value += s.value
            elif isinstance(s, Histogram):
                merged.histogram(s.name).merge_export(s.export())
        for rep in self._collect_reports():
            for name, d in rep["counters"].items():
                merged.counter(name).value += d
            for name, d in rep["gauges"].items():
                merged.gauge(name).inc(d)
            for name, exported in rep["histograms"].items():
                merged.histogram(name).merge_export(exported)
            for name, v in rep["texts"].items():
                merged.text_readout(name).set(v)
        return merged

    def counter_reported(self, name: str) -> bool:
        """Did a live worker's last stats report count ``name``? (Asks no worker: the reports
        come every stats flush.) The main process's health checks use it to tell whether the
        cluster has carried traffic."""
        return any(w.report and w.report["counters"].get(name)
                   for w in self.workers.values() if not w.exited)

    def host_counters(self) -> dict[str, list[list[int]]]:
        """Per cluster, per host: the workers' host counters summed (dead workers' too)."""
        total = {c: [list(h) for h in hosts] for c, hosts in self.retired_hosts.items()}
        for rep in self._collect_reports():
            for cluster, hosts in rep["hosts"].items():
                acc = total.setdefault(cluster, [])
                for i, vals in enumerate(hosts):
                    if i >= len(acc):
                        acc.append([0] * len(HOST_FIELDS))
                    acc[i] = [a + b for a, b in zip(acc[i], vals, strict=True)]
        return total

    def reset_counters(self) -> None:
        self.retired.reset_counters()
        for w in self.workers.values():
            w.report = None
        self.broadcast({"op": "reset_counters"})
