"""HTTP/1.1 codec on httptools (llhttp): the fast path.

llhttp parses; this module only collects what its callbacks hand over and serialises with
``framing``. Per message the Python work is: one callback per header (lower-case the name, append
the tuple), one ``HeadInfo`` pass at headers-complete, one event per head and per body piece. The
head event is built once it is known whether a body follows (``end_stream``), and the last body
piece once it is known to be the last, so a small message costs one or two events, not three.

llhttp facts this wrapper works around (httptools exposes no way to change them):
- it has no header size limit: the wrapper counts bytes fed while a head is open and gives up at
  ``max_request_headers_kb`` plus ``_HEAD_SLACK`` (the exact Envoy-style check, names + values,
  runs at headers-complete);
- a response to HEAD would wait for its Content-Length body: the wrapper cuts the head at its
  blank line itself and starts a fresh parser for the next response;
- it cannot be told about EOF: read-until-close bodies are ended by the wrapper;
- an h2c Upgrade pauses the parser like a real upgrade: the wrapper resumes on a fresh parser.
"""

from __future__ import annotations

from collections import deque

import httptools

from . import events as ev
from . import framing as fr
from .base import (
    _CL,
    _CONNECTION,
    _SPECIAL,
    _TE,
    _UPGRADE,
    ENVOY_METHODS,
    CodecLimits,
    HeadInfo,
    Http1Codec,
    Role,
    authority_and_scheme,
    check_request,
)
from .base import _get_special as _special
from .base import upgrade_token as _upgrade_token
from .events import Body, Event, Headers, RequestHeaders, ResponseHeaders

_HEAD_SLACK = 1 << 20
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_ERRORS: tuple[tuple[str, int, str], ...] = (
    ("Transfer-Encoding can't", 400, ev.CL_AND_CHUNKED),
    ("Content-Length", 400, ev.INVALID_CONTENT_LENGTH),
    ("Transfer-Encoding", 501, ev.INVALID_TRANSFER_ENCODING),
    ("chunk", 400, ev.INVALID_CHUNK_SIZE),
    ("Chunk", 400, ev.INVALID_CHUNK_SIZE),
    ("header token", 400, ev.INVALID_CHARACTERS),
    ("header value char", 400, ev.INVALID_CHARACTERS),
    ("method", 400, ev.INVALID_METHOD),
    # llhttp refuses HTTP/1.2, 3.0...; Envoy answers them as it answers HTTP/1.0 (base.py).
    ("Invalid HTTP version", 426, "low_version"),
)


# Header names as received -> lower-case (clients repeat a few spellings); bounded: clients
# choose the names.
_LOWER: dict[bytes, bytes] = {}
_LOWER_MAX = 1024
_WS = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.rstrip() strips, as ints


def _lower(name: bytes) -> bytes:
    if len(_LOWER) >= _LOWER_MAX:
        _LOWER.clear()
    low = _LOWER[name] = name.lower()
    return low


def _classify(exc: Exception) -> tuple[int, str]:
    text = str(exc)
    for needle, hint, details in _ERRORS:
        if needle in text:
            return hint, details
    return 400, ev.CODEC_ERROR


