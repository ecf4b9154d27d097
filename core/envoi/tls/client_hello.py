"""A sans-IO TLS ClientHello reader: bytes in, SNI and ALPN out.

The ``tls_inspector`` listener filter peeks at the first bytes of a connection (without consuming
them) and must decide, before any TLS library sees them, whether they start a TLS handshake and
which server name and application protocols the client asks for. :func:`parse_client_hello`
looks at everything peeked so far and answers one of:

* :class:`NeedMore` - the bytes so far are a valid beginning of a ClientHello; peek again.
* :class:`NotTls` - the bytes are not a (well-formed) ClientHello; Envoy treats the connection
  as plaintext (``tls_not_found``).
* :class:`ClientHello` - a complete ClientHello, with its SNI host name, ALPN list and size.

It reads the record layer (the ClientHello may be split over several handshake records, as
large post-quantum ClientHellos are) and the handshake message, and checks the same structure
BoringSSL checks before Envoy's callbacks run: lengths that add up, an even cipher-suite list, a
compression list, no duplicate extensions, a well-formed ``server_name`` and ALPN extension.
No asyncio, no sockets: a pure function, unit-tested and fuzzed.
"""

from __future__ import annotations

from dataclasses import dataclass

RECORD_HEADER = 5
HANDSHAKE_HEADER = 4
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
MAX_RECORD_PLAINTEXT = 16384  # 2^14: no plaintext record may be larger (RFC 8446 5.1)
#: BoringSSL's limit on a ClientHello message (ssl_max_handshake_message_len, server side).
MAX_CLIENT_HELLO_MESSAGE = 16384
EXT_SERVER_NAME = 0
EXT_ALPN = 16
SNI_HOST_NAME = 0


@dataclass(frozen=True)
class NeedMore:
    """The bytes so far are a valid prefix; ``at_least`` is how many bytes the next step needs."""

    at_least: int


@dataclass(frozen=True)
class NotTls:
    """Not a ClientHello; ``reason`` says why (for logs and tests)."""

    reason: str


@dataclass(frozen=True)
class ClientHello:
    """A complete ClientHello. ``size`` counts the record bytes it took, headers included."""

    server_name: str
    alpn: tuple[str, ...]
    size: int
    legacy_version: int


ParseResult = NeedMore | NotTls | ClientHello


class _Malformed(Exception):
    pass


def _reassemble(data: bytes) -> tuple[bytes, int] | NeedMore | NotTls:
    """The handshake message bytes from the records in ``data``: (message, bytes consumed), or
    NeedMore / NotTls. Stops as soon as the ClientHello message is complete."""
    pos = 0
    message = bytearray()
    needed = -1  # total handshake message length once its header is known
    while True:
        if len(data) < pos + RECORD_HEADER:
            # Check what there is of the header now, so garbage is refused early.
            head = data[pos:pos + RECORD_HEADER]
            if head and head[0] != CONTENT_HANDSHAKE:
                return NotTls("not a handshake record")
            if len(head) > 1 and head[1] != 3:
                return NotTls("record version is not 3.x")
            return NeedMore(pos + RECORD_HEADER)
        ctype, major, _minor = data[pos], data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if ctype != CONTENT_HANDSHAKE:
            return NotTls("not a handshake record")
        if major != 3:
            return NotTls("record version is not 3.x")
        if length == 0 or length > MAX_RECORD_PLAINTEXT:
            return NotTls("bad record length")
        end = pos + RECORD_HEADER + length
        chunk = data[pos + RECORD_HEADER:min(end, len(data))]
        message += chunk
        if needed < 0 and len(message) >= HANDSHAKE_HEADER:
            if message[0] != HANDSHAKE_CLIENT_HELLO:
                return NotTls("first handshake message is not a ClientHello")
            body = int.from_bytes(message[1:4], "big")
            if body > MAX_CLIENT_HELLO_MESSAGE:
                return NotTls("ClientHello message too long")
            needed = HANDSHAKE_HEADER + body
        elif needed < 0 and message and message[0] != HANDSHAKE_CLIENT_HELLO:
            return NotTls("first handshake message is not a ClientHello")
        if needed >= 0 and len(message) >= needed:
            if len(message) > needed:
                # Another handshake message after the ClientHello in the same flight: a
                # client never sends one before the server answers.
                return NotTls("data after the ClientHello")
            if len(data) < end:
                return NeedMore(end)
            return bytes(message), end
        if len(data) < end:
            return NeedMore(end)
        pos = end


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _Malformed("truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos


def _server_name(ext: bytes) -> str:
    r = _Reader(ext)
    names = _Reader(r.vec16())
    if r.left or not names.left:
        raise _Malformed("bad server_name extension")
    host = ""
    while names.left:
        kind = names.u8()
        value = names.vec16()
        if kind == SNI_HOST_NAME:
            if host or not value or b"\x00" in value:
                raise _Malformed("bad host_name")
            host = value.decode("latin-1")
    return host


def _alpn(ext: bytes) -> tuple[str, ...]:
    r = _Reader(ext)
    names = _Reader(r.vec16())
    if r.left or names.left < 2:
        raise _Malformed("bad ALPN extension")
    out = []
    while names.left:
        name = names.vec8()
        if not name:
            raise _Malformed("empty ALPN protocol name")
        out.append(name.decode("latin-1"))
    return tuple(out)


def _client_hello(message: bytes) -> tuple[int, str, tuple[str, ...]]:
    r = _Reader(message[HANDSHAKE_HEADER:])
    version = r.u16()
    if version >> 8 != 3:
        raise _Malformed("client version is not 3.x")
    r.take(32)  # random
    if len(r.vec8()) > 32:
        raise _Malformed("session id longer than 32 bytes")
    suites = r.vec16()
    if not suites or len(suites) % 2:
        raise _Malformed("bad cipher_suites")
    if not r.vec8():
        raise _Malformed("no compression methods")
    server_name = ""
    alpn: tuple[str, ...] = ()
    if r.left:
        exts = _Reader(r.vec16())
        if r.left:
            raise _Malformed("data after the extensions")
        seen: set[int] = set()
        while exts.left:
            kind = exts.u16()
            body = exts.vec16()
            if kind in seen:
                raise _Malformed(f"duplicate extension {kind}")
            seen.add(kind)
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(body)
            elif kind == EXT_ALPN:
                alpn = _alpn(body)
    return version, server_name, alpn


def parse_client_hello(data: bytes) -> ParseResult:
    """Look at the first bytes of a connection (everything peeked so far)."""
    found = _reassemble(data)
    if not isinstance(found, tuple):
        return found
    message, size = found
    try:
        version, server_name, alpn = _client_hello(message)
    except _Malformed as exc:
        return NotTls(str(exc))
    return ClientHello(server_name, alpn, size, version)
