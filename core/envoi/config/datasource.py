"""``envoy.config.core.v3.DataSource``: bytes given inline, in a file or in an environment
variable. Every consumer reads one through ``data_source_bytes``, so every kind works wherever a
DataSource is accepted (the declaration below is true everywhere)."""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError, ConfigIssue, join_path
from .implemented import implements

__all__ = ["data_source_bytes"]

# watched_directory (reload on change) is not implemented.
implements("envoy.config.core.v3.DataSource",
           "filename", "inline_bytes", "inline_string", "environment_variable")


def data_source_bytes(ds: Any, path: str) -> bytes:
    """The bytes a DataSource names, read once at config time; ConfigError when a file cannot
    be read or a variable is not set (Envoy rejects both)."""
    kind = ds.WhichOneof("specifier")
    if kind == "inline_string":
        return str(ds.inline_string).encode()
    if kind == "inline_bytes":
        return bytes(ds.inline_bytes)
    if kind == "filename":
        try:
            with open(ds.filename, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError.at(join_path(path, "filename"),
                                 f"cannot read {ds.filename!r}: {exc.strerror or exc}") from None
    if kind == "environment_variable":
        value = os.environ.get(ds.environment_variable)
        if value is None:
            raise ConfigError([ConfigIssue(join_path(path, "environment_variable"),
                                           f"environment variable {ds.environment_variable!r} "
                                           "is not set")])
        return value.encode()
    return b""
