"""Micro-benchmark: µs per request for each back-end, no I/O (compare with the floor's
shared/bench/floors/codec_cost.py: same request, same 100-byte response).

server = parse a GET + serialise a 100-byte 200 response; client = serialise the request +
parse the response. Run: PYTHONPATH=core:plugins/http python -m envoi_http.codec._bench [-n N]
"""

from __future__ import annotations

import argparse
import time

from . import Backend, available_backends, make_codec
from .events import Body, RequestHeaders, ResponseHeaders

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
BODY = b"x" * 100
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 01:29:16 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + BODY)


def cost(backend: Backend, n: int) -> tuple[float, float]:
    server, client = make_codec(backend, "server"), make_codec(backend, "client")
    clock = time.perf_counter
    ts = tc = 0.0
    for _ in range(n):
        t0 = clock()
        [req] = server.receive(REQ)
        t1 = clock()
        assert isinstance(req, RequestHeaders)
        client.send(req)
        events = client.receive(RESP)
        t2 = clock()
        for e in events:
            if type(e) is ResponseHeaders or type(e) is Body:
                server.send(e)
        server.start_next_cycle()
        t3 = clock()
        ts += (t1 - t0) + (t3 - t2)
        tc += t2 - t1
    return ts / n * 1e6, tc / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    n = ap.parse_args().n
    print(f"{'codec':<12} {'server us':>10} {'client us':>10} {'both us':>9}  (per request, n={n})")
    for backend in available_backends():
        name: Backend = "h11" if backend == "h11" else "httptools"
        cost(name, n // 10)
        s, c = cost(name, n)
        print(f"{backend:<12} {s:>10.1f} {c:>10.1f} {s + c:>9.1f}")


if __name__ == "__main__":
    main()
