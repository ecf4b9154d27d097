"""Real peers for the mongo tests: a SecantusDB process (a wire-compatible server, not MongoDB)
and a recording TCP relay that stands where the proxy would."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

Chunk = tuple[bool, bytes]  # (from_client, bytes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {port} after {timeout}s") from None
            time.sleep(0.02)


def secantusd_command() -> str:
    exe = Path(sys.executable).with_name("secantusd-py")
    found = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if not found:
        # A missing peer is a failure, never a skip: see requirements/test.txt.
        raise RuntimeError("secantusd-py not installed (pip install -r requirements/test.txt)")
    return found


@contextmanager
def secantusdb() -> Iterator[int]:
    """Start ``secantusd-py --standalone`` on a free port; yield the port."""
    port = free_port()
    proc = subprocess.Popen(
        [secantusd_command(), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
         ":memory:", "--standalone"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RecordingRelay:
    """An asyncio TCP relay on its own thread that records each connection's bytes, both ways,
    in the order they crossed it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections: list[list[Chunk]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> RecordingRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(10)

    def snapshot(self) -> list[list[Chunk]]:
        with self._lock:
            return [list(c) for c in self.connections]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        self._loop.call_later(0.05, self._loop.stop)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        log: list[Chunk] = []
        with self._lock:
            self.connections.append(log)
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await r.read(65536):
                    with self._lock:
                        log.append((from_client, data))
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        try:
            await asyncio.gather(pipe(cr, sw, True), pipe(sr, cw, False))
        except asyncio.CancelledError:
            pass  # the relay is stopping
        finally:
            self._tasks.discard(task)
