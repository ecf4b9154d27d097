"""Two third-party HTTP filters: ``example.filters.http.add_header`` (sync: a response header)
and ``example.filters.http.ext_auth`` (async: asks an HTTP auth service before the request goes
on). Each has a config dataclass (``envoi.schema.config_schema`` turns it into the parser and
checks every field), a factory that turns config into a per-stream callback once, and a filter
object per stream; the hooks at the bottom register them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envoi import hookimpl
from envoi.extensions import ConfigSchema, FactoryContext, HttpFilterFactory
from envoi.http import (
    FilterHeadersStatus,
    HeaderMap,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamDecoderFilter,
    StreamEncoderFilter,
)
from envoi.schema import config_schema
from envoi.stats import Counter, StatsGroup

ADD_HEADER_URL = "example.filters.http.add_header.v1.AddHeader"
EXT_AUTH_URL = "example.filters.http.ext_auth.v1.ExtAuth"


# -- add_header (sync) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AddHeaderConfig:
    header: str  # required: no default
    value: str = ""

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("header: must not be empty")
        object.__setattr__(self, "header", self.header.lower())


class AddHeader(StreamEncoderFilter):
    def __init__(self, config: AddHeaderConfig) -> None:
        self.config = config

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        headers.add(self.config.header, self.config.value)
        return FilterHeadersStatus.CONTINUE


class AddHeaderFactory(HttpFilterFactory):
    name = "example.filters.http.add_header"
    type_urls = (ADD_HEADER_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        if not isinstance(config, AddHeaderConfig):
            raise ValueError("typed_config is required")

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_encoder_filter(AddHeader(config))

        return add


# -- ext_auth (async) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtAuthConfig:
    auth_url: str
    timeout_ms: float = 1000
    # Worked out once from auth_url (init=False: not config fields).
    host: str = field(init=False, default="")
    port: int = field(init=False, default=80)
    path: str = field(init=False, default="/")

    def __post_init__(self) -> None:
        parts = urlsplit(self.auth_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("auth_url: an http:// URL is required")
        if self.timeout_ms <= 0:
            raise ValueError("timeout_ms: must be positive")
        object.__setattr__(self, "host", parts.hostname)
        object.__setattr__(self, "port", parts.port or 80)
        object.__setattr__(self, "path", parts.path or "/")

    @property
    def timeout(self) -> float:
        return self.timeout_ms / 1000


class ExtAuthStats(StatsGroup):
    ok: Counter
    denied: Counter
    error: Counter


async def ask(config: ExtAuthConfig, headers: HeaderMap) -> tuple[int, str | None]:
    """One HTTP/1.1 GET to the auth service; (status, x-auth-user)."""
    reader, writer = await asyncio.open_connection(config.host, config.port)
    try:
        lines = [f"GET {config.path} HTTP/1.1", f"host: {config.host}:{config.port}",
                 "connection: close", f"x-original-path: {headers.path.decode()}"]
        auth = headers.get("authorization")
        if auth is not None:
            lines.append(f"authorization: {auth}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        user = None
        for f in fields:
            k, _, v = f.partition(":")
            if k.strip().lower() == "x-auth-user":
                user = v.strip()
        return int(status_line.split()[1]), user
    finally:
        writer.close()


class ExtAuth(StreamDecoderFilter):
    def __init__(self, config: ExtAuthConfig, stats: ExtAuthStats) -> None:
        self.config = config
        self.stats = stats

    async def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        try:
            status, user = await asyncio.wait_for(ask(self.config, headers),
                                                  self.config.timeout)
        except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            self.stats.error.inc()
            status, user = 0, None
        if 200 <= status < 300:
            self.stats.ok.inc()
            if user is not None:
                headers.set("x-auth-user", user)
            return FilterHeadersStatus.CONTINUE
        if status:
            self.stats.denied.inc()
        self.decoder_callbacks.send_local_reply(403, b"denied\n", details="ext_auth_denied")
        return FilterHeadersStatus.STOP_ITERATION


class ExtAuthFactory(HttpFilterFactory):
    name = "example.filters.http.ext_auth"
    type_urls = (EXT_AUTH_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        if not isinstance(config, ExtAuthConfig):
            raise ValueError("typed_config is required")
        stats = ExtAuthStats(context.stats.root.scope("example.ext_auth"))

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_decoder_filter(ExtAuth(config, stats))

        return add


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [AddHeaderFactory(), ExtAuthFactory()]


@hookimpl
def envoi_config_schemas() -> Sequence[ConfigSchema]:
    return [config_schema(ADD_HEADER_URL, AddHeaderConfig),
            config_schema(EXT_AUTH_URL, ExtAuthConfig)]
