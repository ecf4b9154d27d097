"""Raw HTTP/2 frames for codec tests: build the bytes a peer sends (hyperframe + hpack), and
parse what the codec sends back into frames, with header blocks decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Hdrs = list[tuple[bytes, bytes]]


def request_block(path: bytes = b"/", method: bytes = b"GET", authority: bytes = b"example.com",
                  extra: Hdrs | None = None) -> Hdrs:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", authority),
            (b":path", path), *(extra or [])]


@dataclass
class Out:
    """Frames the codec wrote, parsed; ``blocks`` holds each header block decoded, in order."""

    frames: list[Frame] = field(default_factory=list)
    blocks: list[tuple[int, Hdrs]] = field(default_factory=list)

    def headers(self, sid: int) -> list[Hdrs]:
        return [b for s, b in self.blocks if s == sid]

    def types(self) -> list[str]:
        return [type(f).__name__.replace("Frame", "") for f in self.frames]

    def of(self, kind: type[Frame]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]

    def data(self, sid: int) -> bytes:
        return b"".join(f.data for f in self.of(DataFrame) if f.stream_id == sid)


class Peer:
    """The other end, speaking raw frames. ``server=True`` plays an HTTP/2 server (to test the
    client codec), else a client (to test the server codec)."""

    def __init__(self, server: bool = False) -> None:
        self.server = server
        self.enc = Encoder()
        self.dec = Decoder()
        self.dec.max_header_list_size = 1 << 24
        self.buf = b""
        self.next_sid = 2 if server else 1

    def hello(self, settings: dict[int, int] | None = None) -> bytes:
        sf = SettingsFrame(0, settings=settings or {}).serialize()
        return sf if self.server else PREFACE + sf

    def settings_ack(self) -> bytes:
        return SettingsFrame(0, flags=["ACK"]).serialize()

    def headers(self, sid: int, block: Hdrs, end_stream: bool = True, *, pad: int | None = None,
                split: int = 0) -> bytes:
        data = self.enc.encode(block)
        flags = ["END_STREAM"] if end_stream else []
        if not split:
            f = HeadersFrame(sid, data, flags=[*flags, "END_HEADERS"])
            if pad is not None:
                f.flags.add("PADDED")
                f.pad_length = pad
            return f.serialize()
        out = [HeadersFrame(sid, data[:split], flags=flags).serialize()]
        rest = data[split:]
        while rest:
            piece, rest = rest[:split], rest[split:]
            out.append(ContinuationFrame(sid, piece, flags=[] if rest else ["END_HEADERS"])
                       .serialize())
        return b"".join(out)

    def request(self, path: bytes = b"/", end_stream: bool = True, **kw: Any) -> tuple[int, bytes]:
        sid = self.next_sid
        self.next_sid += 2
        return sid, self.headers(sid, request_block(path, **kw), end_stream)

    def data(self, sid: int, payload: bytes, end_stream: bool = False,
             pad: int | None = None) -> bytes:
        f = DataFrame(sid, payload, flags=["END_STREAM"] if end_stream else [])
        if pad is not None:
            f.flags.add("PADDED")
            f.pad_length = pad
        return f.serialize()

    @staticmethod
    def rst(sid: int, code: int = 8) -> bytes:
        return RstStreamFrame(sid, error_code=code).serialize()

    @staticmethod
    def window_update(sid: int, inc: int) -> bytes:
        return WindowUpdateFrame(sid, window_increment=inc).serialize()

    @staticmethod
    def ping(ack: bool = False) -> bytes:
        return PingFrame(0, opaque_data=b"12345678", flags=["ACK"] if ack else []).serialize()

    @staticmethod
    def priority(sid: int) -> bytes:
        return PriorityFrame(sid, depends_on=0, stream_weight=15).serialize()

    @staticmethod
    def goaway(last: int, code: int = 0, debug: bytes = b"") -> bytes:
        return GoAwayFrame(0, last_stream_id=last, error_code=code,
                           additional_data=debug).serialize()

    def parse(self, data: bytes) -> Out:
        """Frames in ``data`` (plus any cut frame kept from before), header blocks decoded."""
        buf = self.buf + data if self.buf else data
        view = memoryview(buf)
        out = Out()
        block: dict[int, bytes] = {}
        pos, n = 0, len(buf)
        while n - pos >= 9:
            f, length = Frame.parse_frame_header(view[pos:pos + 9])
            if n - pos < 9 + length:
                break
            f.parse_body(view[pos + 9:pos + 9 + length])
            pos += 9 + length
            out.frames.append(f)
            if isinstance(f, (HeadersFrame, ContinuationFrame)):
                block[f.stream_id] = block.get(f.stream_id, b"") + f.data
                if "END_HEADERS" in f.flags:
                    decoded = self.dec.decode(block.pop(f.stream_id), raw=True)
                    out.blocks.append((f.stream_id, [(bytes(k), bytes(v)) for k, v in decoded]))
        self.buf = bytes(view[pos:])
        return out
