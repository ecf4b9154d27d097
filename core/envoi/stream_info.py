"""What is known about one connection or request, and what access logs and formatters read.

:class:`StreamInfo` is Envoy's StreamInfo (its L4 part; HTTP adds fields in
:class:`envoi.http.filter.HttpStreamInfo`). :class:`LogContext` is what a format operator reads;
:data:`Operator` and :data:`OperatorFactory` are the types a plugin's
``envoi_access_log_operators`` hook returns; :class:`AccessLogger` is what an access-logger
factory builds. This module is public contract and imports nothing else of envoi.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class StreamInfo:
    """What an access log needs to know about one connection (Envoy's StreamInfo, L4 part)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "downstream_local_address",
        "downstream_remote_address",
        "downstream_ssl",
        "end_time",
        "extra",
        "requested_server_name",
        "response_flags",
        "start_monotonic",
        "start_time",
        "upstream_cluster",
        "upstream_host",
        "upstream_local_address",
    )

    def __init__(self, remote: str, local: str) -> None:
        self.start_time = time.time()
        self.start_monotonic = time.monotonic()
        self.end_time: float | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.downstream_remote_address = remote
        self.downstream_local_address = local
        self.upstream_host: str | None = None
        self.upstream_cluster: str | None = None
        self.upstream_local_address: str | None = None
        self.response_flags: list[str] = []
        self.extra: dict[str, Any] = {}
        #: The SNI the client sent ("" when none).
        self.requested_server_name = ""
        #: The downstream connection's TLS facts (``envoi.network.filter.SslInfo``); None in
        #: plaintext.
        self.downstream_ssl: Any = None

    @property
    def duration_ms(self) -> int:
        end = self.end_time if self.end_time is not None else time.monotonic()
        return int((end - self.start_monotonic) * 1000)



class LogContext(Protocol):
    """What a format operator reads. TCP fills ``stream_info`` only; HTTP adds headers and the
    response code."""

    @property
    def stream_info(self) -> StreamInfo: ...
    def request_header(self, name: str) -> str | None: ...
    def response_header(self, name: str) -> str | None: ...
    def response_trailer(self, name: str) -> str | None: ...
    @property
    def protocol(self) -> str | None: ...
    @property
    def response_code(self) -> int: ...


class Verbatim(str):
    """An operator's value written as it is, even when empty (Envoy writes ``-`` for a value
    that is absent, and for most empty ones; ``%LOCAL_REPLY_BODY%`` writes an empty body as
    nothing)."""

    __slots__ = ()


#: A compiled ``%COMMAND(arg)%``: reads a log context, returns the value (None is written ``-``).
Operator = Callable[[LogContext], str | int | None]
#: Makes an :data:`Operator` from the command's argument (``None`` without parentheses).
OperatorFactory = Callable[[str | None], Operator]
#: A compiled format string: a log context in, one rendered line (or header value) out.
Formatter = Callable[[LogContext], str]


class AccessLogger(Protocol):
    """What an access-logger factory builds: called once per finished connection or request."""

    def log(self, ctx: LogContext) -> None: ...
