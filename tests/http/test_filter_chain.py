"""The HTTP filter-chain state machine, driven with bytes through a real HCM on a fake connection:
every status on headers, data and trailers, resuming, local replies from either path, added
data, async filters, buffer limits and filter state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    StateKey,
    StreamFilter,
)
from envoi.http.headers import HeaderMap
from hcm_driver import Hcm, Recorder, Responder, chain, request

H = FilterHeadersStatus
D = FilterDataStatus
T = FilterTrailersStatus
Log = list[tuple[str, str, Any]]


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def calls(log: Log, who: str) -> list[tuple[str, Any]]:
    return [(m, a) for n, m, a in log if n == who]


def sync(fn: Callable[[], None]) -> None:
    async def body() -> None:
        fn()

    asyncio.run(body())


# -- headers --------------------------------------------------------------------------------------


def test_continue_everywhere_passes_in_order() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log), lambda: Recorder("B", log),
                      lambda: Responder(log)))
        h.send(request(body=b"hello"))
        assert [(n, m) for n, m, _ in log if m.startswith("decode")] == [
            ("A", "decode_headers"), ("B", "decode_headers"), ("R", "decode_headers"),
            ("A", "decode_data"), ("B", "decode_data"), ("R", "decode_data")]
        # Encoders run in reverse: B before A.
        enc = [(n, m) for n, m, _ in log if m.startswith("encode")]
        assert enc == [("B", "encode_headers"), ("A", "encode_headers"),
                       ("B", "encode_data"), ("A", "encode_data")]
        [(status, _, rbody)] = h.responses()
        assert status == 200 and rbody == b"hello"
        assert ("A", "on_destroy", None) in log

    sync(body)


def test_headers_stop_iteration_filter_still_sees_body() -> None:
    holder: dict[str, Any] = {}

    def body() -> None:
        log: Log = []

        def make_a() -> Recorder:
            holder["a"] = Recorder("A", log, {"decode_headers": H.STOP_ITERATION,
                                              "decode_data": D.STOP_ITERATION_AND_BUFFER})
            return holder["a"]  # type: ignore[no-any-return]

        h = Hcm(chain(make_a, lambda: Responder(log)))
        h.send(request(body=b"abc", chunked=True))
        # A saw headers and the body; the responder saw nothing yet.
        a = calls(log, "A")
        assert a[0] == ("decode_headers", False) and a[1][0] == "decode_data"
        assert b"".join(x[0] for m, x in a if m == "decode_data") == b"abc"
        assert calls(log, "R") == []
        assert holder["a"].decoder_callbacks.decoding_buffer() == b"abc"
        holder["a"].decoder_callbacks.continue_decoding()
        r = calls(log, "R")
        assert r[0] == ("decode_headers", False)
        # The buffered body and the end of stream arrive behind the headers.
        assert b"".join(a[0] for m, a in r if m == "decode_data") == b"abc"
        assert r[-1][1][1] is True
        assert h.responses()[0][2] == b"abc"

    sync(body)


def test_headers_stop_then_data_continue_resumes_headers_and_data() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log, {"decode_headers": H.STOP_ITERATION}),
                      lambda: Responder(log)))
        h.send(request(body=b"xyz"))
        # A returned CONTINUE from decode_data: the headers go on, then the data.
        assert calls(log, "R") == [("decode_headers", False), ("decode_data", (b"xyz", True))]
        assert h.responses()[0][2] == b"xyz"

    sync(body)


def test_stop_all_iteration_and_buffer_holds_body_from_the_filter_too() -> None:
    holder: dict[str, Any] = {}

    def body() -> None:
        log: Log = []

        def make_a() -> Recorder:
            holder["a"] = Recorder("A", log, {"decode_headers": H.STOP_ALL_ITERATION_AND_BUFFER})
            return holder["a"]  # type: ignore[no-any-return]

        h = Hcm(chain(make_a, lambda: Responder(log)))
        h.send(request(body=b"one", chunked=True))
        # StopAll: not even A sees the body until it continues.
        assert calls(log, "A") == [("decode_headers", False)]
        holder["a"].decoder_callbacks.continue_decoding()
        a = calls(log, "A")
        assert a[1] == ("decode_data", (b"one", False)) or a[1][0] == "decode_data"
        assert b"".join(x[0] for m, x in a if m == "decode_data") == b"one"
        assert calls(log, "R")[0] == ("decode_headers", False)
        assert h.responses()[0][2] == b"one"

    sync(body)


def test_continue_and_dont_end_stream_gives_later_filters_an_empty_end_chunk() -> None:
    def body() -> None:
        log: Log = []
        script = {"decode_headers": H.CONTINUE_AND_DONT_END_STREAM}
        h = Hcm(chain(lambda: Recorder("A", log, script), lambda: Responder(log)))
        h.send(request(method="GET"))
        assert calls(log, "R") == [("decode_headers", False), ("decode_data", (b"", True))]
        assert h.responses()[0][0] == 200

    sync(body)


# -- data -----------------------------------------------------------------------------------------


def test_data_stop_iteration_and_buffer_accumulates_until_continue() -> None:
    def body() -> None:
        log: Log = []
        a_script = {"decode_data": [D.STOP_ITERATION_AND_BUFFER, D.STOP_ITERATION_AND_BUFFER,
                                    D.CONTINUE]}
        h = Hcm(chain(lambda: Recorder("A", log, a_script), lambda: Responder(log)))
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        h.send(b"2\r\nab\r\n")
        h.send(b"2\r\ncd\r\n")
        assert [m for m, _ in calls(log, "R")] == ["decode_headers"]
        h.send(b"2\r\nef\r\n0\r\n\r\n")
        r = [a for m, a in calls(log, "R") if m == "decode_data"]
        assert b"".join(d for d, _ in r) == b"abcdef" and r[-1][1] is True
        assert h.responses()[0][2] == b"abcdef"

    sync(body)


def test_data_stop_iteration_no_buffer_drops_data() -> None:
    def body() -> None:
        log: Log = []
        a_script = {"decode_data": [D.STOP_ITERATION_NO_BUFFER, D.CONTINUE]}
        h = Hcm(chain(lambda: Recorder("A", log, a_script), lambda: Responder(log)))
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        h.send(b"4\r\ndrop\r\n")
        h.send(b"4\r\nkeep\r\n0\r\n\r\n")
        assert h.responses()[0][2] == b"keep"

    sync(body)


def test_data_stop_no_buffer_at_end_then_continue_decoding_ends_stream() -> None:
    holder: dict[str, Any] = {}

    def body() -> None:
        log: Log = []

        def make_a() -> Recorder:
            holder["a"] = Recorder("A", log, {"decode_data": D.STOP_ITERATION_NO_BUFFER})
            return holder["a"]  # type: ignore[no-any-return]

        h = Hcm(chain(make_a, lambda: Responder(log)))
        h.send(request(body=b"gone"))
        assert h.out == b""
        holder["a"].decoder_callbacks.continue_decoding()
        r = calls(log, "R")
        assert r[-1] == ("decode_data", (b"", True))
        assert h.responses()[0][2] == b""

    sync(body)


class Upcase(StreamFilter):
    """Changes every chunk both ways: returns (status, new chunk); buffers the first request
    chunk (changed) to check that the held data is the changed one."""

    def __init__(self) -> None:
        self.n = 0

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        self.n += 1
        if self.n == 1 and not end_stream:
            return D.STOP_ITERATION_AND_BUFFER, data.upper()
        return D.CONTINUE, data.upper()

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        headers.remove("content-length")  # the body changes length
        return H.CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        return D.CONTINUE, data + b"!"


def test_data_method_may_replace_its_chunk() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(Upcase, lambda: Recorder("B", log), lambda: Responder(log)))
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        h.send(b"2\r\nab\r\n")
        h.send(b"2\r\ncd\r\n0\r\n\r\n")
        got = b"".join(a[0] for m, a in calls(log, "B") if m == "decode_data")
        assert got == b"ABCD"
        assert h.responses()[0][2] == b"ABCD!"

    sync(body)


def test_driver_applies_replaced_chunks() -> None:
    from envoi.extensions import HttpFilterFactory
    from envoi.testing import HttpFilterDriver

    class F(HttpFilterFactory):
        name = "test.upcase"

        def create_filter_factory(self, config: Any, context: Any) -> Any:
            return lambda b: b.add_filter(Upcase())

    with HttpFilterDriver(F()) as d:
        d.decode_headers({":method": "POST", ":path": "/"})
        d.decode_data(b"ab")
        d.decode_data(b"cd", end_stream=True)
        assert d.request.body == b"ABCD"
        d.encode_headers({}, status=200)
        d.encode_data(b"x", end_stream=True)
        assert d.response.body == b"x!"


def test_encoder_data_buffer_then_continue() -> None:
    def body() -> None:
        log: Log = []
        a_script = {"encode_data": [D.STOP_ITERATION_AND_BUFFER, D.STOP_ITERATION_AND_BUFFER,
                                    D.CONTINUE]}
        h = Hcm(chain(lambda: Recorder("A", log, a_script), lambda: Responder(log, chunks=3)))
        h.send(request(body=b"aabbcc"))
        [(status, _, rbody)] = h.responses()
        assert status == 200 and rbody == b"aabbcc"
        # Held until the last chunk: one data frame after the headers.
        assert h.out.count(b"\r\n6\r\naabbcc\r\n") == 1

    sync(body)


def test_encoder_headers_stop_iteration_holds_headers_until_data_continue() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log, {"encode_headers": H.STOP_ITERATION}),
                      lambda: Responder(log, chunks=2)))
        h.send(request(body=b"wxyz"))
        assert h.responses()[0][2] == b"wxyz"

    sync(body)


# -- trailers -------------------------------------------------------------------------------------


def test_trailers_stop_iteration_then_continue() -> None:
    holder: dict[str, Any] = {}

    def body() -> None:
        log: Log = []

        def make_a() -> Recorder:
            holder["a"] = Recorder("A", log, {"decode_trailers": T.STOP_ITERATION})
            return holder["a"]  # type: ignore[no-any-return]

        h = Hcm(chain(make_a, lambda: Responder(log)))
        h.send(request(body=b"tt", chunked=True, trailers=b"x-t: 1\r\n"))
        assert ("R", "decode_data", (b"tt", False)) in log
        assert ("R", "decode_trailers", "1") not in log
        holder["a"].decoder_callbacks.continue_decoding()
        assert ("R", "decode_trailers", "1") in log
        assert h.responses()[0][2] == b"tt"

    sync(body)


def test_trailers_held_behind_buffered_data() -> None:
    holder: dict[str, Any] = {}

    def body() -> None:
        log: Log = []

        def make_a() -> Recorder:
            holder["a"] = Recorder("A", log, {"decode_data": D.STOP_ITERATION_AND_BUFFER,
                                              "decode_trailers": T.STOP_ITERATION})
            return holder["a"]  # type: ignore[no-any-return]

        h = Hcm(chain(make_a, lambda: Responder(log)))
        h.send(request(body=b"data", chunked=True, trailers=b"x-t: 2\r\n"))
        assert calls(log, "A")[-1] == ("decode_trailers", "2")
        holder["a"].decoder_callbacks.continue_decoding()
        r = calls(log, "R")
        assert r == [("decode_headers", False), ("decode_data", (b"data", False)),
                     ("decode_trailers", "2")]

    sync(body)


def test_trailers_continue_from_a_data_stopped_filter_resumes() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log, {"decode_data": D.STOP_ITERATION_AND_BUFFER}),
                      lambda: Responder(log)))
        h.send(request(body=b"data", chunked=True, trailers=b"x-t: 3\r\n"))
        # Continue from decode_trailers releases the buffered body, then the trailers (Envoy).
        assert calls(log, "R")[1:] == [("decode_data", (b"data", False)), ("decode_trailers", "3")]

    sync(body)


def test_response_trailers_pass_encoders() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log), lambda: Responder(log, trailers={"x-t": "9"})))
        h.send(request(body=b"q"))
        assert ("A", "encode_trailers", "9") in log
        assert h.out.endswith(b"0\r\nx-t: 9\r\n\r\n")

    sync(body)


# -- local replies --------------------------------------------------------------------------------


class LocalReplyOnHeaders(StreamFilter):
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.decoder_callbacks.send_local_reply(403, b"denied", {"x-why": "test"}, "denied")
        return H.STOP_ITERATION


def test_local_reply_before_request_end_closes_connection() -> None:
    def body() -> None:
        h = Hcm(chain(LocalReplyOnHeaders, Responder))
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        [(status, hdrs, _)] = h.responses()
        # Envoy: a response before the request is complete ends an HTTP/1 connection.
        assert status == 403 and hdrs["connection"] == "close"
        assert h.stat("downstream_rq_response_before_rq_complete") == 1
        assert h.driver.transport.closed

    sync(body)


def test_send_local_reply_from_decoder_skips_later_decoders_runs_encoders() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log), LocalReplyOnHeaders, lambda: Responder(log)))
        h.send(request(method="GET"))
        [(status, hdrs, rbody)] = h.responses()
        assert status == 403 and rbody == b"denied" and hdrs["x-why"] == "test"
        assert calls(log, "R") == []
        # Filters before the replying one encode the reply (Envoy: the whole encoder chain).
        assert ("A", "encode_headers", False) in log
        assert h.stat("downstream_rq_4xx") == 1
        # The connection is still usable.
        h.send(request(method="GET"))
        assert [r[0] for r in h.responses()] == [403, 403]

    sync(body)


class LocalReplyOnEncode(StreamFilter):
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if headers.status == 200:
            self.encoder_callbacks.send_local_reply(502, b"rewritten", details="enc")
            return H.STOP_ITERATION
        return H.CONTINUE


def test_send_local_reply_from_encoder() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(lambda: Recorder("A", log), LocalReplyOnEncode, lambda: Responder(log)))
        h.send(request(body=b"orig"))
        [(status, _, rbody)] = h.responses()
        assert status == 502 and rbody == b"rewritten"
        assert h.stat("downstream_rq_5xx") == 1

    sync(body)


# -- add / inject data ----------------------------------------------------------------------------


class AddBodyOnHeaders(StreamFilter):
    """Adds a body to a header-only request (Envoy's addDecodedData from decodeHeaders)."""

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if end_stream:
            self.decoder_callbacks.add_decoded_data(b"added")
        return H.CONTINUE


class AddBodyOnLastData(StreamFilter):
    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        if end_stream:
            self.decoder_callbacks.add_decoded_data(b"+tail")
        return D.CONTINUE


class AddEncodedOnLastData(StreamFilter):
    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        if end_stream:
            self.encoder_callbacks.add_encoded_data(b"!")
        return D.CONTINUE


def test_add_decoded_data_from_headers_only_request() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(AddBodyOnHeaders, lambda: Responder(log)))
        h.send(request(method="GET"))
        assert calls(log, "R") == [("decode_headers", False), ("decode_data", (b"added", True))]
        assert h.responses()[0][2] == b"added"

    sync(body)


