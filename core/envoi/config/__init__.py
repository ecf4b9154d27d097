"""Config loading: Envoy v3 YAML/JSON -> validated ``envoy.config.bootstrap.v3.Bootstrap``.

The config model is Envoy's own (xds-protos); see ``loader`` for the steps and the error paths.
"""

from __future__ import annotations

from .datasource import data_source_bytes
from .errors import ConfigError, ConfigIssue
from .implemented import (
    NOT_IMPLEMENTED,
    address_issue,
    check_schema_keys,
    implemented_fields,
    implements,
    refuse_unlisted,
    unimplemented_fields,
)
from .loader import load_bootstrap, load_config_text, parse_bootstrap, parse_config_data
from .pgv import validate_message
from .protos import duration_seconds, ensure_protos_loaded, format_duration
from .typed import PluginTypedConfig, unpack_typed_config

__all__ = [
    "NOT_IMPLEMENTED",
    "ConfigError",
    "ConfigIssue",
    "PluginTypedConfig",
    "address_issue",
    "check_schema_keys",
    "data_source_bytes",
    "duration_seconds",
    "ensure_protos_loaded",
    "format_duration",
    "implemented_fields",
    "implements",
    "load_bootstrap",
    "load_config_text",
    "parse_bootstrap",
    "parse_config_data",
    "refuse_unlisted",
    "unimplemented_fields",
    "unpack_typed_config",
    "validate_message",
]
