"""One direction of a stream's filter chain: the decoder path or the encoder path.

Envoy's FilterManager iteration, reduced to one state machine used twice. The path remembers
where iteration stopped (``stop``), whether the stopped filter still sees body data
(``stop_all`` false) or not, whether the headers are still held there (``hdr_pending``), and what
is held behind it (``buf``, ``end``, ``trailers``). ``resume()`` -- ``continue_decoding`` /
``continue_encoding`` -- passes everything held on in order.

Filter methods are bound once, when the chain is built; ``async def`` methods get an adapter that
runs them as a task and holds iteration until the task's status is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    StreamDecoderFilter,
    StreamEncoderFilter,
    is_async_method,
)
from envoi.http.headers import HeaderMap


class PathStream(Protocol):
    """What a filter path needs of its stream (``stream.ActiveStream``)."""

    tasks: set[asyncio.Task[Any]]

    @property
    def buffer_limit(self) -> int: ...
    @property
    def local_complete(self) -> bool: ...
    @property
    def destroyed(self) -> bool: ...
    def buffer_over_limit(self, path: FilterPath, watermark: bool) -> None: ...
    def buffer_drained(self, path: FilterPath) -> None: ...
    def filter_raised(self, exc: BaseException, method: Any) -> None: ...
    def write_head(self, headers: HeaderMap, data: bytes | None, end: bool) -> None: ...
    def write_data(self, data: bytes, end: bool) -> None: ...
    def write_trailers(self, trailers: HeaderMap) -> None: ...

H_CONTINUE = FilterHeadersStatus.CONTINUE
H_STOP = FilterHeadersStatus.STOP_ITERATION
H_DONT_END = FilterHeadersStatus.CONTINUE_AND_DONT_END_STREAM
H_STOP_ALL_BUFFER = FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER
H_STOP_ALL_WATERMARK = FilterHeadersStatus.STOP_ALL_ITERATION_AND_WATERMARK
D_CONTINUE = FilterDataStatus.CONTINUE
D_BUFFER = FilterDataStatus.STOP_ITERATION_AND_BUFFER
D_WATERMARK = FilterDataStatus.STOP_ITERATION_AND_WATERMARK
D_NO_BUFFER = FilterDataStatus.STOP_ITERATION_NO_BUFFER
T_CONTINUE = FilterTrailersStatus.CONTINUE
_PENDING = -1  # what an async adapter returns while its task runs

Fn = Callable[..., Any]
_DECODE = ("decode_headers", "decode_data", "decode_trailers")
_ENCODE = ("encode_headers", "encode_data", "encode_trailers")
_has_async: dict[tuple[type, bool], bool] = {}
_PASS_DATA = StreamEncoderFilter.encode_data  # the base class's: passes the data on
_PASS_DECODE_DATA = StreamDecoderFilter.decode_data  # (filter class, decode?) -> any async method


class FilterPath:
    __slots__ = (
        "buf",
        "data_fns",
        "data_passes",
        "decode",
        "end",
        "hdr_pending",
        "headers",
        "headers_fns",
        "seen",
        "stop",
        "stop_all",
        "stream",
        "trailers",
        "trailers_fns",
        "watermark",
    )

    def __init__(self, stream: PathStream, decode: bool) -> None:
        # The stream and its paths reference each other until the stream ends: destroy() cuts
        # the links, so refcounting frees them (not the cyclic GC, ~12 us a request under load).
        self.stream = stream
        self.decode = decode
        self.headers_fns: list[Fn] = []
        self.data_fns: list[Fn] = []
        self.trailers_fns: list[Fn] = []
        self.stop = -1
        self.stop_all = False
        self.hdr_pending = False
        self.headers: HeaderMap | None = None
        self.buf: bytearray | None = None
        self.end = False
        self.trailers: HeaderMap | None = None
        self.watermark = False
        self.seen: tuple[bytes, bool] | None = None  # the chunk an async decode_data holds
        # No filter on this path has its own data method (each passes body data on as it
        # is): the body can travel with the head (run_headers' ``data``).
        self.data_passes = True

    def add(self, f: Any) -> None:
        """Add a filter: last on the decoder path, first on the encoder path (encoders run in
        the reverse order of the chain)."""
        decode = self.decode
        key = (type(f), decode)
        has_async = _has_async.get(key)
        if has_async is None:
            has_async = _has_async[key] = any(
                is_async_method(f, name) for name in (_DECODE if decode else _ENCODE))
        if type(f).encode_data is not _PASS_DATA if not decode else \
                type(f).decode_data is not _PASS_DECODE_DATA:
            self.data_passes = False
        if not has_async:  # the common case: bind the three methods, nothing else
            if decode:
                self.headers_fns.append(f.decode_headers)
                self.data_fns.append(f.decode_data)
                self.trailers_fns.append(f.decode_trailers)
            else:
                self.headers_fns.insert(0, f.encode_headers)
                self.data_fns.insert(0, f.encode_data)
                self.trailers_fns.insert(0, f.encode_trailers)
            return
        for name, kind, lst in zip(_DECODE if decode else _ENCODE, ("h", "d", "t"),
                                   (self.headers_fns, self.data_fns, self.trailers_fns),
                                   strict=True):
            fn = getattr(f, name)
            if is_async_method(f, name):
                fn = self._adapter(fn, lst, kind)
            if decode:
                lst.append(fn)
            else:
                lst.insert(0, fn)

    # -- iteration ------------------------------------------------------------------------

    def run_headers(self, i: int, headers: HeaderMap, end: bool,
                    data: bytes | None = None, data_end: bool = False) -> bool:
        """Headers from filter ``i`` on. ``data`` (encoder path, no filter on it looks at data:
        ``data_passes``): the body bytes that follow the head, written with it when the head
        reaches the end of the path. False when iteration stopped before the end (then the
        caller hands ``data`` on as usual)."""
        self.headers = headers
        fns = self.headers_fns
        n = len(fns)
        stream = self.stream
        while i < n:
            try:
                st = fns[i](headers, end)
            except Exception as exc:  # free in 3.11 until something raises
                stream.filter_raised(exc, fns[i])
                return False
            if self.decode and stream.local_complete:
                return False
            if end and self.buf is not None and self.stop < 0:
                # The filter added a body to a headers-only message (add_decoded_data): later
                # filters see the headers without end_stream, then that body.
                added = self.take_buffer()
                if st in (H_CONTINUE, H_DONT_END):
                    self.run_headers(i + 1, headers, False)
                    if self.stop >= 0:
                        self._hold(added, True)
                    elif not (stream.local_complete and self.decode):
                        self.run_data(i + 1, added, True)
                    return False
                self.buf = bytearray(added)  # held behind the stopped headers
            if st == H_CONTINUE:
                i += 1
                continue
            if st == H_DONT_END:
                if end:
                    # Later filters see headers without end_stream, then an empty end chunk.
                    self.run_headers(i + 1, headers, False)
                    if self.stop < 0:
                        self.run_data(i + 1, b"", True)
                    return False
                i += 1
                continue
            self.stop = i
            self.hdr_pending = True
            self.end = end
            self.stop_all = st != H_STOP
            self.watermark = st == H_STOP_ALL_WATERMARK
            return False
        if not self.decode:
            if data is not None:
                stream.write_head(headers, data, data_end)
            else:
                stream.write_head(headers, None, end)
        return True

    def run_data(self, i: int, data: bytes, end: bool) -> None:
        fns = self.data_fns
        n = len(fns)
        stream = self.stream
        while i < n:
            if i == self.stop:
                if self.stop_all:
                    self._hold(data, end)
                    return
                try:
                    st = fns[i](data, end)
                except Exception as exc:
                    stream.filter_raised(exc, fns[i])
                    return
                if st.__class__ is tuple:  # (status, the chunk as the filter changed it)
                    st, data = st
                if st == _PENDING:
                    return
                if st == D_CONTINUE:
                    self._hold(data, end)
                    self.resume()
                elif st == D_NO_BUFFER:
                    self.end = self.end or end
                else:
                    self.watermark = st == D_WATERMARK
                    self._hold(data, end)
                return
            try:
                st = fns[i](data, end)
            except Exception as exc:
                stream.filter_raised(exc, fns[i])
                return
            if self.decode and stream.local_complete:
                return
            if st.__class__ is tuple:  # (status, the chunk as the filter changed it)
                st, data = st
            if st == D_CONTINUE:
                if end and self.buf is not None and self.stop < 0:
                    data = data + self.take_buffer()  # added to the last chunk
                i += 1
                continue
            if st == _PENDING:
                return
            self.stop = i
            self.stop_all = False
            self.hdr_pending = False
            if st == D_NO_BUFFER:
                self.end = end
            else:
                self.watermark = st == D_WATERMARK
                self._hold(data, end)
            return
        if not self.decode:
            stream.write_data(data, end)

    def run_trailers(self, i: int, trailers: HeaderMap) -> None:
        fns = self.trailers_fns
        n = len(fns)
        while i < n:
            if i == self.stop:
                self.trailers = trailers
                if self.stop_all:
                    return
                try:
                    st = fns[i](trailers)
                except Exception as exc:
                    self.stream.filter_raised(exc, fns[i])
                    return
                if st == T_CONTINUE:
                    self.resume()
                return
            try:
                st = fns[i](trailers)
            except Exception as exc:
                self.stream.filter_raised(exc, fns[i])
                return
            if self.decode and self.stream.local_complete:
                return
            if st == T_CONTINUE:
                if self.buf is not None and self.stop < 0:
                    # Data added from decode_trailers goes on before the trailers.
                    self.run_data(i + 1, self.take_buffer(), False)
                    if self.stop >= 0:
                        self.trailers = trailers
                        return
                i += 1
                continue
            if st == _PENDING:
                return
            self.stop = i
            self.stop_all = False
            self.hdr_pending = False
            self.trailers = trailers
            return
        if not self.decode:
            self.stream.write_trailers(trailers)

    def _hold(self, data: bytes, end: bool) -> None:
        if data:
            if self.buf is None:
                self.buf = bytearray(data)
            else:
                self.buf += data
            if len(self.buf) > self.stream.buffer_limit:
                self.stream.buffer_over_limit(self, self.watermark)
        self.end = self.end or end

    def resume(self) -> None:
        """Continue iteration after the stopped filter (``continue_decoding``)."""
        i = self.stop
        if i < 0 or self.seen is not None:
            return
        stop_all = self.stop_all
        self.stop = -1
        self.stop_all = False
        if self.watermark:
            self.watermark = False
            self.stream.buffer_drained(self)
        buf, end, trailers = self.buf, self.end, self.trailers
        self.buf, self.end, self.trailers = None, False, None
        if self.hdr_pending:
            self.hdr_pending = False
            assert self.headers is not None
            only = end and buf is None and trailers is None
            self.run_headers(i + 1, self.headers, only)
            if only:
                return
            if self.stop >= 0 or (self.decode and self.stream.local_complete):
                # Stopped again further on: what was held goes to the new stop point.
                self._reroute(self.stop, buf, end, trailers)
                return
        start = i if stop_all else i + 1
        if buf is not None or (end and trailers is None):
            self.run_data(start, bytes(buf or b""), end and trailers is None)
            if self.stop >= 0:
                if trailers is not None:
                    self.trailers = trailers
                return
        if trailers is not None:
            self.run_trailers(start, trailers)

    def _reroute(self, k: int, buf: bytearray | None, end: bool,
                 trailers: HeaderMap | None) -> None:
        if k < 0:
            return
        if buf is not None or (end and trailers is None):
            self.run_data(k, bytes(buf or b""), end and trailers is None)
        if trailers is not None:
            if self.stop >= 0:
                self.trailers = trailers
            else:
                self.run_trailers(k, trailers)

    def unlink(self) -> None:
        """The stream is over: drop the bound filter methods (they reference the filters, which
        reference the stream). New lists, not cleared ones: an iteration still running keeps
        its own."""
        self.headers_fns = []
        self.data_fns = []
        self.trailers_fns = []

    def take_buffer(self) -> bytes:
        buf = self.buf
        self.buf = None
        return bytes(buf) if buf is not None else b""

    # -- async filter methods -------------------------------------------------------------

    def _adapter(self, fn: Fn, fns: list[Fn], kind: str) -> Fn:
        def start(*args: Any) -> int:
            i = fns.index(start)  # (its place: an encoder added later goes in front of it)
            task = asyncio.get_running_loop().create_task(fn(*args))
            stream = self.stream
            if not stream.tasks:
                stream.tasks = set()  # the stream starts with a shared empty set
            stream.tasks.add(task)
            if kind == "d":
                self.seen = (args[0], args[1])
            elif kind == "h":
                self.hdr_pending = True
                self.headers = args[0]
                self.end = args[1]
            elif kind == "t":
                self.trailers = args[0]
            self.stop = i
            self.stop_all = True  # nothing reaches the filter until its status is known
            task.add_done_callback(lambda t: self._async_done(t, i, kind, fn))
            return _PENDING

        return start

    def _async_done(self, task: asyncio.Task[Any], i: int, kind: str, fn: Fn) -> None:
        stream = self.stream
        stream.tasks.discard(task)
        if task.cancelled() or stream.destroyed:
            return
        exc = task.exception()
        if exc is not None:
            stream.filter_raised(exc, fn)
            return
        if self.decode and stream.local_complete:
            return
        st = task.result()
        if kind == "h":
            if st in (H_CONTINUE, H_DONT_END):
                self.resume()
            elif st == H_STOP:
                # Now the filter sees the body: hand it what arrived while it ran.
                self.stop_all = False
                buf, end = self.buf, self.end
                self.buf, self.end = None, False
                if buf is not None or end:
                    self.run_data(i, bytes(buf or b""), end)
            else:
                self.watermark = st == H_STOP_ALL_WATERMARK
        elif kind == "t":
            if st == T_CONTINUE:
                self.stop_all = False
                self.hdr_pending = False
                self.resume()
        else:
            assert self.seen is not None
            data, end = self.seen
            self.seen = None
            if st.__class__ is tuple:
                st, data = st
            unseen, unseen_end = self.buf, self.end
            self.buf, self.end = None, False
            trailers = self.trailers
            self.trailers = None
            self.stop = -1
            self.stop_all = False
            if st == D_CONTINUE:
                self.run_data(i + 1, data, end)
            else:
                self.stop = i
                self.hdr_pending = False
                if st != D_NO_BUFFER:
                    self._hold(data, end)
            if unseen is not None or unseen_end:
                self.run_data(i, bytes(unseen or b""), unseen_end)
            if trailers is not None:
                self.run_trailers(i, trailers)

