"""CPU cost of the server side of one HTTP/2 request in the codec, no I/O (µs per request).

The loop of ../shared/bench/floors/codec_cost.py (receive a HEADERS frame on a new stream, send
HEADERS + a 100-byte DATA) with the request bytes made beforehand by an h2 client, so only the
server side is timed (process CPU time, so a busy machine inflates it less than wall time):

- ``h2 default``: the h2 library as it comes (header validation and normalisation on);
- ``h2 bare``: h2 with validation and normalisation off (what envoi runs under its codec);
- ``envoi``: envoi's H2Codec, everything it adds included (Envoy's header checks, flood
  accounting, per-stream bookkeeping, events, the HPACK memory);
- ``envoi no-memo``: the same without the HPACK memory.

``batch`` is how many requests arrive in one read (h2load -m8 sends 8). ``--grpc`` adds the
``grpc-unary`` scenario's codec work, which a proxy does on *both* sides (HEADERS + DATA in
from the client, HEADERS + DATA out to the upstream; HEADERS + DATA + trailers back in, and out
to the client; the received DATA acknowledged on both connections): ``envoi gRPC`` (envoi's
server and client H2Codec) and ``h2 bare gRPC`` (the two h2 connections alone). When the
``ngh2`` package (libnghttp2, the codec Envoy runs) is importable, ``ngh2`` rows give the same
loops on it, for comparison; envoi does not depend on it. Run:
``.venv/bin/python bench/h2_codec_cost.py [-n 8000] [--reps 3] [--grpc]``.
"""

from __future__ import annotations

import argparse
import importlib
import struct
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
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


GRPC_REQUEST = [(b":method", b"POST"), (b":scheme", b"http"),
                (b":path", b"/envoi.bench.Greeter/SayHello"), (b":authority", b"127.0.0.1:8080"),
                (b"te", b"trailers"), (b"content-type", b"application/grpc"),
                (b"user-agent", b"h2load nghttp2/1.52.0")]
GRPC_HEAD = [(b"content-type", b"application/grpc")]
GRPC_TRAILERS = [(b"grpc-status", b"0")]
GRPC_MSG = b"\0\0\0\0\x07\x0a\x05bench"
GRPC_REPLY = b"\0\0\0\0\x0d\x0a\x0bhello bench"
BIG = (1 << 31) - 1
_BARE = {"header_encoding": None, "validate_outbound_headers": False,
         "normalize_outbound_headers": False, "split_outbound_cookies": False,
         "validate_inbound_headers": False, "normalize_inbound_headers": False}


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + \
        struct.pack(">I", sid) + payload


