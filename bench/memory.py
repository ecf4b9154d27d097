"""Memory scaling: the proxy's resident memory with many idle keep-alive connections, and while
a large upload streams to a slow upstream."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import threading
import time
from typing import Any

from bench.configs import SMALL_BODY
from bench.procs import BenchError, tree_pss, tree_rss

MIB = 1024 * 1024


def raise_fd_limit(need: int) -> int:
    """Raise this process's soft limit on open files (children inherit it) to the hard limit;
    returns the new soft limit. The proxies hold one descriptor per idle connection, plus the
    upstream ones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


async def _open_idle(port: int, count: int, batch: int = 200
                     ) -> list[asyncio.StreamWriter]:
    request = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"idle connection got {head[:40]!r}")
        body = await asyncio.wait_for(reader.readexactly(len(SMALL_BODY)), 30)
        if body != SMALL_BODY:
            raise BenchError("idle connection got a wrong body")

    for start in range(0, count, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    return writers


def idle_connections(port: int, count: int, proxy_pid: int) -> dict[str, Any]:
    """RSS before, then with ``count`` keep-alive connections that each made one request and
    now sit idle."""
    before_rss, before_pss = tree_rss(proxy_pid), tree_pss(proxy_pid)

    async def run() -> dict[str, Any]:
        t0 = time.monotonic()
        writers = await _open_idle(port, count)
        opened = time.monotonic() - t0
        await asyncio.sleep(1.0)  # let the proxy settle (lazy frees, pools)
        with_rss, with_pss = tree_rss(proxy_pid), tree_pss(proxy_pid)
        alive = sum(1 for w in writers if not w.is_closing())
        for w in writers:
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        return {"connections": count, "alive": alive, "open_s": opened,
                "rss_before": before_rss, "rss_with": with_rss,
                "pss_before": before_pss, "pss_with": with_pss,
                "rss_growth": with_rss - before_rss, "pss_growth": with_pss - before_pss}

    return asyncio.run(run())


def slow_upload(port: int, size: int, proxy_pid: int, rate_mib: float) -> dict[str, Any]:
    """POST ``size`` bytes through the proxy to an upstream that reads ``rate_mib`` MiB/s;
    samples the proxy's RSS every 0.1 s. The upstream answers with the bytes it got."""
    before = tree_rss(proxy_pid)
    peak = before
    result: dict[str, Any] = {}
    chunk = bytes(range(256)) * 1024  # 256 KiB

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=size / (rate_mib * MIB)
                                          + 120) as s:
                s.sendall(b"POST /upload HTTP/1.1\r\nhost: bench\r\ncontent-type: "
                          b"application/octet-stream\r\ncontent-length: "
                          + str(size).encode() + b"\r\n\r\n")
                left = size
                while left:
                    n = min(left, len(chunk))
                    s.sendall(chunk[:n] if n < len(chunk) else chunk)
                    left -= n
                data = b""
                while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                    more = s.recv(65536)
                    if not more:
                        break
                    data += more
                result["response"] = data.decode(errors="replace")
        except OSError as exc:
            result["error"] = repr(exc)

    t0 = time.monotonic()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    while thread.is_alive():
        peak = max(peak, tree_rss(proxy_pid))
        thread.join(0.1)
    elapsed = time.monotonic() - t0
    response = result.get("response", "")
    got = response.split("\r\n\r\n", 1)[1].strip() if "\r\n\r\n" in response else ""
    if "error" in result or not response.startswith("HTTP/1.1 200") or got != str(size):
        raise BenchError(f"the upload did not arrive whole: {result.get('error') or response!r}")
    return {"bytes": size, "seconds": elapsed, "rss_before": before, "rss_peak": peak,
            "rss_growth": peak - before}
