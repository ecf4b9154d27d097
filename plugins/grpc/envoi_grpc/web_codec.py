"""gRPC-Web's wire transformations, sans-IO: the ``-text`` (base64) request decoder, the text
response encoder, and the trailer frame.

* :class:`TextDecoder`: a ``application/grpc-web-text`` request body is base64 in 4-character
  groups; chunks arrive cut anywhere, so up to 3 characters wait for the next chunk. A body may be
  several padded base64 segments one after another (one per message, as clients write them).
* :class:`TextEncoder`: a response body is encoded message by message (each message's base64
  padded on its own, as Envoy writes it) while the bytes stream past: only the up-to-2 bytes that do
  not fill a 3-byte group wait, so memory stays constant however large a message is.
* :func:`trailer_frame`: the response trailers as gRPC-Web's final frame, flag ``0x80``.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable

from envoi_grpc.framing import FLAG_TRAILERS, PREFIX_SIZE, prefix


class Base64Error(ValueError):
    """The body is not base64 (``bad_size``: it ended on a group that is not 4 characters)."""

    def __init__(self, message: str, bad_size: bool = False) -> None:
        super().__init__(message)
        self.bad_size = bad_size


def _decode_groups(text: bytes) -> bytes:
    """Whole 4-character groups; a padded group may be followed by another segment."""
    try:
        if b"=" not in text:
            return binascii.a2b_base64(text, strict_mode=True)
        out = []
        start = 0
        for pos in range(0, len(text), 4):
            if b"=" in text[pos:pos + 4]:
                out.append(binascii.a2b_base64(text[start:pos + 4], strict_mode=True))
                start = pos + 4
        if start < len(text):
            out.append(binascii.a2b_base64(text[start:], strict_mode=True))
        return b"".join(out)
    except binascii.Error as exc:
        raise Base64Error(f"invalid base64: {exc}") from None


class TextDecoder:
    """Base64 request body in, binary gRPC frames out."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""  # fewer than 4 characters waiting for the rest of their group

    def feed(self, data: bytes, end_stream: bool) -> bytes:
        """Decode what forms whole groups; raises :class:`Base64Error` on bad input, or at the
        end of the stream when characters are left over."""
        text = self._rest + data if self._rest else data
        if end_stream:
            self._rest = b""
            if len(text) % 4:
                raise Base64Error("invalid base64 data size", bad_size=True)
            return _decode_groups(text) if text else b""
        cut = len(text) - len(text) % 4
        self._rest = text[cut:]
        return _decode_groups(text[:cut]) if cut else b""

    @property
    def pending(self) -> int:
        return len(self._rest)


class TextEncoder:
    """Binary gRPC frames in, base64 out, each frame's encoding padded on its own."""

    __slots__ = ("_carry", "_head", "_left")

    def __init__(self) -> None:
        self._carry = b""  # bytes of the current frame not yet encoded (< 3 between calls)
        self._head = b""  # the current frame's prefix while it is incomplete
        self._left = -1  # payload bytes left in the current frame; -1 while reading a prefix

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pending = [self._carry] if self._carry else []
        n = len(data)
        pos = 0
        while pos < n:
            if self._left < 0:
                take = min(PREFIX_SIZE - len(self._head), n - pos)
                piece = data[pos:pos + take]
                self._head += piece
                pending.append(piece)
                pos += take
                if len(self._head) < PREFIX_SIZE:
                    break
                self._left = int.from_bytes(self._head[1:], "big")
                self._head = b""
            take = min(self._left, n - pos)
            if take:
                pending.append(data[pos:pos + take])
                pos += take
                self._left -= take
            if self._left == 0:  # the frame is complete: its base64, padded
                out.append(binascii.b2a_base64(b"".join(pending), newline=False))
                pending = []
                self._left = -1
        rest = b"".join(pending)
        cut = len(rest) - len(rest) % 3
        if cut:
            out.append(binascii.b2a_base64(rest[:cut], newline=False))
        self._carry = rest[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The stream ended: whatever a cut-short frame left, padded."""
        carry = self._carry
        self._carry = b""
        self._head = b""
        self._left = -1
        return binascii.b2a_base64(carry, newline=False) if carry else b""


def trailer_frame(trailers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """gRPC-Web's trailer frame: ``0x80``, the block's length, then ``name:value\\r\\n`` lines."""
    block = b"".join(k + b":" + v + b"\r\n" for k, v in trailers)
    return prefix(len(block), FLAG_TRAILERS) + block


def encode_text(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)