def test_add_decoded_data_on_last_chunk_while_streaming() -> None:
    def body() -> None:
        h = Hcm(chain(AddBodyOnLastData, Responder))
        h.send(request(body=b"body"))
        assert h.responses()[0][2] == b"body+tail"

    sync(body)


def test_add_encoded_data_on_last_chunk() -> None:
    def body() -> None:
        h = Hcm(chain(AddEncodedOnLastData, lambda: Responder(chunks=2)))
        h.send(request(body=b"resp"))
        assert h.responses()[0][2] == b"resp!"

    sync(body)


# -- async filters --------------------------------------------------------------------------------


class AsyncGate(StreamFilter):
    """``async def decode_headers`` that waits for an event (an auth call, say)."""

    def __init__(self, gate: asyncio.Event, verdict: dict[str, Any]) -> None:
        self.gate = gate
        self.verdict = verdict

    async def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        await self.gate.wait()
        if self.verdict.get("deny"):
            self.decoder_callbacks.send_local_reply(401, b"no", details="denied")
            return H.STOP_ITERATION
        headers.add("x-authed", "1")
        return H.CONTINUE


class SeeHeaders(Responder):
    seen: list[str | None] = []

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        SeeHeaders.seen.append(headers.get("x-authed"))
        return super().decode_headers(headers, end_stream)


