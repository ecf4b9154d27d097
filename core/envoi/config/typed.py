"""``typed_config`` handling: plugin types, Envoy's TypedStruct wrappers, and unpacking.

An ``Any`` can only hold a message protobuf knows. A third-party filter's config type is not in
xds-protos, so before parsing, ``wrap_plugin_types`` rewrites every ``Any`` whose ``@type`` a
plugin registered into Envoy's own wrapper for that case, ``xds.type.v3.TypedStruct``
(``{type_url: <the plugin's type>, value: <its fields as a Struct>}``). Users may also write that
wrapper themselves, as they would for Envoy. ``unpack_typed_config`` undoes either form: a known
inner type becomes its proto message, an unknown one a ``PluginTypedConfig`` of plain JSON data.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError, Message

from .errors import ConfigError, ConfigIssue, index_path, join_path, key_path
from .jsonparse import parse_dict_into
from .protos import (
    ANY_TYPE,
    TYPED_STRUCT_TYPES,
    WELL_KNOWN_TYPES,
    XDS_TYPED_STRUCT_URL,
    field_for_key,
    find_message_type,
    is_map_field,
    message_class,
    type_name_of,
)

__all__ = [
    "PluginTypedConfig",
    "unpack_any",
    "unpack_typed_config",
    "wrap_plugin_types",
]


@dataclass(frozen=True)
class PluginTypedConfig:
    """A typed_config whose @type is not a message in xds-protos but is registered by a plugin."""

    type_url: str  # full, e.g. 'type.googleapis.com/acme.filters.http.auth.v1.Auth'
    value: dict[str, Any]  # the config fields as plain JSON data (without '@type')

    @property
    def type_name(self) -> str:
        """The type URL without its ``type.googleapis.com/`` prefix."""
        return type_name_of(self.type_url)


def unpack_typed_config(any_msg: any_pb2.Any, path: str) -> Message | PluginTypedConfig:
    """The message inside ``any_msg``; a ``PluginTypedConfig`` for a TypedStruct of a non-proto
    type. ``path`` (where the Any sits in the config) prefixes error paths. Raises ConfigError."""
    return unpack_any(any_msg, path)[0]


def unpack_any(any_msg: any_pb2.Any, path: str) -> tuple[Message | PluginTypedConfig, str]:
    """Like ``unpack_typed_config``, also returning the config path of the unpacked message's
    fields: the Any's own path, or ``<path>.value`` for a TypedStruct (where the user wrote
    them)."""
    type_url = any_msg.type_url
    if not type_url:
        raise ConfigError.at(path, "missing '@type'")
    descriptor = find_message_type(type_url)
    if descriptor is None:
        raise ConfigError.at(path, f"could not find @type '{type_url}'")
    message = message_class(descriptor)()
    try:
        unpacked = any_msg.Unpack(message)
    except DecodeError:
        unpacked = False
    if not unpacked:
        raise ConfigError.at(path, f"cannot decode the {descriptor.full_name} in this Any")
    if descriptor.full_name not in TYPED_STRUCT_TYPES:
        return message, path
    return _from_typed_struct(message, path)


def _from_typed_struct(typed_struct: Any, path: str) -> tuple[Message | PluginTypedConfig, str]:
    inner_url = str(typed_struct.type_url)
    value_path = join_path(path, "value")
    value = _plain_json(json_format.MessageToDict(typed_struct.value))
    if not inner_url:
        raise ConfigError.at(join_path(path, "type_url"), "value is required")
    inner = find_message_type(inner_url)
    if inner is None:
        return PluginTypedConfig(type_url=inner_url, value=value), value_path
    message = message_class(inner)()
    parse_dict_into(value, message, value_path)
    return message, value_path


def _plain_json(value: Any) -> Any:
    """Struct holds every number as a double; give integral ones back as int, so a plugin's
    ``port: 80`` arrives as ``80``, not ``80.0`` (above 2**53 precision is already lost)."""
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def wrap_plugin_types(
    data: Any, descriptor: Any, plugin_type_urls: Collection[str], path: str = ""
) -> tuple[Any, list[ConfigIssue]]:
    """Rewrite plugin-typed ``Any`` values in config ``data`` (for ``descriptor``) into
    TypedStruct wrappers, and report every ``@type`` that is neither a proto nor a plugin type.

    Returns the new data (input objects are never modified; unchanged subtrees are shared) and
    the issues. Malformed data is passed through untouched: json_format reports it afterwards.
    """
    walker = _Walker({type_name_of(url) for url in plugin_type_urls})
    new_data = walker.message(data, descriptor, path)
    return new_data, walker.issues


class _Walker:
    def __init__(self, plugin_names: set[str]) -> None:
        self.plugin_names = plugin_names
        self.issues: list[ConfigIssue] = []

    def message(self, data: Any, descriptor: Any, path: str) -> Any:
        name = descriptor.full_name
        if name == ANY_TYPE:
            return self.any(data, path)
        if name in WELL_KNOWN_TYPES or not isinstance(data, dict):
            return data
        changed: dict[Any, Any] | None = None
        for key, value in data.items():
            field = field_for_key(descriptor, key)
            if field is None or field.message_type is None or value is None:
                continue
            new_value = self.field(value, field, join_path(path, field.name))
            if new_value is not value:
                if changed is None:
                    changed = dict(data)
                changed[key] = new_value
        return data if changed is None else changed

    def field(self, value: Any, field: Any, path: str) -> Any:
        if is_map_field(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is None or not isinstance(value, dict):
                return value
            new_map = {
                k: self.message(v, value_field.message_type, key_path(path, k))
                for k, v in value.items()
            }
            same = all(new_map[k] is value[k] for k in value)
            return value if same else new_map
        if field.is_repeated:
            if not isinstance(value, list):
                return value
            new_list = [
                self.message(item, field.message_type, index_path(path, i))
                for i, item in enumerate(value)
            ]
            same = all(a is b for a, b in zip(new_list, value, strict=True))
            return value if same else new_list
        return self.message(value, field.message_type, path)

    def any(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            return data
        type_url = data.get("@type")
        if not isinstance(type_url, str):
            return data  # missing/odd @type: json_format's error, located later, is clear
        inner = find_message_type(type_url)
        if inner is None:
            if type_name_of(type_url) in self.plugin_names:
                fields = {k: v for k, v in data.items() if k != "@type"}
                return {"@type": XDS_TYPED_STRUCT_URL, "type_url": type_url, "value": fields}
            self.issues.append(ConfigIssue(path, f"could not find @type '{type_url}'"))
            return data
        if inner.full_name in WELL_KNOWN_TYPES:
            return data
        if inner.full_name in TYPED_STRUCT_TYPES:
            return self.typed_struct(data, path)
        return self.message(data, inner, path)

    def typed_struct(self, data: dict[Any, Any], path: str) -> Any:
        """A wrapper the user wrote: its inner type must be known to protobuf or a plugin, and
        a known inner type's fields may themselves hold plugin-typed Anys."""
        inner_url = data.get("type_url")
        if not isinstance(inner_url, str) or not inner_url:
            return data  # unpacking reports the missing type_url with its path
        inner = find_message_type(inner_url)
        if inner is None:
            if type_name_of(inner_url) not in self.plugin_names:
                self.issues.append(
                    ConfigIssue(join_path(path, "type_url"), f"could not find @type '{inner_url}'")
                )
            return data
        value = data.get("value")
        if inner.full_name in WELL_KNOWN_TYPES or not isinstance(value, dict):
            return data
        new_value = self.message(value, inner, join_path(path, "value"))
        if new_value is value:
            return data
        return {**data, "value": new_value}
