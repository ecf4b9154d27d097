"""envoi-http's command-line options (``envoi_addoption``) and how factories read them."""

from __future__ import annotations

import argparse
import os
from typing import Any

from envoi.context import ServerContext

from envoi_http.codec import Backend, resolve_backend

CODEC_ENV = "ENVOI_HTTP1_CODEC"
_BACKENDS: tuple[Backend, ...] = ("auto", "h11", "httptools")


def _coerce(value: Any) -> Backend:
    return value if value in _BACKENDS else "auto"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http1-codec", dest="http1_codec", choices=_BACKENDS,
        default=_coerce(os.environ.get(CODEC_ENV, "auto")),
        help="HTTP/1.1 codec back-end for the HCM and the router's upstream pools: h11, "
             "httptools or auto (httptools when installed); default $ENVOI_HTTP1_CODEC or auto")


def http1_codec(context: ServerContext) -> Backend:
    """The ``--http1-codec`` value from the plugin options; without it (a context made without
    the command line, as in unit tests) the ``ENVOI_HTTP1_CODEC`` environment variable."""
    value = getattr(context.plugin_options, "http1_codec", None)
    if value is None:
        value = os.environ.get(CODEC_ENV, "auto")
    # Resolved here, once per config: ``auto`` never reaches the per-connection codec choice.
    return resolve_backend(_coerce(value))
