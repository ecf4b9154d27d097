"""Loading a Bootstrap (or any Envoy config message) from YAML or JSON text.

The steps, each with its own kind of error, all reported as ConfigError:
1. text -> data: PyYAML (or json for ``*.json``); syntax errors carry ``file:line:column``.
2. Envoy's loader conveniences (lower-case enums, a value for a list of one...) rewritten into
   the form json_format takes (compat.py); plugin ``@type``s -> TypedStruct wrappers, unknown
   ``@type``s reported (typed.py).
3. data -> proto: ``json_format.ParseDict``; errors located to a field path (jsonparse.py).
4. PGV validation of the whole message tree, every issue reported at once (pgv.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from google.protobuf.message import Message

from .compat import envoy_json_compat
from .errors import ConfigError, describe_value
from .jsonparse import parse_dict_into
from .pgv import validate_message
from .protos import ensure_config_protos
from .typed import wrap_plugin_types

if TYPE_CHECKING:
    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap

__all__ = [
    "load_bootstrap",
    "load_config_text",
    "parse_bootstrap",
    "parse_config_data",
]

M = TypeVar("M", bound=Message)

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# The C loader is several times faster on large configs; fall back when libyaml is missing.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ConfigLoader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML loader that rejects duplicate keys and keeps dates as strings.

    A duplicated key (say two ``typed_config:`` in one filter) would otherwise silently keep the
    last one. Dates: Envoy reads ``2024-01-01`` as a string, PyYAML as a datetime, which then
    fails in any string field (``version_info``, header values) with a confusing error.
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first_char: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first_char, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def load_bootstrap(
    path: str | os.PathLike[str], *, plugin_type_urls: Collection[str] = (),
    validate: bool = True,
) -> Bootstrap:
    """Read, parse and validate a Bootstrap config file (YAML, or JSON for ``*.json``).

    ``plugin_type_urls``: ``@type``s that plugins register (not messages in xds-protos); they
    are kept as TypedStruct and come out of ``unpack_typed_config`` as PluginTypedConfig.
    ``validate=False`` skips the PGV rules (the caller runs ``validate_message`` itself).
    Returns an ``envoy.config.bootstrap.v3.Bootstrap``; raises ConfigError.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.at(source, f"not UTF-8 text ({exc.reason})", source=source) from None
    except OSError as exc:
        raise ConfigError.at(
            source, f"cannot read config file: {exc.strerror or exc}", source=source
        ) from None
    return parse_bootstrap(text, source=source, plugin_type_urls=plugin_type_urls,
                           validate=validate)


def parse_bootstrap(
    text: str, *, source: str = "<string>", plugin_type_urls: Collection[str] = (),
    validate: bool = True,
) -> Bootstrap:
    """Parse and validate a Bootstrap from YAML/JSON text; ``source`` names it in errors."""
    ensure_config_protos()
    # Imported here, not at module level: the Bootstrap module pulls in much of Envoy's API, and
    # ensure_config_protos() is the one place that decides when that cost is paid.
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    data = load_config_text(text, source=source)
    return parse_config_data(
        data, bootstrap_pb2.Bootstrap, source=source, plugin_type_urls=plugin_type_urls,
        validate=validate,
    )


def load_config_text(text: str, *, source: str = "<string>") -> dict[str, Any]:
    """YAML (or JSON, for a ``*.json`` source) text -> a mapping; raise ConfigError."""
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError.at(
                f"{source}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}", source=source
            ) from None
    else:
        data = _load_yaml(text, source)
    if data is None:
        raise ConfigError.at(source, "config is empty", source=source)
    if not isinstance(data, dict):
        raise ConfigError.at(
            source,
            f"config must be a mapping of fields at the top level, got {describe_value(data)}",
            source=source,
        )
    return data


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem and exc.context != exc.problem:
            problem = f"{problem} ({exc.context})"
        raise ConfigError.at(where, f"invalid YAML: {problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError.at(source, f"invalid YAML: {exc}", source=source) from None
    except RecursionError:
        raise ConfigError.at(source, "invalid YAML: nested too deeply", source=source) from None


def parse_config_data(
    data: Any,
    message_type: type[M],
    *,
    path: str = "",
    source: str | None = None,
    plugin_type_urls: Collection[str] = (),
    validate: bool = True,
) -> M:
    """Config data (already loaded from YAML/JSON) -> a validated ``message_type`` message.

    Used for the Bootstrap and for xDS resources (Listener, Cluster, ...) read from files;
    ``path`` prefixes every error path (e.g. ``resources[2]``).
    """
    ensure_config_protos()
    if not isinstance(data, dict):
        where = path or source or ""
        raise ConfigError.at(
            where, f"expected a mapping, got {describe_value(data)}", source=source
        )
    data = envoy_json_compat(data, message_type.DESCRIPTOR)
    wrapped, issues = wrap_plugin_types(data, message_type.DESCRIPTOR, plugin_type_urls, path)
    if issues:
        raise ConfigError(issues, source=source)
    message = message_type()
    try:
        parse_dict_into(wrapped, message, path)
    except ConfigError as exc:
        raise ConfigError(exc.errors, source=source) from None
    if validate:
        problems = validate_message(message, path)
        if problems:
            raise ConfigError(problems, source=source)
    return message