def test_async_filter_holds_its_stream_not_others() -> None:
    async def body() -> None:
        gate = asyncio.Event()
        SeeHeaders.seen = []
        slow = Hcm(chain(lambda: AsyncGate(gate, {}), SeeHeaders))
        fast = Hcm(chain(SeeHeaders))
        slow.send(request(body=b"while-waiting"))
        fast.send(request(body=b"quick"))
        # The other connection is answered while the async filter awaits.
        assert fast.responses()[0][2] == b"quick"
        assert slow.out == b""
        await asyncio.sleep(0)
        assert slow.out == b""
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        [(status, _, rbody)] = slow.responses()
        # The body that arrived while the task ran was held, then delivered in order.
        assert status == 200 and rbody == b"while-waiting"
        assert SeeHeaders.seen == [None, "1"]

    run(body)


def test_async_filter_local_reply() -> None:
    async def body() -> None:
        gate = asyncio.Event()
        h = Hcm(chain(lambda: AsyncGate(gate, {"deny": True}), Responder))
        h.send(request(body=b"x"))
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert h.responses()[0][:1] == (401,)
        assert h.responses()[0][2] == b"no"

    run(body)


class AsyncData(StreamFilter):
    async def decode_data(self, data: bytes, end_stream: bool) -> Any:
        await asyncio.sleep(0.001)
        return D.CONTINUE


