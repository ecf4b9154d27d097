"""Config loading: Envoy v3 YAML/JSON -> validated ``envoy.config.bootstrap.v3.Bootstrap``.

The config model is Envoy's own (xds-protos); see ``loader`` for the steps and the error paths.
"""

from __future__ import annotations

from .errors import ConfigError, ConfigIssue
from .loader import load_bootstrap, load_config_text, parse_bootstrap, parse_config_data
from .pgv import validate_message
from .protos import duration_seconds, ensure_protos_loaded, format_duration
from .typed import PluginTypedConfig, unpack_typed_config

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "PluginTypedConfig",
    "duration_seconds",
    "ensure_protos_loaded",
    "format_duration",
    "load_bootstrap",
    "load_config_text",
    "parse_bootstrap",
    "parse_config_data",
    "unpack_typed_config",
    "validate_message",
]
