"""An HCM on a fake connection (``NetworkFilterDriver``), with test filters: bytes in, bytes out,
no sockets. Every helper must run inside an event loop (the HCM arms timers)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilterChainBuilder,
    StreamFilter,
)
from envoi.http.headers import HeaderMap
from envoi.stats import Store
from envoi.testing import NetworkFilterDriver
from envoi_http.hcm.config import HcmConfig
from envoi_http.hcm.connection_manager import ConnectionManager
from envoi_http.hcm.http1 import Http1Connection
from envoi_http.hcm.stats import HcmStats

Chain = Callable[[HttpFilterChainBuilder], None]


def hcm_config(chain: Chain, store: Store | None = None, **overrides: Any) -> HcmConfig:
    store = store or Store()
    cfg = HcmConfig(
        stat_prefix="test", stats=HcmStats(store.root.scope("http.test")), root=store.root,
        codec_backend="h11", auto_codec=True, use_remote_address=False, xff_num_trusted_hops=0,
        generate_request_id=False, server_name=b"envoy", max_request_headers_kb=60,
        max_headers_count=100, accept_http_10=False, stream_idle_timeout=0.0,
        request_timeout=0.0, request_headers_timeout=0.0, idle_timeout=0.0,
        filter_factories=(chain,), route_table=None, access_logs=(), context=None,  # type: ignore[arg-type]
        enable_trailers=True, protocol=Http1Connection,
    )
    return replace(cfg, **overrides) if overrides else cfg


class Hcm:
    """One downstream connection into an HCM built from ``chain``."""

    def __init__(self, chain: Chain, buffer_limit: int | None = None, **overrides: Any) -> None:
        self.store = Store()
        self.config = hcm_config(chain, self.store, **overrides)
        self.filter = ConnectionManager(self.config)
        self.driver = NetworkFilterDriver([lambda b: b.add_read_filter(self.filter)])
        if buffer_limit is not None:
            self.filter.buffer_limit = buffer_limit

    def send(self, data: bytes, end_stream: bool = False) -> None:
        self.driver.receive(data, end_stream)

    @property
    def out(self) -> bytes:
        return self.driver.written

    def stat(self, name: str) -> int:
        s = self.store.get(f"http.test.{name}")
        assert s is not None, name
        return int(s.value)  # type: ignore[union-attr]

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Parse what was written: (status, headers, body) per response (chunked or sized)."""
        return parse_responses(self.out)


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            hdrs[k.decode().lower()] = v.strip().decode()
        if status < 200:
            data = rest
            continue
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, data = rest[:n], rest[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                m = re.match(rb"([0-9a-fA-F]+)\r\n", rest)
                assert m, rest[:50]
                n = int(m.group(1), 16)
                rest = rest[m.end():]
                if n == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, hdrs, body))
    return out


def request(method: str = "POST", path: str = "/", body: bytes | None = None,
            chunked: bool = False, trailers: bytes = b"", extra: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n".encode() + extra
    if body is None:
        return head + b"\r\n"
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + (
            b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n" + trailers + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Recorder(StreamFilter):
    """Records every call into ``log`` as (name, method, arg) and returns scripted statuses:
    ``script={"decode_headers": STOP_ITERATION, ...}`` (a status, or a list consumed per call)."""

    def __init__(self, name: str, log: list[tuple[str, str, Any]],
                 script: dict[str, Any] | None = None) -> None:
        self.name = name
        self.log = log
        self.script = dict(script or {})

    def _status(self, method: str, default: Any) -> Any:
        st = self.script.get(method, default)
        if isinstance(st, list):
            return st.pop(0) if st else default
        return st

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.log.append((self.name, "decode_headers", end_stream))
        return self._status("decode_headers", FilterHeadersStatus.CONTINUE)

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        self.log.append((self.name, "decode_data", (data, end_stream)))
        return self._status("decode_data", FilterDataStatus.CONTINUE)

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        self.log.append((self.name, "decode_trailers", trailers.get("x-t")))
        return self._status("decode_trailers", FilterTrailersStatus.CONTINUE)

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.log.append((self.name, "encode_headers", end_stream))
        return self._status("encode_headers", FilterHeadersStatus.CONTINUE)

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        self.log.append((self.name, "encode_data", (data, end_stream)))
        return self._status("encode_data", FilterDataStatus.CONTINUE)

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        self.log.append((self.name, "encode_trailers", trailers.get("x-t")))
        return self._status("encode_trailers", FilterTrailersStatus.CONTINUE)

    def on_destroy(self) -> None:
        self.log.append((self.name, "on_destroy", None))


class Responder(StreamFilter):
    """The terminal filter (the router's place): collects the request; when it ends, answers
    200 with the body it got, in ``chunks`` pieces (chunked when more than one), and
    ``trailers`` if given."""

    def __init__(self, log: list[tuple[str, str, Any]] | None = None, chunks: int = 1,
                 trailers: dict[str, str] | None = None) -> None:
        self.body = bytearray()
        self.log = log if log is not None else []
        self.chunks = chunks
        self.trailers = trailers
        self.got_trailers: HeaderMap | None = None

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.log.append(("R", "decode_headers", end_stream))
        if end_stream:
            self._answer()
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        self.log.append(("R", "decode_data", (data, end_stream)))
        self.body += data
        if end_stream:
            self._answer()
        return FilterDataStatus.CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        self.log.append(("R", "decode_trailers", trailers.get("x-t")))
        self.got_trailers = trailers
        self._answer()
        return FilterTrailersStatus.CONTINUE

    def _answer(self) -> None:
        cb = self.decoder_callbacks
        body = bytes(self.body)
        h = HeaderMap(status=200)
        if self.chunks == 1 and not self.trailers:
            h.add("content-length", str(len(body)))
            cb.encode_headers(h, not body)
            if body:
                cb.encode_data(body, True)
            return
        cb.encode_headers(h, False)
        n = max(1, len(body) // self.chunks)
        parts = [body[i:i + n] for i in range(0, len(body), n)] or [b""]
        for j, p in enumerate(parts):
            cb.encode_data(p, j == len(parts) - 1 and not self.trailers)
        if self.trailers:
            cb.encode_trailers(HeaderMap.from_pairs(list(self.trailers.items())))


def chain(*filters: Callable[[], Any]) -> Chain:
    """A factory callback adding fresh filters per stream: ``chain(lambda: A(), lambda: B())``
    (decoder order; the last one is the terminal responder)."""

    def build(b: HttpFilterChainBuilder) -> None:
        for make in filters:
            b.add_filter(make())

    return build
