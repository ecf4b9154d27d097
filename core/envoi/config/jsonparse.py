"""JSON/YAML data → protobuf message, with errors that name the offending field.

``json_format.ParseDict`` does the parsing (it defines what is valid), but its errors are uneven:
some carry a path like ``Bootstrap.static_resources.clusters[0].connect_timeout``, some none,
and all wrap the cause in "Failed to parse X field:" layers. When it fails, ``locate_errors``
walks the data alongside the message descriptors, re-parsing one field at a time with
json_format itself, finds every smallest piece json_format rejects (so one run reports them
all), and describes each in Envoy's YAML terms. Failures are rare, so this slow walk only
runs on the error path.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .errors import ConfigError, ConfigIssue, describe_value, index_path, join_path, key_path
from .protos import (
    ANY_TYPE,
    WELL_KNOWN_TYPES,
    field_for_key,
    find_message_type,
    is_map_field,
    message_class,
)

__all__ = ["locate_error", "locate_errors", "parse_dict_into"]

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_INT_TYPE_NAMES = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "int32",
    FieldDescriptor.TYPE_SINT64: "int64",
    FieldDescriptor.TYPE_FIXED32: "uint32",
    FieldDescriptor.TYPE_FIXED64: "uint64",
    FieldDescriptor.TYPE_SFIXED32: "int32",
    FieldDescriptor.TYPE_SFIXED64: "int64",
}
# Wrapper messages are written in JSON as their bare value; map them to the scalar they wrap.
_WRAPPER_KINDS = {
    "google.protobuf.DoubleValue": "a number",
    "google.protobuf.FloatValue": "a number",
    "google.protobuf.Int64Value": "an integer",
    "google.protobuf.UInt64Value": "a non-negative integer",
    "google.protobuf.Int32Value": "an integer",
    "google.protobuf.UInt32Value": "a non-negative integer",
    "google.protobuf.BoolValue": "a boolean",
    "google.protobuf.StringValue": "a string",
    "google.protobuf.BytesValue": "a base64 string",
}

_AT_PATH = re.compile(r"\s+at\s+\"?([A-Za-z_][\w.]*(?:\[[^\]]*\][\w.]*)*)\"?\.*\s*$")
_FAILED_PREFIX = re.compile(r"^(?:Failed to parse \w+ field: )+")


def parse_dict_into(data: Any, message: Message, path: str = "") -> None:
    """Fill ``message`` from JSON-like ``data``; raise ConfigError naming the offending field."""
    try:
        json_format.ParseDict(data, message)
    except Exception as exc:
        # json_format raises ParseError mostly, but TypeError/ValueError/AttributeError leak out
        # of some conversions; the user must get a config error, never a traceback.
        issues = locate_errors(data, message.DESCRIPTOR, path) or [
            _issue_from_exception(exc, path)]
        raise ConfigError(issues) from None


def locate_error(data: Any, descriptor: Any, path: str) -> ConfigIssue | None:
    """The first piece of ``data`` that json_format rejects for ``descriptor``, or None."""
    issues = locate_errors(data, descriptor, path)
    return issues[0] if issues else None


def locate_errors(data: Any, descriptor: Any, path: str) -> list[ConfigIssue]:
    """Every piece of ``data`` that json_format rejects for ``descriptor``, so one run of
    ``--mode validate`` shows them all (each is the smallest piece: a field, an element)."""
    try:
        return _locate_message(data, descriptor, path)
    except RecursionError:
        return []


def _parses(data: Any, descriptor: Any) -> bool:
    try:
        json_format.ParseDict(data, message_class(descriptor)())
    except Exception:
        return False
    return True


def _locate_message(data: Any, descriptor: Any, path: str) -> list[ConfigIssue]:
    if descriptor.full_name in WELL_KNOWN_TYPES:
        return _locate_well_known(data, descriptor, path)
    if data is None:
        return []  # json_format treats null as "not set"
    if not isinstance(data, dict):
        return [ConfigIssue(path, f"expected an object, got {describe_value(data)}")]
    issues: list[ConfigIssue] = []
    for key, value in data.items():
        field = field_for_key(descriptor, key)
        if field is None:
            issues.append(ConfigIssue(join_path(path, str(key)), "unknown field"))
            continue
        issues.extend(_locate_field(value, field, join_path(path, field.name)))
    issues.extend(_listed(_cross_field_issue(data, descriptor, path)))
    return issues


def _listed(issue: ConfigIssue | None) -> list[ConfigIssue]:
    return [] if issue is None else [issue]


def _cross_field_issue(data: dict[Any, Any], descriptor: Any, path: str) -> ConfigIssue | None:
    """Problems no single field has: oneof conflicts and a field given under both spellings."""
    seen: dict[str, str] = {}
    oneof_members: dict[str, list[str]] = {}
    for key, value in data.items():
        field = field_for_key(descriptor, key)
        if field is None:
            continue
        if field.name in seen:
            return ConfigIssue(
                join_path(path, field.name),
                f"field given twice (as '{seen[field.name]}' and '{key}')",
            )
        seen[field.name] = str(key)
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            oneof_members.setdefault(oneof.name, []).append(field.name)
    for oneof_name, members in oneof_members.items():
        if len(members) > 1:
            return ConfigIssue(
                path,
                f"only one of {', '.join(members)} may be set (they are alternatives in "
                f"'{oneof_name}')",
            )
    return None


def _locate_field(value: Any, field: Any, path: str) -> list[ConfigIssue]:
    if value is None:
        return []
    issues: list[ConfigIssue] = []
    if is_map_field(field):
        if not isinstance(value, dict):
            return [ConfigIssue(path, f"expected an object (a map), got {describe_value(value)}")]
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if not isinstance(key, str):
                # YAML reads `80:` as a number; protobuf's JSON form only has string keys.
                issues.append(ConfigIssue(
                    key_path(path, key), f"map key must be a string (quote it), got {_show(key)}"
                ))
                continue
            issues.extend(_locate_single(item, value_field, key_path(path, key)))
        return issues
    if field.is_repeated:
        if not isinstance(value, list):
            return [ConfigIssue(path, f"expected a list, got {describe_value(value)}")]
        for index, item in enumerate(value):
            issues.extend(_locate_single(item, field, index_path(path, index)))
        return issues
    return _locate_single(value, field, path)


def _locate_single(value: Any, field: Any, path: str) -> list[ConfigIssue]:
    """One value (a whole singular field, one list element or one map value)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _locate_message(value, field.message_type, path)
    if _scalar_parses(value, field):
        return []
    return [ConfigIssue(path, _scalar_message(value, field))]