class AsyncFails(StreamFilter):
    async def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("boom")


def test_async_decode_data_keeps_order() -> None:
    async def body() -> None:
        h = Hcm(chain(AsyncData, Responder))
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"a", b"b", b"c"):
            h.send(b"1\r\n" + piece + b"\r\n")
            await asyncio.sleep(0)
        h.send(b"0\r\n\r\n")
        for _ in range(100):
            if h.out:
                break
            await asyncio.sleep(0.002)
        assert h.responses()[0][2] == b"abc"

    run(body)


def test_async_filter_exception_is_500() -> None:
    async def body() -> None:
        h = Hcm(chain(AsyncFails, Responder))
        h.send(request(method="GET"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert h.responses()[0][0] == 500

    run(body)


# -- buffer limits --------------------------------------------------------------------------------


class StopAll(StreamFilter):
    """Holds everything from the request headers on and never continues (only the limit ends
    the stream)."""

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        return H.CONTINUE if end_stream else H.STOP_ALL_ITERATION_AND_BUFFER


class BufferBody(StreamFilter):
    """What envoy.filters.http.buffer does, on both paths: StopIteration on headers,
    StopIterationAndBuffer on data until the end, then Continue."""

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        return H.CONTINUE if end_stream else H.STOP_ITERATION

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        return D.CONTINUE if end_stream else D.STOP_ITERATION_AND_BUFFER

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        return H.CONTINUE if end_stream else H.STOP_ITERATION

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        return D.CONTINUE if end_stream else D.STOP_ITERATION_AND_BUFFER


class Upload(Responder):
    """Answers with a fixed small body, whatever the request was."""

    def _answer(self) -> None:
        self.body = bytearray(b"ok")
        super()._answer()


class Download(Responder):
    """Answers a 4000-byte body in four chunks, whatever the request was."""

    def _answer(self) -> None:
        self.body = bytearray(b"z" * 4000)
        self.chunks = 4
        super()._answer()


@pytest.mark.parametrize("buffering", [StopAll, BufferBody])
def test_request_over_buffer_limit_is_413(buffering: type[StreamFilter]) -> None:
    def body() -> None:
        h = Hcm(chain(buffering, Upload), buffer_limit=1000)
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            h.send(b"200\r\n" + b"x" * 512 + b"\r\n")
        [(status, hdrs, rbody)] = h.responses()
        assert status == 413 and rbody == b"Payload Too Large"
        assert h.out.startswith(b"HTTP/1.1 413 Payload Too Large\r\n")  # Envoy's phrase
        assert hdrs["connection"] == "close"  # the rest of the request is not read
        assert h.stat("downstream_rq_too_large") == 1

    sync(body)


def test_request_under_buffer_limit_passes_whole() -> None:
    def body() -> None:
        log: Log = []
        h = Hcm(chain(BufferBody, lambda: Responder(log)), buffer_limit=1000)
        h.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            h.send(b"12c\r\n" + b"y" * 300 + b"\r\n")
        h.send(b"0\r\n\r\n")
        assert h.responses()[0][2] == b"y" * 900
        assert calls(log, "R")[1] == ("decode_data", (b"y" * 900, True))

    sync(body)


def test_response_over_buffer_limit_is_500() -> None:
    def body() -> None:
        h = Hcm(chain(BufferBody, Download), buffer_limit=1000)
        h.send(request(body=b"small"))
        [(status, _, rbody)] = h.responses()
        assert status == 500 and rbody == b"Internal Server Error"
        assert h.stat("rs_too_large") == 1

    sync(body)


def test_streaming_without_buffering_ignores_limit() -> None:
    def body() -> None:
        h = Hcm(chain(lambda: Responder(chunks=8)), buffer_limit=1000)
        h.send(request(body=b"s" * 8000))
        assert h.responses()[0][2] == b"s" * 8000

    sync(body)


# -- filter state ---------------------------------------------------------------------------------

USER: StateKey[str] = StateKey("user")


class SetState(StreamFilter):
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.decoder_callbacks.filter_state[USER] = headers.get("x-user") or "anon"
        return H.CONTINUE


class ReadState(StreamFilter):
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        user: str | None = self.encoder_callbacks.filter_state.get(USER)
        headers.add("x-user-was", user or "")
        return H.CONTINUE


def test_filter_state_is_per_stream_and_shared_by_filters() -> None:
    def body() -> None:
        h = Hcm(chain(ReadState, SetState, Responder))
        h.send(request(method="GET", extra=b"x-user: ann\r\n"))
        h.send(request(method="GET"))
        (_, h1, _), (_, h2, _) = h.responses()
        assert h1["x-user-was"] == "ann" and h2["x-user-was"] == "anon"
        assert USER not in __import__("envoi.http.filter", fromlist=["FilterState"]).FilterState()

    sync(body)