def grpc_peers(n: int, batch: int) -> tuple[bytes, list[bytes], bytes, list[bytes]]:
    """The gRPC client's preface and n calls (HEADERS + DATA each), ``batch`` per read; the
    upstream's preface and its answers to streams 1, 3, 5... (HEADERS, DATA, trailers), one
    read per batch. The upstream writes never-indexed literals: the same bytes every time."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: BIG})
    client.initiate_connection()
    client.increment_flow_control_window(BIG - 65535)
    hello = client.data_to_send()
    # (the client never hears envoi's SETTINGS: it must not wait for its 64 KiB windows)
    client.update_settings({})
    client.clear_outbound_data_buffer()
    enc = hpack.Encoder()
    head = enc.encode([hpack.NeverIndexedHeaderTuple(k, v)
                       for k, v in [(b":status", b"200"), *GRPC_HEAD]])
    trailers = enc.encode([hpack.NeverIndexedHeaderTuple(*GRPC_TRAILERS[0])])
    reads, answers = [], []
    up_sid = 1
    down = hpack.Encoder()
    down_sid = 1
    for _ in range(n // batch):
        chunk, answer = [], []
        for _ in range(batch):
            chunk.append(_frame(1, 0x4, down_sid, down.encode(GRPC_REQUEST)))
            chunk.append(_frame(0, 0x1, down_sid, GRPC_MSG))
            down_sid += 2
            answer += [_frame(1, 0x4, up_sid, head), _frame(0, 0, up_sid, GRPC_REPLY),
                       _frame(1, 0x5, up_sid, trailers)]
            up_sid += 2
        reads.append(b"".join(chunk))
        answers.append(b"".join(answer))
    settings = _frame(4, 0, 0, struct.pack(">HI", 4, BIG)) + \
        _frame(8, 0, 0, struct.pack(">I", BIG - 65535))
    return hello, reads, settings + _frame(4, 1, 0, b""), answers


def envoi_grpc_cost(n: int, batch: int) -> float:
    """Both of envoi's codecs for ``n`` gRPC unary calls (what the proxy's HCM and upstream
    pool hand them, without the HCM and the router)."""
    server, client = H2Codec("server"), H2Codec("client")
    hello, reads, up_hello, answers = grpc_peers(n, batch)
    server.receive(hello + _frame(4, 1, 0, b""))
    server.data_to_send()
    client.receive(up_hello)
    client.data_to_send()
    t0 = time.process_time()
    for data, answer in zip(reads, answers, strict=True):
        up: dict[int, int] = {}
        for e in server.receive(data):
            t = type(e)
            if t is ev.RequestHeaders:
                up[e.stream_id] = client.send_request_head(
                    e.method, e.target, e.authority, e.scheme,
                    e.headers, False)
            elif t is ev.Body:
                client.send_data(up[e.stream_id], e.data, e.end_stream)
                server.acknowledge(e.stream_id, len(e.data))
        client.data_to_send()
        client.transport_buffered(0)
        down = {v: k for k, v in up.items()}
        for e in client.receive(answer):
            t = type(e)
            sid = down[e.stream_id]
            if t is ev.ResponseHeaders:
                server.send_response_head(sid, e.status, e.headers, False)
            elif t is ev.Body:
                server.send_data(sid, e.data, False)
                client.acknowledge(e.stream_id, len(e.data))
            elif t is ev.Trailers:
                server.send_trailers(sid, e.headers)
        server.data_to_send()
        server.transport_buffered(0)
        client.data_to_send()
    assert server.open_streams == 0 and client.open_streams == 0
    return (time.process_time() - t0) / n * 1e6


def h2_grpc_cost(n: int, batch: int) -> float:
    """The same loop on two bare h2 connections (envoi's h2 settings, none of its code)."""
    def conn(client: bool) -> Any:
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client, **_BARE))
        c.local_settings = h2.settings.Settings(
            client=client, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: BIG})
        c.initiate_connection()
        c.increment_flow_control_window(BIG - 65535)
        c.clear_outbound_data_buffer()
        return c
    server, client = conn(False), conn(True)
    hello, reads, up_hello, answers = grpc_peers(n, batch)
    server.receive_data(hello + _frame(4, 1, 0, b""))
    client.receive_data(up_hello)
    server.data_to_send()
    client.data_to_send()
    he = h2.events
    t0 = time.process_time()
    for data, answer in zip(reads, answers, strict=True):
        up: dict[int, int] = {}
        for e in server.receive_data(data):
            t = type(e)
            if t is he.RequestReceived:
                sid = up[e.stream_id] = client.get_next_available_stream_id()
                client.send_headers(sid, e.headers)
            elif t is he.DataReceived:
                client.send_data(up[e.stream_id], e.data, end_stream=True)
                server.acknowledge_received_data(len(e.data), e.stream_id)
        client.data_to_send()
        down = {v: k for k, v in up.items()}
        head = [(b":status", b"200"), *GRPC_HEAD]
        for e in client.receive_data(answer):
            t = type(e)
            if t is he.ResponseReceived:
                server.send_headers(down[e.stream_id], head)
            elif t is he.DataReceived:
                server.send_data(down[e.stream_id], e.data)
                client.acknowledge_received_data(len(e.data), e.stream_id)
            elif t is he.TrailersReceived:
                server.send_headers(down[e.stream_id], GRPC_TRAILERS, end_stream=True)
        server.data_to_send()
        client.data_to_send()
    return (time.process_time() - t0) / n * 1e6


