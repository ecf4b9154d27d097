"""HTTP/1.1 codec on h11: the pure-Python reference back-end.

h11 parses and serialises and keeps the exchange state (it knows a response answers HEAD, and it
PAUSES after a request until ``start_next_cycle``, which is how pipelined requests are held back
here). The wrapper translates h11's events into the shared ones, applies the shared Envoy checks
(``base.check_request``) and decides framing with ``framing`` before handing heads to h11, so the
bytes on the wire follow the same rules as the httptools back-end.
"""

from __future__ import annotations

import re
from collections import deque

import h11

from . import events as ev
from . import framing as fr
from .base import CodecLimits, HeadInfo, Http1Codec, Role, authority_and_scheme, check_request
from .base import upgrade_token as _upgrade_token
from .events import Body, Event, Headers, RequestHeaders, ResponseHeaders
from .h11_early import ChunkChecker, HeadChecker

_HEAD_SLACK = 1 << 20
# Control characters llhttp (and Envoy) refuse in values and h11 lets through.
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_ERRORS: tuple[tuple[str, str], ...] = (
    ("Content-Length", ev.INVALID_CONTENT_LENGTH),
    ("Transfer-Encoding", ev.INVALID_TRANSFER_ENCODING),
    ("chunk", ev.INVALID_CHUNK_SIZE),
    ("illegal header line", ev.INVALID_CHARACTERS),
    ("Receive buffer too long", ev.HEADERS_TOO_LARGE),
    ("Host", ev.MISSING_HOST),
)


# An HTTP/0.9-style request line (method and target, no version): Envoy answers it as it
# answers a version other than 1.1 (426, see base.check_request); h11 only calls it illegal.
_NO_VERSION_LINE = re.compile(r"^illegal request line: bytearray\(b'[A-Z]+ [^ ']+'\)$")


def _classify(exc: h11.RemoteProtocolError) -> tuple[int, str]:
    text = str(exc)
    if _NO_VERSION_LINE.match(text):
        return 426, "low_version"
    for needle, details in _ERRORS:
        if needle in text:
            return exc.error_status_hint, details
    return exc.error_status_hint, ev.CODEC_ERROR


_CL_FIELD = re.compile(rb"(?im)^content-length[ \t]*:([^\r\n]*)")


