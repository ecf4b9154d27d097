"""The command line as the server takes it: :class:`Options` (``envoi.cli`` fills them in
from Envoy's flags) and the values derived from them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Options:
    config_path: str = ""
    mode: str = "serve"
    log_level: str = "info"
    drain_time_s: float = 600.0
    concurrency: int = 1
    admin_port_override: int | None = None
    blocked_plugins: list[str] = field(default_factory=list)
    extra_plugins: list[str] = field(default_factory=list)
    autoload: bool | None = None
    #: Values of the options plugins added with ``envoi_addoption``.
    plugin_options: argparse.Namespace = field(default_factory=argparse.Namespace)
    #: Inline YAML merged over the file's bootstrap (Envoy's ``--config-yaml``).
    config_yaml: str = ""
    component_log_level: str = ""
    log_path: str = ""
    log_format: str = ""
    service_cluster: str = ""
    service_node: str = ""
    service_zone: str = ""
    file_flush_interval_ms: int | None = None
    #: ``--event-loop``: auto (uvloop when installed), uvloop or asyncio.
    event_loop: str = "auto"


def flush_interval_s(options: Options) -> float:
    """Access-log files are flushed this often: ``--file-flush-interval-msec``, else 0.2 s
    (Envoy's default is 10 s; envoi's shorter one is a documented difference)."""
    ms = options.file_flush_interval_ms
    return 0.2 if ms is None else ms / 1000


def duration_text(seconds: float) -> str:
    """``10s``, ``0.200s``: a Duration as /server_info writes it."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{seconds:.3f}s"


def command_line_options(options: Options) -> dict[str, Any]:
    """The options as ``/server_info`` shows them (``command_line_options``, Envoy's names)."""
    return {
        "config_path": options.config_path,
        "mode": options.mode.capitalize(),
        "log_level": options.log_level,
        "drain_time": f"{options.drain_time_s:g}s",
        "concurrency": options.concurrency,
        "config_yaml": options.config_yaml,
        "component_log_level": options.component_log_level,
        "log_path": options.log_path,
        "log_format": options.log_format,
        "service_cluster": options.service_cluster,
        "service_node": options.service_node,
        "service_zone": options.service_zone,
        "file_flush_interval": duration_text(flush_interval_s(options)),
    }