class HttptoolsCodec(Http1Codec):
    backend = "httptools"

    def __init__(self, role: Role, limits: CodecLimits) -> None:
        super().__init__(role, limits)
        self._server = role == "server"
        self._parser = self._new_parser()
        self._max_head = limits.max_request_headers_kb * 1024
        self._max_count = limits.max_headers_count
        self._feed_len = 0  # the length of the bytes being fed
        self._specials: Headers = []  # the fields of the head being parsed named in _SPECIAL
        self._v11 = False  # client: the response being parsed began a read with "HTTP/1.1 "
        self._out: list[Event] = []
        self._held: deque[Event] = deque()
        self._sink: list[Event] | deque[Event] = self._out
        self._sid = 0  # stream id of the message being parsed
        self._in_msg = self._in_head = self._tunnel = self._dead = False
        self._head_fed = 0
        self._url = b""
        self._reason = b""
        self._headers: Headers = []
        # The head event of the message being parsed, until it is known whether a body follows.
        self._head: RequestHeaders | ResponseHeaders | None = None
        self._msg_keep = True  # the message being parsed allows another one after it
        self._msg_upgrade = b""  # client: its Upgrade token
        self._may_upgrade = False  # llhttp may have seen an upgrade: ask it (a C call) at the end
        self._body: bytes | None = None  # last body piece, not yet known to be the last
        self._trailers: Headers | None = None
        self._until_close = self._interim = False
        # server: (stream id, HEAD?, HTTP/1.0?, keep-alive?, upgrade) per parsed request
        self._requests: deque[tuple[int, bool, bool, bool, bytes]] = deque()
        self._current = 1  # the request being answered
        self._done_sid = 0  # the last request whose end has been parsed
        # client: (stream id, method) per request sent and not yet answered
        self._sent: deque[tuple[int, bytes]] = deque()
        self._next_sid = 1
        self._mode = fr.NONE  # framing of the message we are sending
        self._head_buf = b""  # client: bytes of a HEAD response head not yet complete

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        if self._server:
            p = httptools.HttpRequestParser(self)
            # Envoy (balsa) takes a bare LF as a header line end; a bare CR stays an error. (llhttp
            # only relaxes the request line and chunk lines together with bare CR: not done.)
            p.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
            return p
        return httptools.HttpResponseParser(self)

    # ---- llhttp callbacks (hot path) ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_msg = self._in_head = True
        self._head_fed = 0
        self._url = self._reason = b""
        self._headers = []
        self._specials = []
        self._body = None
        if self._server:
            self._sid += 1
            # a pipelined request is held back until the current response is complete
            self._sink = self._out if self._sid == self._current else self._held
        elif self._sent:
            self._sid = self._sent[0][0]
        else:
            raise _Refused(ev.ProtocolError(
                self._sid + 1, 503, ev.UNEXPECTED_RESPONSE, "response without a request"))

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        try:  # (the lower-case form of a name seen before: no call)
            name = _LOWER[name]
        except KeyError:
            name = _lower(name)
        # llhttp strips leading whitespace only; Envoy and h11 strip both sides.
        if value and value[-1] in _WS:  # (an int test: ``bytes in bytes`` costs a TypeError)
            value = value.rstrip()
        field = (name, value)
        self._headers.append(field)
        if name in _SPECIAL:  # noted here, so the head checks need not walk every header
            self._specials.append(field)

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._headers
        if self._server:
            if not self._simple_request_head(headers):
                self._request_head(HeadInfo(headers), headers, self._version())
        else:
            self._response_head(headers)
        self._trailers = self._headers = []  # trailer fields, if any, arrive via on_header

    def _version(self) -> bytes:
        # (httptools formats a str per call: 0.2 µs, so the hot paths avoid asking.)
        v = self._parser.get_http_version()
        return _VERSIONS.get(v) or v.encode()

    def _simple_request_head(self, headers: Headers) -> bool:
        """The common request: HTTP/1.1, no framing, connection, expect or upgrade headers, and
        no check fails. Does what ``_request_head`` would do and returns True; False: not that
        case."""
        specials = self._specials
        if len(specials) != 1:
            return False
        name, authority = specials[0]
        if name != b"host":
            return False
        p = self._parser
        # Without a connection header llhttp keeps alive exactly the HTTP/1.1 requests (it
        # takes 0.9, 1.0, 1.1 and 2.0 only, and a minor version above 0 is 1.1).
        if not authority or not p.should_keep_alive():
            return False
        method: bytes = p.get_method()
        url = self._url
        if method == b"CONNECT" or method not in ENVOY_METHODS or \
                len(headers) > self._max_count:
            return False
        # Envoy's size (names + values + request line parts) is at most the bytes fed for this
        # head: counted only when those could be over the limit.
        if self._head_fed + self._feed_len > self._max_head and \
                sum(len(n) + len(v) for n, v in headers) + len(url) + len(method) > \
                self._max_head:
            return False
        version = b"1.1"
        keep = True
        sid = self._sid
        if url[:1] == b"/":
            scheme = b"http"
        else:
            authority, scheme = authority_and_scheme(url, authority)
        self._requests.append((sid, method == b"HEAD", False, keep, b""))
        self._head = RequestHeaders(sid, method, url, authority, scheme, headers, version, False,
                                    keep)
        self._msg_keep = keep
        self._may_upgrade = False  # not CONNECT, no upgrade or connection header
        return True

    def _request_head(self, info: HeadInfo, headers: Headers, version: bytes) -> None:
        p = self._parser
        method: bytes = p.get_method()
        url = self._url
        err = check_request(info, headers, method, url, version, self.limits, self._sid)
        if err is not None:
            raise _Refused(err)
        keep = p.should_keep_alive() and version == b"1.1"
        upgrade = _upgrade_token(info, method)
        authority, scheme = authority_and_scheme(url, info.authority)
        self._requests.append((self._sid, method == b"HEAD", version == b"1.0", keep, upgrade))
        self._head = RequestHeaders(self._sid, method, url, authority, scheme, headers, version,
                                    False, keep, info.expect, upgrade)
        self._msg_keep = keep
        self._may_upgrade = True

    def _response_head(self, headers: Headers) -> None:
        p = self._parser
        status = p.get_status_code()
        v11 = self._v11  # true of the first message of the read only
        self._v11 = False
        if status < 200 and status != 101:
            self._interim = True
            self._sink.append(ev.Informational(self._sid, status, headers, self._reason))
            return
        self._interim = False
        # What HeadInfo would find, for the fields a response needs (one pass, no object).
        framed = close = connection = False
        upgrade = b""
        for name, value in self._specials:
            kind = _special(name)
            if kind in (_CL, _TE):
                framed = True
            elif kind == _CONNECTION:
                connection = True
                # find, not ``in``: ``bytes in bytes`` formats and clears a TypeError first
                # (nginx says connection: keep-alive on every response)
                close = close or value.lower().find(b"close") >= 0
            elif kind == _UPGRADE:
                upgrade = value.lower()
        # As for requests (above): no connection header and kept alive by llhttp is HTTP/1.1.
        v11 = v11 or (not connection and p.should_keep_alive())
        version = b"1.1" if v11 else self._version()
        method = self._sent[0][1]
        self._until_close = (
            not framed and method != b"HEAD" and status not in (101, 204, 304)
        )
        keep = not close and version == b"1.1" and not self._until_close
        self._head = ResponseHeaders(self._sid, status, headers, self._reason, False, version,
                                     keep)
        self._msg_keep = keep
        self._msg_upgrade = upgrade
        self._may_upgrade = status == 101 or bool(upgrade)

    def _flush_head(self, end_stream: bool) -> None:
        head = self._head
        assert head is not None
        head.end_stream = end_stream
        self._sink.append(head)
        self._head = None

    def on_body(self, body: bytes) -> None:
        head = self._head
        if head is not None:  # _flush_head(False), inlined
            head.end_stream = False
            self._sink.append(head)
            self._head = None
        if self._body is not None:
            self._sink.append(Body(self._sid, self._body, False))
        self._body = body

    def on_message_complete(self) -> None:
        self._in_msg = False
        if self._interim:
            self._interim = False
            return
        if self._may_upgrade and self._parser.should_upgrade() and (
            not self._server or self._requests[-1][4] != b"h2c"
        ):
            if self._head is not None:
                self._flush_head(False)  # the tunnel follows; UpgradeRequested comes next
            return
        if self._trailers:
            self._end_message()
            return
        # _end_message() without trailers, inlined
        head = self._head
        if head is not None:
            head.end_stream = True
            self._sink.append(head)
            self._head = None
        else:
            body = self._body
            self._sink.append(Body(self._sid, body if body is not None else b"", True))
            self._body = None
        if self._server:
            self._done_sid = self._sid
        else:
            self._sent.popleft()
            if not self._msg_keep:
                self.keep_alive = False

    def _end_message(self) -> None:
        sink, sid = self._sink, self._sid
        trailers = self._trailers if self.limits.enable_trailers else None
        if trailers:
            if self._head is not None:
                self._flush_head(False)
            if self._body is not None:
                sink.append(Body(sid, self._body, False))
            sink.append(ev.Trailers(sid, trailers))
        elif self._head is not None:
            self._flush_head(True)
        else:
            sink.append(Body(sid, self._body if self._body is not None else b"", True))
        self._body = None
        if self._server:
            self._done_sid = sid
        else:
            self._sent.popleft()
            if not self._msg_keep:
                self.keep_alive = False

    # ---- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._dead:
            return []
        if self._tunnel:
            if data:
                return [Body(self._sid, data, False)]
            self._dead = True
            return [Body(self._sid, b"", True), ev.ConnectionClosed(self._sid)]
        if not data:
            return self._eof()
        if self._server:
            self._feed(data)
        elif self._sent and self._sent[0][1] == b"HEAD":
            self._receive_head_response(data)
        else:
            # A read that starts a response tells its version (asking llhttp costs a str).
            self._v11 = not self._in_msg and data.startswith(b"HTTP/1.1 ")
            self._feed(data)
        # _drain(), inlined
        if self._head is not None and self._in_msg:
            self._flush_head(False)  # the body has not started yet: deliver the head now
        if self._body is not None:
            self._sink.append(Body(self._sid, self._body, False))
            self._body = None
        out = self._out
        if not out:
            return out
        self._out = []
        if self._sink is out:
            self._sink = self._out
        return out

    def _feed(self, data: bytes) -> None:
        self._feed_len = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if not isinstance(refused, _Refused):
                raise
            self.protocol_error(refused.event)
        except httptools.HttpParserError as exc:
            self._fail(*_classify(exc), str(exc))
        if self._in_head and not self._dead:
            self._head_fed += len(data)
            if self._head_fed > self._max_head + _HEAD_SLACK:
                self._fail(431, ev.HEADERS_TOO_LARGE, "headers size exceeds limit")

    def _drain(self) -> list[Event]:
        if self._head is not None and self._in_msg:
            self._flush_head(False)  # the body has not started yet: deliver the head now
        if self._body is not None:
            self._sink.append(Body(self._sid, self._body, False))
            self._body = None
        out = self._out
        if not out:
            return out
        self._out = []
        if self._sink is out:
            self._sink = self._out
        return out

    def _receive_head_response(self, data: bytes) -> None:
        """llhttp cannot be told a response answers HEAD: feed it the head alone, then end the
        message ourselves and give the rest of the bytes to a fresh parser."""
        buf = self._head_buf + data
        while self._sent and self._sent[0][1] == b"HEAD" and not self._dead:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max_head + _HEAD_SLACK:
                    self._fail(503, ev.HEADERS_TOO_LARGE, "response headers too large")
                self._head_buf = buf
                return
            head, buf = buf[: end + 4], buf[end + 4 :]
            self._feed(head)
            if self._head is not None:  # a final response head: it has no body
                self._in_msg = False
                self._end_message()
                self._parser = self._new_parser()
        self._head_buf = b""
        if buf and not self._dead:
            self._feed(buf)

    def _upgraded(self, rest: bytes) -> None:
        if self._server:
            upgrade = self._requests[-1][4]
            if upgrade == b"h2c":  # served as HTTP/1.1, as Envoy does: resume parsing
                self._parser = self._new_parser()
                if rest:
                    self._feed(rest)
                return
        else:
            upgrade = self._msg_upgrade
            self._sent.popleft()
            self._mode = fr.RAW  # the request was sent whole; what follows is tunnel bytes
        self._tunnel = self._in_msg = True
        self.keep_alive = False
        self._sink.append(ev.UpgradeRequested(self._sid, upgrade, rest))

    def _eof(self) -> list[Event]:
        self.keep_alive = False
        sink = self._sink
        if self._in_msg and self._until_close and not self._in_head:
            self._in_msg = False
            self._end_message()
        elif self._in_msg or (not self._server and self._sent):
            sink.append(ev.StreamReset(self._sid if self._in_msg else self._sent[0][0],
                                       "connection_termination"))
        sink.append(ev.ConnectionClosed(self._sid))
        self._dead = True
        return self._drain()

    def _fail(self, hint: int, details: str, message: str) -> None:
        sid = self._sid if self._in_msg else self._sid + 1
        self.protocol_error(ev.ProtocolError(sid, hint, details, message))

    def protocol_error(self, event: ev.ProtocolError) -> None:
        if self._dead:
            return
        if not self._server and event.error_status_hint != 503:
            # an upstream's bad response becomes a 503 local reply, as Envoy answers
            event = ev.ProtocolError(event.stream_id, 503, event.details, event.message)
        self._dead = True
        self.keep_alive = False
        self._done_sid = event.stream_id
        self._head = None
        self._body = None
        if self._server and event.stream_id == self._current:
            self._sink = self._out
        self._sink.append(event)

    # ---- sending ---------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        t = type(event)
        if t is Body:
            if event.end_stream and self._server:  # type: ignore[union-attr]
                self._response_done()
            return fr.encode_data(self._mode, event.data, event.end_stream)  # type: ignore[union-attr]
        if t is ResponseHeaders:
            e: ResponseHeaders = event  # type: ignore[assignment]
            return self.send_response_head(e.stream_id, e.status, e.headers, e.end_stream,
                                           e.reason)
        if t is RequestHeaders:
            r: RequestHeaders = event  # type: ignore[assignment]
            return self.send_request_head(r.method, r.target, r.authority, r.scheme, r.headers,
                                          r.end_stream)
        if t is ev.Trailers:
            if self._server:
                self._response_done()
            return fr.encode_trailers(self._mode, event.headers,  # type: ignore[union-attr]
                                      self.limits.enable_trailers)
        if t is ev.Informational:
            i: ev.Informational = event  # type: ignore[assignment]
            return fr.encode_head(fr.status_line(i.status, i.reason), i.headers)
        raise TypeError(f"cannot send {t.__name__}")

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> bytes:
        if end_stream and self._server:
            self._response_done()
        return fr.encode_data(self._mode, data, end_stream)

    def send_response_head(self, stream_id: int, status: int, headers: Headers,
                           end_stream: bool, reason: bytes = b"") -> bytes:
        if self._requests:
            _, head_req, http10, keep, upgrade = self._requests[0]
        else:  # a local reply to a request that never parsed
            head_req, http10, keep, upgrade = False, False, False, b""
        if self._dead:
            keep = False
        switching = status == 101 or (upgrade == b"connect" and 200 <= status < 300)
        if upgrade and upgrade != b"h2c" and not switching:
            keep = False  # the tunnel bytes already read cannot be parsed as HTTP
        headers, self._mode, keep = fr.frame_response(
            status, headers, end_stream, head_request=head_req, peer_http10=http10,
            keep_alive=keep)
        if switching:
            self._mode = fr.RAW
        self.keep_alive = keep and self.keep_alive
        if end_stream:
            self._response_done()
        return fr.encode_head(fr.status_line(status, reason), headers)

    def send_response(self, stream_id: int, status: int, headers: Headers, data: bytes,
                      end_stream: bool) -> bytes:
        out = self.send_response_head(stream_id, status, headers, False)
        if end_stream and self._done_sid < self._current:  # _response_done(), inline
            self.keep_alive = False
        mode = self._mode
        if mode == fr.LENGTH:  # encode_data's usual case, inline
            return out + data
        tail = fr.encode_data(mode, data, end_stream)
        return out + tail if tail else out

    def _response_done(self) -> None:
        if self._done_sid < self._current:
            self.keep_alive = False  # Envoy closes when the response beats the request

    def send_request_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                          headers: Headers, end_stream: bool) -> bytes:
        sid = self._next_sid
        self._next_sid = sid + 1
        self._sent.append((sid, method))
        headers, self._mode = fr.frame_request(method, authority, headers, end_stream)
        return fr.encode_head(b"%s %s HTTP/1.1\r\n" % (method, target), headers)

    def start_next_cycle(self) -> list[Event]:
        if not self._server:
            return []
        if self._requests:
            self._requests.popleft()
        self._current += 1
        held = self._held
        out = self._out
        while held and held[0].stream_id <= self._current:
            out.append(held.popleft())
        if self._sid <= self._current:
            self._sink = out  # the rest of the request being parsed goes out directly
        # _drain(), inline
        if self._head is not None and self._in_msg:
            self._flush_head(False)  # the body has not started yet: deliver the head now
        if self._body is not None:
            self._sink.append(Body(self._sid, self._body, False))
            self._body = None
        out = self._out
        if not out:
            return out
        self._out = []
        if self._sink is out:
            self._sink = self._out
        return out

    @property
    def idle(self) -> bool:
        if self._server:
            return not self._in_msg and not self._requests
        return not self._sent


class _Refused(Exception):
    """Raised from a callback to stop llhttp; carries the event to report."""

    def __init__(self, event: ev.ProtocolError) -> None:
        super().__init__(event.details)
        self.event = event