def _repeated_length(raw: bytes) -> bool:
    """More than one content-length field, or a list, in the head at the start of ``raw``."""
    end = raw.find(b"\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    fields = _CL_FIELD.findall(raw if end < 0 else raw[:end + 1])
    return len(fields) > 1 or any(b"," in v for v in fields)


def _after_head(raw: bytes) -> bytes:
    """The bytes after the head at the start of ``raw`` (LF-only line ends allowed, as h11)."""
    end = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if end < 0 or 0 <= lf < end:
        return raw[lf + 2:] if lf >= 0 else b""
    return raw[end + 4:]


class H11Codec(Http1Codec):
    backend = "h11"

    def __init__(self, role: Role, limits: CodecLimits) -> None:
        super().__init__(role, limits)
        self._server = role == "server"
        self._conn = h11.Connection(
            h11.SERVER if self._server else h11.CLIENT,
            max_incomplete_event_size=limits.max_request_headers_kb * 1024 + _HEAD_SLACK,
        )
        self._sid = 0
        self._dead = self._tunnel = self._in_msg = False
        self._head: tuple[object, ...] = ()
        self._body: bytes | None = None
        self._out: list[Event] = []
        self._mode = fr.NONE
        # server: facts about the request being answered
        self._head_req = self._http10 = False
        self._upgrade = b""
        self._req_keep = True
        self._done_sid = 0
        # client: stream ids of requests sent and not yet answered
        self._sent: deque[tuple[int, bytes]] = deque()
        self._next_sid = 1
        self._resp_upgrade = b""
        # server: what llhttp would refuse early (h11_early), and the raw bytes of the head
        # being parsed (h11 folds repeated content-length headers into one)
        self._early = HeadChecker()
        self._head_raw = b""
        self._chunks: ChunkChecker | None = None  # the chunked request body being received
        self._chunks_pending = b""  # its first bytes, read with the head

    # ---- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._dead:
            return []
        if self._tunnel:
            if data:
                return [Body(self._sid, data, False)]
            self._dead = True
            return [Body(self._sid, b"", True), ev.ConnectionClosed(self._sid)]
        conn = self._conn
        chunks = self._chunks
        if self._server and not self._in_msg:
            buffered = conn.trailing_data[0]
            if not buffered:
                # llhttp skips blank lines before a request line (RFC 9112 2.2); h11 refuses them
                data = data.lstrip(b"\r\n")
            self._head_raw = buffered + data
        elif chunks is not None and data:
            self._check_chunks(chunks, data)
        try:
            conn.receive_data(data)
        except RuntimeError:  # data after EOF: nothing more can be parsed
            return []
        self._pump()
        pending = self._chunks_pending
        if pending and self._chunks is not None:
            self._chunks_pending = b""
            self._check_chunks(self._chunks, pending)
        return self._drain()

    def _check_chunks(self, chunks: ChunkChecker, data: bytes) -> None:
        why = chunks.feed(data)
        if why is not None:
            self._chunks = None
            if self._head:
                self._flush_head(False)
            self.protocol_error(ev.ProtocolError(self._sid, 400, ev.INVALID_CHUNK_SIZE, why))

    def _drain(self) -> list[Event]:
        if self._head and self._in_msg:
            self._flush_head(False)
        if self._body is not None:
            self._out.append(Body(self._sid, self._body, False))
            self._body = None
        out, self._out = self._out, []
        return out

    def _pump(self) -> None:
        conn = self._conn
        while not self._dead:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._remote_error(exc)
                return
            t = type(event)
            if t is h11.Data:
                if self._head:
                    self._flush_head(False)
                if self._body is not None:
                    self._out.append(Body(self._sid, self._body, False))
                self._body = bytes(event.data)
            elif t is h11.Request:
                self._on_request(event)
            elif t is h11.Response:
                self._on_response(event)
            elif t is h11.EndOfMessage:
                self._end_message(list(event.headers))
            elif t is h11.InformationalResponse:
                self._on_informational(event)
            elif t is h11.ConnectionClosed:
                self.keep_alive = False
                if not self._server and self._sent:
                    self._out.append(ev.StreamReset(self._sent[0][0], "connection_termination"))
                self._out.append(ev.ConnectionClosed(self._sid))
                self._dead = True
                return
            elif event is h11.PAUSED:
                self._paused()
                return
            else:  # NEED_DATA
                if self._server and not self._in_msg:
                    buf = conn.trailing_data[0]
                    why = self._early.problem(buf) if buf else None
                    if why is not None:  # h11 would wait for bytes that cannot help (h11_early)
                        details = ev.INVALID_METHOD if why == "invalid method" else ev.CODEC_ERROR
                        self.protocol_error(ev.ProtocolError(self._sid + 1, 400, details, why))
                return

    def _on_request(self, e: h11.Request) -> None:
        self._sid += 1
        self._in_msg = True
        headers: Headers = list(e.headers)
        info = HeadInfo(headers)
        version = bytes(e.http_version)
        method, target = bytes(e.method), bytes(e.target)
        self._early.reset()
        self._chunks = None
        if info.te is not None:  # follow its chunk sizes from the first bytes after the head
            self._chunks = ChunkChecker()
            self._chunks_pending = _after_head(self._head_raw)
        err = check_request(info, headers, method, target, version, self.limits, self._sid)
        if err is None and _CTL.search(b"\t".join([v for _, v in headers])):
            err = ev.ProtocolError(self._sid, 400, ev.INVALID_CHARACTERS, "invalid header value")
        if err is None and info.content_length is not None and _repeated_length(self._head_raw):
            # h11 folds "Content-Length: 5" twice, or "5, 5", into one; Envoy refuses both
            err = ev.ProtocolError(self._sid, 400, ev.INVALID_CONTENT_LENGTH,
                                   "repeated content-length")
        if err is not None:
            self.protocol_error(err)
            return
        self._req_keep = keep = version == b"1.1" and not info.close
        self._head_req, self._http10 = method == b"HEAD", version == b"1.0"
        self._upgrade = upgrade = _upgrade_token(info, method)
        authority, scheme = authority_and_scheme(target, info.authority)
        self._head = (self._sid, method, target, authority, scheme, headers, version,
                      keep, info.expect, upgrade)

    def _on_response(self, e: h11.Response) -> None:
        self._sid = self._sent[0][0]
        self._in_msg = True
        headers: Headers = list(e.headers)
        info = HeadInfo(headers)
        version = bytes(e.http_version)
        keep = version == b"1.1" and not info.close
        self._head = (self._sid, e.status_code, headers, bytes(e.reason), version, keep)

    def _on_informational(self, e: h11.InformationalResponse) -> None:
        sid = self._sent[0][0] if self._sent else self._sid
        headers: Headers = list(e.headers)
        if e.status_code != 101:
            self._out.append(ev.Informational(sid, e.status_code, headers, bytes(e.reason)))
            return
        self._sid = sid
        self._resp_upgrade = HeadInfo(headers).upgrade
        self._out.append(ResponseHeaders(sid, 101, headers, bytes(e.reason), False,
                                         bytes(e.http_version), False))

    def _flush_head(self, end_stream: bool) -> None:
        a = self._head
        if self._server:
            self._out.append(RequestHeaders(
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], end_stream,  # type: ignore[arg-type]
                a[7], a[8], a[9]))  # type: ignore[arg-type]
        else:
            self._out.append(ResponseHeaders(
                a[0], a[1], a[2], a[3], end_stream, a[4], a[5]))  # type: ignore[arg-type]
        self._head = ()

    def _end_message(self, trailers: Headers) -> None:
        out, sid = self._out, self._sid
        self._in_msg = False
        if self._server and self._upgrade and self._upgrade != b"h2c":
            if self._head:
                self._flush_head(False)  # the tunnel follows: see _paused
            return
        if trailers and self.limits.enable_trailers:
            if self._head:
                self._flush_head(False)
            if self._body is not None:
                out.append(Body(sid, self._body, False))
            out.append(ev.Trailers(sid, trailers))
        elif self._head:
            keep = self._head[-1]
            self._flush_head(True)
            if not self._server and not keep:
                self.keep_alive = False
        else:
            out.append(Body(sid, self._body if self._body is not None else b"", True))
        self._body = None
        if self._server:
            self._done_sid = sid
        else:
            self._response_complete()

    def _response_complete(self) -> None:
        self._sent.popleft()
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the upstream closes, or answered before our request body was sent
            self.keep_alive = False

    def _paused(self) -> None:
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:  # client: the 101 arrived
            self._sent.popleft()
            self._upgraded(self._resp_upgrade)
        elif conn.their_state is h11.MIGHT_SWITCH_PROTOCOL and self._upgrade not in (b"", b"h2c"):
            self._done_sid = self._sid
            self._upgraded(self._upgrade)

    def _upgraded(self, protocol: bytes) -> None:
        self._tunnel = self._in_msg = True
        self.keep_alive = False
        if not self._server:
            self._mode = fr.RAW  # the request was sent whole; what follows is tunnel bytes
        self._out.append(ev.UpgradeRequested(self._sid, protocol,
                                             bytes(self._conn.trailing_data[0])))

    def _remote_error(self, exc: h11.RemoteProtocolError) -> None:
        closed = self._conn.trailing_data[1]
        if closed and self._server and not self._in_msg:
            # The client left in the middle of a head: a close, not a bad request (as llhttp;
            # the HCM counts the request it began as reset).
            self.keep_alive = False
            self._dead = True
            self._out.append(ev.ConnectionClosed(self._sid))
            return
        if closed and (self._in_msg or (not self._server and self._sent)):
            sid = self._sid if self._in_msg else self._sent[0][0]
            self.keep_alive = False
            self._dead = True
            self._head = ()
            self._out.append(ev.StreamReset(sid, "connection_termination"))
            self._out.append(ev.ConnectionClosed(self._sid))
            return
        hint, details = _classify(exc)
        sid = self._sid if self._in_msg or not self._server else self._sid + 1
        self.protocol_error(ev.ProtocolError(sid, hint, details, str(exc)))

    def protocol_error(self, event: ev.ProtocolError) -> None:
        if not self._server and event.error_status_hint != 503:
            event = ev.ProtocolError(event.stream_id, 503, event.details, event.message)
        self._dead = True
        self.keep_alive = False
        self._head = ()
        self._body = None
        self._done_sid = event.stream_id
        self._out.append(event)

    # ---- sending ---------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        t = type(event)
        if t is Body:
            return self._send_data(event.data, event.end_stream)  # type: ignore[union-attr]
        if t is ResponseHeaders:
            return self._send_response(event)  # type: ignore[arg-type]
        if t is RequestHeaders:
            return self._send_request(event)  # type: ignore[arg-type]
        if t is ev.Trailers:
            trailers = event.headers  # type: ignore[union-attr]
            if self._mode == fr.RAW or self._dead:
                return fr.encode_trailers(self._mode, trailers, self.limits.enable_trailers)
            keep = self._mode == fr.CHUNKED and self.limits.enable_trailers
            out = self._conn.send(h11.EndOfMessage(headers=trailers if keep else []))
            self._sent_end()
            return out or b""
        if t is ev.Informational:
            e: ev.Informational = event  # type: ignore[assignment]
            if self._dead:
                return fr.encode_head(fr.status_line(e.status, e.reason), e.headers)
            reason = fr.reason_phrase(e.status, e.reason)
            return self._conn.send(h11.InformationalResponse(
                status_code=e.status, headers=e.headers, reason=reason)) or b""
        raise TypeError(f"cannot send {t.__name__}")

    def _send_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._mode == fr.RAW or self._dead:
            return fr.encode_data(self._mode, data, end_stream)
        out = b""
        if data and self._mode != fr.NONE:
            out = self._conn.send(h11.Data(data=data)) or b""
        if end_stream:
            out += self._conn.send(h11.EndOfMessage()) or b""
            self._sent_end()
        return out

    def _sent_end(self) -> None:
        if self._server and self._done_sid < self._sid:
            self.keep_alive = False  # the response beat the request: close, as Envoy does
        elif not self._server and self._conn.their_state is h11.DONE:
            self._response_complete_after_send()

    def _response_complete_after_send(self) -> None:
        conn = self._conn
        if conn.our_state is h11.DONE and self.keep_alive:
            conn.start_next_cycle()

    def _send_response(self, e: ResponseHeaders) -> bytes:
        upgrade = self._upgrade
        switching = e.status == 101 or (upgrade == b"connect" and 200 <= e.status < 300)
        keep = self._req_keep and not self._dead
        if upgrade and upgrade != b"h2c" and not switching:
            keep = False
        headers, self._mode, keep = fr.frame_response(
            e.status, e.headers, e.end_stream, head_request=self._head_req,
            peer_http10=self._http10, keep_alive=keep)
        self.keep_alive = keep and self.keep_alive
        if self._dead:  # h11 refuses to send after a protocol error: serialise ourselves
            out = fr.encode_head(fr.status_line(e.status, e.reason), headers)
            return out + fr.encode_data(self._mode, b"", True) if e.end_stream else out
        reason = fr.reason_phrase(e.status, e.reason)
        if e.status == 101:
            self._mode = fr.RAW
            return self._conn.send(h11.InformationalResponse(
                status_code=101, headers=headers, reason=reason)) or b""
        out = self._conn.send(h11.Response(status_code=e.status, headers=headers,
                                           reason=reason)) or b""
        if switching:
            self._mode = fr.RAW
            return out
        if e.end_stream:
            out += self._conn.send(h11.EndOfMessage()) or b""
            self._sent_end()
        return out

    def _send_request(self, e: RequestHeaders) -> bytes:
        sid = self._next_sid
        self._next_sid += 1
        self._sent.append((sid, e.method))
        headers, self._mode = fr.frame_request(e.method, e.authority, e.headers, e.end_stream)
        out = self._conn.send(h11.Request(method=e.method, target=e.target,
                                          headers=headers)) or b""
        if e.end_stream and self._mode != fr.RAW:
            out += self._conn.send(h11.EndOfMessage()) or b""
        return out

    def start_next_cycle(self) -> list[Event]:
        conn = self._conn
        if not self._server or self._dead or not self.keep_alive:
            return []
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._upgrade = b""
            self._head_raw = conn.trailing_data[0]
            self._pump()
        return self._drain()

    @property
    def idle(self) -> bool:
        if self._server:
            return not self._in_msg and self._conn.our_state is h11.IDLE
        return not self._sent