def _scalar_parses(value: Any, field: Any) -> bool:
    # Parse the value as the field of a fresh containing message, so json_format's own rules
    # (numeric strings allowed, bools not, ranges) decide. Map values live in a map-entry
    # message, which json_format parses like any message with 'key' and 'value' fields.
    container = field.containing_type
    wrapped = [value] if field.is_repeated else value
    if container.GetOptions().map_entry:
        return _parses({"value": value}, container)
    return _parses({field.name: wrapped}, container)


def _scalar_message(value: Any, field: Any) -> str:
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return f"unknown enum value {_show(value)}; expected one of: {', '.join(names)}"
    if kind == FieldDescriptor.TYPE_STRING:
        return f"expected a string, got {describe_value(value)}"
    if kind == FieldDescriptor.TYPE_BOOL:
        return f"expected a boolean (true or false), got {describe_value(value)}"
    if kind == FieldDescriptor.TYPE_BYTES:
        return f"expected a base64-encoded string, got {describe_value(value)}"
    if kind in _INT_TYPES:
        type_name = _INT_TYPE_NAMES[kind]
        if _is_integral(value):
            return f"value {_show(value)} is out of range for {type_name}"
        return f"expected an integer ({type_name}), got {describe_value(value)}"
    if kind in _FLOAT_TYPES:
        return f"expected a number, got {describe_value(value)}"
    return f"invalid value {_show(value)}"


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return False
        return True
    return False


def _show(value: Any) -> str:
    """A value as written in YAML, quoted if it is a string: 'FOO', 5, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float) or value is None:
        return "null" if value is None else repr(value)
    return describe_value(value)


def _locate_well_known(data: Any, descriptor: Any, path: str) -> list[ConfigIssue]:
    name = descriptor.full_name
    if name == ANY_TYPE:
        return _locate_any(data, path)
    if data is None or _parses(data, descriptor):
        return []
    if name == "google.protobuf.Duration":
        if isinstance(data, str):
            return [ConfigIssue(path, f"invalid duration {data!r}")]
        return [ConfigIssue(path,
                            f"invalid duration {_show(data)}: write it as a string like '5s'")]
    if name == "google.protobuf.Timestamp":
        return [ConfigIssue(path, f"invalid timestamp {_show(data)}: expected RFC 3339")]
    if name == "google.protobuf.Struct":
        if not isinstance(data, dict):
            return [ConfigIssue(path, f"expected an object, got {describe_value(data)}")]
        return [ConfigIssue(path, "contains a value that is not plain JSON data")]
    if name in _WRAPPER_KINDS:
        return [ConfigIssue(path, f"expected {_WRAPPER_KINDS[name]}, got {describe_value(data)}")]
    return [ConfigIssue(path, f"invalid {name.rsplit('.', 1)[-1]} value {_show(data)}")]


def _locate_any(data: Any, path: str) -> list[ConfigIssue]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [ConfigIssue(path, f"expected an object with '@type', got {describe_value(data)}")]
    type_url = data.get("@type")
    if type_url is None:
        return [ConfigIssue(path, "missing '@type'")]
    if not isinstance(type_url, str):
        return [ConfigIssue(
            join_path(path, "@type"), f"expected a type URL string, got {describe_value(type_url)}"
        )]
    inner = find_message_type(type_url)
    if inner is None:
        return [ConfigIssue(path, f"could not find @type '{type_url}'")]
    if inner.full_name in WELL_KNOWN_TYPES:
        # json_format writes these as {"@type": ..., "value": <their special JSON form>}.
        return _locate_well_known(data.get("value"), inner, join_path(path, "value"))
    # A TypedStruct's own fields are checked here; its 'value' is only a Struct until it is
    # unpacked, which is where errors inside it get their paths.
    rest = {k: v for k, v in data.items() if k != "@type"}
    return _locate_message(rest, inner, path)


def _issue_from_exception(exc: Exception, path: str) -> ConfigIssue:
    """Last resort when the walk found nothing: reuse json_format's text, cleaned up."""
    text = str(exc).split("\n", 1)[0].strip()
    text = _FAILED_PREFIX.sub("", text)
    where = path
    match = _AT_PATH.search(text)
    if match:
        text = text[: match.start()]
        # json_format's path starts with the top message's short name ("Bootstrap.").
        _, _, rest = match.group(1).partition(".")
        where = join_path(path, rest) if rest else path
    return ConfigIssue(where, text.rstrip(". ") or type(exc).__name__)