def ngh2_cost(ngh2: Any, n: int, batch: int) -> float:
    """h2-small's server side on ngh2 (manual flow control, as envoi needs it)."""
    ne = importlib.import_module("ngh2.events")
    server = ngh2.Connection(ngh2.Role.SERVER, ngh2.config.Configuration(auto_window_update=False))
    server.initiate_connection()
    hello, reads = client_reads(n, batch)
    server.receive_data(hello)
    server.events()
    server.data_to_send()
    head = [(b":status", b"200"), *RESPONSE]
    t0 = time.process_time()
    for data in reads:
        server.receive_data(data)
        for e in server.events():
            if type(e) is ne.RequestReceived:
                server.send_response(e.stream_id, head)
                server.send_data(e.stream_id, BODY, end_stream=True)
        server.data_to_send()
    return (time.process_time() - t0) / n * 1e6


def ngh2_grpc_cost(ngh2: Any, n: int, batch: int) -> float:
    """``h2_grpc_cost``'s loop on two ngh2 connections."""
    ne = importlib.import_module("ngh2.events")
    cfg = ngh2.config.Configuration(auto_window_update=False)
    server, client = ngh2.Connection(ngh2.Role.SERVER, cfg), ngh2.Connection(ngh2.Role.CLIENT, cfg)
    for c in (server, client):
        c.initiate_connection({4: BIG})
    hello, reads, up_hello, answers = grpc_peers(n, batch)
    server.receive_data(hello + _frame(4, 1, 0, b""))
    client.receive_data(up_hello)
    for c in (server, client):
        c.events()
        c.data_to_send()
    head = [(b":status", b"200"), *GRPC_HEAD]
    done = 0
    t0 = time.process_time()
    for data, answer in zip(reads, answers, strict=True):
        up: dict[int, int] = {}
        server.receive_data(data)
        for e in server.events():
            t = type(e)
            if t is ne.RequestReceived:
                up[e.stream_id] = client.send_request(e.headers)
            elif t is ne.DataReceived:
                client.send_data(up[e.stream_id], e.data, end_stream=True)
                server.acknowledge_received_data(len(e.data), e.stream_id)
        client.data_to_send()
        down = {v: k for k, v in up.items()}
        client.receive_data(answer)
        for e in client.events():
            t = type(e)
            if t is ne.ResponseReceived:
                server.send_response(down[e.stream_id], head)
            elif t is ne.DataReceived:
                server.send_data(down[e.stream_id], e.data)
                client.acknowledge_received_data(len(e.data), e.stream_id)
            elif t is ne.TrailersReceived:
                server.send_trailers(down[e.stream_id], GRPC_TRAILERS)
                done += 1
        server.data_to_send()
        client.data_to_send()
    assert done == n // batch * batch, done
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--grpc", action="store_true", help="add the gRPC unary rows (both sides)")
    args = ap.parse_args()
    rows: list[tuple[str, Callable[[int, int], float]]] = [
        ("h2 default", lambda n, b: h2_cost(True, n, b)),
        ("h2 bare", lambda n, b: h2_cost(False, n, b)),
        ("envoi", lambda n, b: envoi_cost(True, n, b)),
        ("envoi no-memo", lambda n, b: envoi_cost(False, n, b)),
    ]
    try:
        ngh2: Any = importlib.import_module("ngh2")
    except ImportError:
        ngh2 = None
    if ngh2 is not None:
        rows.append(("ngh2", lambda n, b: ngh2_cost(ngh2, n, b)))
    if args.grpc:
        rows += [("envoi gRPC", envoi_grpc_cost), ("h2 bare gRPC", h2_grpc_cost)]
        if ngh2 is not None:
            rows.append(("ngh2 gRPC", lambda n, b: ngh2_grpc_cost(ngh2, n, b)))
    print(f"{'codec':<14} {'batch 1':>9} {'batch 8':>9}   (CPU us per request or call, "
          f"min of {args.reps}, n={args.n}; gRPC rows: both sides)")
    for name, fn in rows:
        fn(min(args.n, 800), 8)  # warm-up
        cells = [min(fn(args.n, b) for _ in range(args.reps)) for b in (1, 8)]
        print(f"{name:<14} {cells[0]:>9.1f} {cells[1]:>9.1f}")
    if ngh2 is None:
        print("(no ngh2 rows: ngh2 is not importable; `pip install --target DIR ngh2`, then "
              "PYTHONPATH=DIR, to compare libnghttp2)")


if __name__ == "__main__":
    main()
