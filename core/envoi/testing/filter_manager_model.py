"""The model of Envoy's filter manager that :class:`envoi.testing.HttpFilterDriver` runs its
filters in: per direction, which filter holds iteration and what it holds (headers, buffered
body, trailers), resuming on ``continue_*``, and a local reply run through the encoder filters.
Also the records a driven stream leaves (:class:`Message`, :class:`LocalReply`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpStreamInfo,
    ModifyHeaders,
)
from envoi.http.headers import HeaderMap

HeadersLike = HeaderMap | Mapping[str, str] | Iterable[tuple[str, str]] | None


@dataclass
class LocalReply:
    """What a filter answered with ``send_local_reply``."""

    status: int
    body: bytes
    headers: dict[str, str]
    details: str


@dataclass
class Message:
    """One direction as it left the filters: headers, body, trailers and whether it ended."""

    headers: HeaderMap | None = None
    body: bytes = b""
    trailers: HeaderMap | None = None
    end_stream: bool = False
    chunks: list[bytes] = field(default_factory=list)


def to_header_map(headers: HeadersLike, **pseudo: str | int) -> HeaderMap:
    """A HeaderMap from a mapping or pairs (``:method`` etc. allowed), plus pseudo-headers."""
    if isinstance(headers, HeaderMap):
        hm = headers
    else:
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        hm = HeaderMap.from_pairs([(k, v) for k, v in pairs])
    for name, value in pseudo.items():
        if value and not hm.get(f":{name}"):
            hm.add(f":{name}", str(value))
    return hm


class Direction:
    """Iteration state of one path (decode or encode) over its filters."""

    def __init__(self, filters: list[Any], decode: bool) -> None:
        self.filters = filters
        self.decode = decode
        self.stopped = -1  # index of the filter holding iteration; -1 when none
        self.stop_all = False  # the stopped filter does not see body data either
        self.headers: HeaderMap | None = None
        self.headers_pending = False
        self.end = False
        self.buffer = bytearray()
        self.trailers: HeaderMap | None = None
        self.continued = 0


class FilterManagerModel:
    """The iteration of both directions over the filters; :class:`HttpFilterDriver` is the
    rest (the public API, the callbacks)."""

    # Set by envoi.testing.http_driver.HttpFilterDriver.__init__.
    loop: asyncio.AbstractEventLoop
    request: Message
    response: Message
    local_reply: LocalReply | None
    was_reset: bool
    stream_info: HttpStreamInfo
    _tasks: list[asyncio.Task[Any]]
    _dec: Direction
    _enc: Direction

    def _run(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            result = await _settle(fn())
            await self._drain()
            return result

        return self.loop.run_until_complete(call())

    def _spawn(self, coro: Any) -> None:
        """Iteration a callback started (continue, local reply, encode from a decoder)."""
        self._tasks.append(self.loop.create_task(coro))

    async def _drain(self) -> None:
        while self._tasks:
            task = self._tasks.pop(0)
            await task

    async def _headers(self, d: Direction, hm: HeaderMap, end: bool) -> int:
        d.headers, d.end = hm, end
        return await self._iterate(d, 0, headers=True)

    async def _data(self, d: Direction, data: bytes, end: bool) -> int:
        d.end = d.end or end
        if d.stopped >= 0:
            if d.stop_all:
                d.buffer += data
                return FilterDataStatus.STOP_ITERATION_AND_BUFFER
            status = await self._call(d, d.stopped, "data", data, end)
            if isinstance(status, tuple):  # (status, the chunk as the filter changed it)
                status, data = status
            if status == FilterDataStatus.CONTINUE:
                d.buffer += data
                return await self._resume(d)
            if status != FilterDataStatus.STOP_ITERATION_NO_BUFFER:
                d.buffer += data
            return int(status)
        d.buffer += data
        return await self._iterate(d, 0, headers=False)

    async def _trailers(self, d: Direction, tm: HeaderMap) -> int:
        d.trailers, d.end = tm, True
        if d.stopped >= 0:
            if not d.stop_all:
                status = await self._call(d, d.stopped, "trailers", tm)
                if status == FilterTrailersStatus.CONTINUE:
                    return await self._resume(d)
            return FilterTrailersStatus.STOP_ITERATION
        return await self._iterate(d, 0, headers=False)

    async def _iterate(self, d: Direction, start: int, *, headers: bool) -> int:
        """Run filters from ``start`` with what is pending: headers, then buffered body, then
        trailers; stop at the first filter that stops (or at a local reply)."""
        for i in range(start, len(d.filters)):
            if headers:
                status = await self._call(d, i, "headers", d.headers, d.end and not d.buffer
                                          and d.trailers is None)
                if self._request_over(d):
                    return int(status)
                if status not in (FilterHeadersStatus.CONTINUE,
                                  FilterHeadersStatus.CONTINUE_AND_DONT_END_STREAM):
                    d.stopped, d.headers_pending = i, True
                    d.stop_all = status in (FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER,
                                            FilterHeadersStatus.STOP_ALL_ITERATION_AND_WATERMARK)
                    if not d.stop_all and d.buffer:
                        # STOP_ITERATION: the filter still sees the body already at hand (a
                        # local reply's), as the stream's filter path hands it on.
                        data, d.buffer = bytes(d.buffer), bytearray()
                        await self._data(d, data, d.end and d.trailers is None)
                    return int(status)
            if d.buffer:
                data, d.buffer = bytes(d.buffer), bytearray()
                status = await self._call(d, i, "data", data, d.end and d.trailers is None)
                if isinstance(status, tuple):  # (status, the chunk as the filter changed it)
                    status, data = status
                if self._request_over(d):
                    return int(status)
                if status != FilterDataStatus.CONTINUE:
                    d.stopped, d.stop_all, d.headers_pending = i, False, False
                    if status != FilterDataStatus.STOP_ITERATION_NO_BUFFER:
                        d.buffer[:0] = data
                    return int(status)
                d.buffer[:0] = data
            if d.trailers is not None:
                status = await self._call(d, i, "trailers", d.trailers)
                if self._request_over(d):
                    return int(status)
                if status != FilterTrailersStatus.CONTINUE:
                    d.stopped, d.stop_all, d.headers_pending = i, False, False
                    return int(status)
        self._deliver(d, headers)
        return 0

    async def _resume(self, d: Direction) -> int:
        start, headers = d.stopped + 1, d.headers_pending
        d.stopped, d.stop_all, d.headers_pending = -1, False, False
        return await self._iterate(d, start, headers=headers)

    def _deliver(self, d: Direction, headers: bool) -> None:
        out = self.request if d.decode else self.response
        if headers:
            out.headers = d.headers
        if d.buffer:
            out.chunks.append(bytes(d.buffer))
            out.body += bytes(d.buffer)
            d.buffer = bytearray()
        if d.trailers is not None:
            out.trailers = d.trailers
        out.end_stream = d.end

    def _request_over(self, d: Direction) -> bool:
        return d.decode and (self.local_reply is not None or self.was_reset)

    async def _call(self, d: Direction, i: int, what: str, *args: Any) -> Any:
        f = d.filters[i]
        name = ("decode_" if d.decode else "encode_") + what
        return await _settle(getattr(f, name)(*args))

    # -- what the callbacks do -------------------------------------------------------------------

    def _continue(self, d: Direction) -> None:
        d.continued += 1
        if d.stopped >= 0:
            self._spawn(self._resume(d))

    def _send_local_reply(self, status: int, body: bytes | str,
                          headers: dict[str, str] | None, details: str,
                          modify_headers: ModifyHeaders | None = None) -> None:
        raw = body.encode() if isinstance(body, str) else body
        self.local_reply = LocalReply(status, raw, dict(headers or {}), details)
        self.stream_info.response_code = status
        self.stream_info.response_code_details = details
        hm = to_header_map(headers or {})
        hm.status = status
        if raw:
            hm.set("content-length", str(len(raw)))
            hm.set_default("content-type", "text/plain")
        if modify_headers is not None:
            modify_headers(hm)
        enc = self._enc
        enc.headers, enc.end, enc.buffer = hm, True, bytearray(raw)
        self._spawn(self._iterate(enc, 0, headers=True))


async def _settle(result: Any) -> Any:
    while asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result
