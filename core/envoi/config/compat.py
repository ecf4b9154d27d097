"""The conveniences Envoy's config loader accepts that protobuf's Python ``json_format`` does not.

Envoy parses its YAML through protobuf's C++ JSON parser with case-insensitive enum parsing,
which is more lenient than ``json_format.ParseDict``. Each rule here was checked against
``envoy --mode validate`` (1.39.3) and the value Envoy then uses (``/config_dump``):

- enum names in any case: ``codec_type: auto``, ``lb_policy: Round_Robin`` (not ``round-robin``);
- a single value where a list is expected: ``domains: "*"``, ``http_filters: {name: ...}``;
- a bool (or ``BoolValue``) written as a string: ``"true"``, ``"yes"``, ``"y"``, ``"t"``,
  ``"1"`` are true and ``"false"``, ``"no"``, ``"n"``, ``"f"``, ``"0"`` false, in any case
  (``"on"``/``"off"`` are refused, as in Envoy);
- a wrapper written as an object: ``use_remote_address: {value: true}``;
- a Duration written as an object: ``connect_timeout: {seconds: 1, nanos: 500000000}``.

``envoy_json_compat`` rewrites the data before ``json_format`` sees it, into the form it takes.
Anything it does not recognise is left alone for ``json_format`` to accept or report.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from .protos import (
    ANY_TYPE,
    TYPED_STRUCT_TYPES,
    WELL_KNOWN_TYPES,
    field_for_key,
    find_message_type,
    is_map_field,
)

__all__ = ["envoy_json_compat"]

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_WRAPPERS = frozenset({
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
})
_DURATION = "google.protobuf.Duration"


def envoy_json_compat(data: Any, descriptor: Any) -> Any:
    """``data`` (for message ``descriptor``) with Envoy's conveniences rewritten into the form
    ``json_format`` accepts. Input objects are never modified; unchanged subtrees are shared."""
    return _message(data, descriptor)


def _message(data: Any, descriptor: Any) -> Any:
    name = descriptor.full_name
    if name == ANY_TYPE:
        return _any(data)
    if name in WELL_KNOWN_TYPES or not isinstance(data, dict):
        return data
    changed: dict[Any, Any] | None = None
    for key, value in data.items():
        field = field_for_key(descriptor, key)
        if field is None or value is None:
            continue
        new_value = _field(value, field)
        if new_value is not value:
            if changed is None:
                changed = dict(data)
            changed[key] = new_value
    return data if changed is None else changed


def _field(value: Any, field: Any) -> Any:
    if is_map_field(field):
        value_field = field.message_type.fields_by_name["value"]
        if not isinstance(value, dict):
            return value
        new_map = {k: _single(v, value_field) for k, v in value.items()}
        return value if all(new_map[k] is value[k] for k in value) else new_map
    if field.is_repeated:
        if not isinstance(value, list):
            # Envoy takes one value for a list of one: an object for a list of messages, a
            # scalar for a list of scalars (anything else stays an error).
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE
            if isinstance(value, dict) == is_message:
                return [_single(value, field)]
            return value
        new_list = [_single(item, field) for item in value]
        return value if all(a is b for a, b in zip(new_list, value, strict=True)) else new_list
    return _single(value, field)


def _single(value: Any, field: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(value, field.enum_type)
    if kind == FieldDescriptor.TYPE_BOOL:
        return _bool(value)
    if kind != FieldDescriptor.TYPE_MESSAGE:
        return value
    message_type = field.message_type
    name = message_type.full_name
    if name in _WRAPPERS:
        if isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]
        return _bool(value) if name == "google.protobuf.BoolValue" else value
    if name == _DURATION:
        return _duration(value)
    return _message(value, message_type)


def _enum(value: Any, enum_type: Any) -> Any:
    if not isinstance(value, str) or value in enum_type.values_by_name:
        return value
    upper = value.upper()
    return upper if upper in enum_type.values_by_name else value


def _bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return value


def _duration(value: Any) -> Any:
    if not isinstance(value, dict) or not value or not set(value) <= {"seconds", "nanos"}:
        return value
    seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (seconds, nanos)):
        return value
    total = seconds * 1_000_000_000 + nanos
    sign = "-" if total < 0 else ""
    whole, frac = divmod(abs(total), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}s" if frac else f"{sign}{whole}s"


def _any(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    type_url = data.get("@type")
    if not isinstance(type_url, str):
        return data
    inner = find_message_type(type_url)
    if inner is None or inner.full_name in WELL_KNOWN_TYPES:
        return data
    if inner.full_name in TYPED_STRUCT_TYPES:
        return _typed_struct(data)
    return _message(data, inner)


def _typed_struct(data: dict[Any, Any]) -> Any:
    inner_url = data.get("type_url")
    value = data.get("value")
    if not isinstance(inner_url, str) or not isinstance(value, dict):
        return data
    inner = find_message_type(inner_url)
    if inner is None or inner.full_name in WELL_KNOWN_TYPES:
        return data
    new_value = _message(value, inner)
    return data if new_value is value else {**data, "value": new_value}
