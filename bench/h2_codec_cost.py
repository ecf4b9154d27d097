"""CPU cost of the server side of one HTTP/2 request in the codec, no I/O (µs per request).

The loop of ../shared/bench/floors/codec_cost.py (receive a HEADERS frame on a new stream, send
HEADERS + a 100-byte DATA) with the request bytes made beforehand by an h2 client, so only the
server side is timed (process CPU time, so a busy machine inflates it less than wall time):

- ``h2 default``: the h2 library as it comes (header validation and normalisation on);
- ``h2 bare``: h2 with validation and normalisation off (what envoi runs under its codec);
- ``envoi``: envoi's H2Codec, everything it adds included (Envoy's header checks, flood
  accounting, per-stream bookkeeping, events, the HPACK memory);
- ``envoi no-memo``: the same without the HPACK memory.

``batch`` is how many requests arrive in one read (h2load -m8 sends 8). Run:
``.venv/bin/python bench/h2_codec_cost.py [-n 8000] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
from envoi_http.codec import events as ev
from envoi_http.codec.h2_codec import H2Codec

BODY = b"x" * 100
REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"),
           (":authority", "127.0.0.1:8080"), ("user-agent", "h2load nghttp2/1.52.0")]
RESPONSE = [(b"content-type", b"text/plain"), (b"content-length", b"100"),
            (b"date", b"Tue, 24 Nov 2026 01:29:16 GMT"), (b"server", b"envoy"),
            (b"x-envoy-upstream-service-time", b"0")]


def client_reads(n: int, batch: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and n requests, ``batch`` per read."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.increment_flow_control_window(2**31 - 1 - 65535)  # never waits for our ACKs
    hello = client.data_to_send()
    reads = []
    for _ in range(n // batch):
        for _ in range(batch):
            client.send_headers(client.get_next_available_stream_id(), REQUEST,
                                end_stream=True)
        reads.append(client.data_to_send())
    return hello, reads


def h2_cost(validate: bool, n: int, batch: int) -> float:
    kw = {} if validate else {"validate_outbound_headers": False,
                              "normalize_outbound_headers": False,
                              "validate_inbound_headers": False,
                              "normalize_inbound_headers": False}
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, **kw))
    server.initiate_connection()
    hello, reads = client_reads(n, batch)
    server.receive_data(hello)
    server.data_to_send()
    head = [(b":status", b"200"), *RESPONSE]
    t0 = time.process_time()
    for data in reads:
        for e in server.receive_data(data):
            if type(e) is h2.events.RequestReceived:
                server.send_headers(e.stream_id, head)
                server.send_data(e.stream_id, BODY, end_stream=True)
        server.data_to_send()
    return (time.process_time() - t0) / n * 1e6


def envoi_cost(memo: bool, n: int, batch: int) -> float:
    server = H2Codec("server", memo_hpack=memo)
    hello, reads = client_reads(n, batch)
    server.receive(hello)
    server.data_to_send()
    t0 = time.process_time()
    for data in reads:
        for e in server.receive(data):
            if type(e) is ev.RequestHeaders:
                server.send_response_head(e.stream_id, 200, RESPONSE, False)
                server.send_data(e.stream_id, BODY, True)
        server.data_to_send()
        server.transport_buffered(0)
    assert server.open_streams == 0
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, Callable[[int, int], float]]] = [
        ("h2 default", lambda n, b: h2_cost(True, n, b)),
        ("h2 bare", lambda n, b: h2_cost(False, n, b)),
        ("envoi", lambda n, b: envoi_cost(True, n, b)),
        ("envoi no-memo", lambda n, b: envoi_cost(False, n, b)),
    ]
    print(f"{'codec':<14} {'batch 1':>9} {'batch 8':>9}   (server side, CPU us per request, "
          f"min of {args.reps}, n={args.n})")
    for name, fn in rows:
        fn(min(args.n, 800), 8)  # warm-up
        cells = [min(fn(args.n, b) for _ in range(args.reps)) for b in (1, 8)]
        print(f"{name:<14} {cells[0]:>9.1f} {cells[1]:>9.1f}")


if __name__ == "__main__":
    main()
