"""What llhttp (and so Envoy) judges as the bytes arrive and h11 judges only later (or not at
all), for the h11 back-end: an incomplete request head, and the chunk-size lines of a body.

h11 waits for a whole head (the blank line) before it parses any of it, and for a whole chunk-size
line (CRLF) before it reads the size, so a client sending bytes that can never become a valid
request would hold the connection, and have its bytes buffered, until a timeout. These checks
look at what h11 has buffered while it waits and say what is already wrong, so the h11 back-end
refuses it at once, as llhttp does. They refuse only what h11 would refuse too once the message
were complete (or what Envoy refuses: an unknown method, a chunk size over 64 bits, an LF-only
chunk-size line) -- never something the full parse would accept.

The head check runs only while h11 waits with bytes buffered (a request that arrives whole never
gets here) and remembers how far it got, so a head trickling in byte by byte is checked once per
byte; the chunk check follows a chunked body's sizes, skipping over the data.
"""

from __future__ import annotations

import re

from .base import ENVOY_METHODS

# Every prefix of a method Envoy knows: a request line's first bytes must be one of them.
_METHOD_PREFIXES = frozenset(m[:i] for m in ENVOY_METHODS for i in range(len(m) + 1))
_TARGET_BAD = re.compile(rb"[\x00-\x20\x7f]")
_VERSION = b"HTTP/"
_NAME_BAD = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
# Control characters other than HTAB are refused in values (base and httptools do the same).
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HeadChecker:
    """Checks the buffered start of a request head; ``reset()`` for the next head."""

    __slots__ = ("_line_start", "_request_line_done")

    def __init__(self) -> None:
        self._line_start = 0  # where the first line not yet found complete and valid begins
        self._request_line_done = False

    def reset(self) -> None:
        self._line_start = 0
        self._request_line_done = False

    def problem(self, buf: bytes) -> str | None:
        """Why ``buf`` (the start of a head, no blank line yet) can never be a valid request,
        or None."""
        start = self._line_start
        while True:
            nl = buf.find(b"\n", start)
            line = buf[start:] if nl < 0 else buf[start:nl]
            complete = nl >= 0
            if complete and line.endswith(b"\r"):
                line = line[:-1]
            elif not complete and line.endswith(b"\r"):
                line = line[:-1]  # its LF may come next
            if not self._request_line_done:
                why = _request_line(line, complete)
            else:
                why = _header_line(line, complete)
            if why is not None or not complete:
                return why
            self._request_line_done = True
            start = self._line_start = nl + 1


def _request_line(line: bytes, complete: bool) -> str | None:
    parts = line.split(b" ")
    method = parts[0]
    if len(parts) == 1 and not complete:
        return None if method in _METHOD_PREFIXES else "invalid method"
    if method not in ENVOY_METHODS:
        return "invalid method"
    if len(parts) > 3:
        return "invalid request line"
    if len(parts) >= 2 and _TARGET_BAD.search(parts[1]):
        return "invalid target"
    if len(parts) == 3:
        version = parts[2]
        if not (_VERSION.startswith(version) or (version.startswith(_VERSION) and _digit_dot_digit(
                version[len(_VERSION):], complete))):
            return "invalid HTTP version"
    return None


def _digit_dot_digit(v: bytes, complete: bool) -> bool:
    """``v`` is ``d.d``, or (line incomplete) the start of one."""
    pattern = b"0.0"
    if len(v) > 3 or (complete and len(v) != 3):
        return False
    return all((p == 0x2E) == (c == 0x2E) and (c == 0x2E or 0x30 <= c <= 0x39)
               for p, c in zip(pattern, v, strict=False))


def _header_line(line: bytes, complete: bool) -> str | None:
    if not line or line[:1] in (b" ", b"\t"):
        return None  # the blank line (h11 decides) or an obs-fold continuation (Envoy allows)
    name, colon, value = line.partition(b":")
    if _NAME_BAD.search(name):
        return "invalid header name"
    if colon and _VALUE_BAD.search(value):
        return "invalid header value"
    if complete and not colon:
        return "header line without a colon"
    return None


class ChunkChecker:
    """Follows a chunked request body as it arrives (sizes and line ends only; h11 decodes it)
    and says what llhttp refuses and h11 would wait on or take: a chunk size over 64 bits, or
    a chunk-size line ended by LF alone. It stops at the last chunk (trailers are h11's)."""

    __slots__ = ("_left", "_line", "_state")

    def __init__(self) -> None:
        self._state = _SIZE
        self._line = b""
        self._left = 0

    def feed(self, data: bytes) -> str | None:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - i)
                i += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DATA_END:  # the line end after the data (h11 checks it)
                nl = data.find(b"\n", i)
                if nl < 0:
                    return None
                i = nl + 1
                self._state = _SIZE
            elif state == _SIZE:
                nl = data.find(b"\n", i)
                line = self._line + (data[i:] if nl < 0 else data[i:nl])
                if nl < 0:
                    self._line = line
                    return _size_problem(line, False)
                self._line = b""
                i = nl + 1
                why = _size_problem(line, True)
                if why is not None:
                    return why
                size = int(_HEX.match(line).group(), 16)  # type: ignore[union-attr]
                if not size:
                    self._state = _TRAILERS
                    return None
                self._state, self._left = _DATA, size
            else:
                return None
        return None


_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_MAX_SIZE = (1 << 64) - 1


def _size_problem(line: bytes, complete: bool) -> str | None:
    m = _HEX.match(line)
    digits = m.group() if m is not None else b""
    if len(digits.lstrip(b"0")) > 16 or (digits and int(digits, 16) > _MAX_SIZE):
        return "chunk size over 64 bits"
    rest = line[len(digits):]
    if rest[:1] not in (b"", b";", b" ", b"\t", b"\r") or (complete and not digits):
        return "invalid chunk size"
    if complete and not line.endswith(b"\r"):
        return "chunk-size line ended by LF alone"
    return None
