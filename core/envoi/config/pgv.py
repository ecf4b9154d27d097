"""protoc-gen-validate rules, checked on parsed messages.

Envoy's protos carry their constraints as ``(validate.rules)`` field options ("stat_prefix must
not be empty", "port_value <= 65535"); Envoy runs the C++ code PGV generates from them on every
config. Python has no generated validators, so this module reads the options from the
descriptors and checks them itself. The rules of each message type are compiled into closures
once and cached, so validating a config costs roughly one pass over its set fields.

Semantics follow PGV: scalar rules apply to unset (default) values too - that is how a missing
``stat_prefix`` fails ``min_len: 1`` - except for oneof members and proto3 ``optional`` fields,
which are only checked when set; message rules other than ``required`` apply only when set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .errors import ConfigError, ConfigIssue, index_path, join_path, key_path
from .pgv_values import ValueCheck, value_check
from .protos import ANY_TYPE, WELL_KNOWN_TYPES, is_map_field
from .typed import PluginTypedConfig, unpack_any

__all__ = ["validate_message"]

# (message, path of the message, issues to append to)
_FieldCheck = Callable[[Any, str, list[ConfigIssue]], None]

# How a set message-typed field is descended into.
_SINGULAR, _REPEATED, _MAP = 1, 2, 3


@dataclass(frozen=True, slots=True)
class _Plan:
    skip: bool  # validate.disabled / validate.ignored: no rules, no descent (as in PGV)
    required_oneofs: tuple[tuple[str, str], ...]  # (oneof name, "a, b, c")
    checks: tuple[_FieldCheck, ...]
    descend: dict[int, int]  # field number -> _SINGULAR/_REPEATED/_MAP, for message fields


_plans: dict[str, _Plan] = {}


def _rules_extension() -> tuple[Any, Any, Any, Any]:
    # Imported lazily: the validate package ships with xds-protos, and keeping the import here
    # lets the rest of the config package import without touching it.
    from validate import validate_pb2

    return validate_pb2.rules, validate_pb2.required, validate_pb2.disabled, validate_pb2.ignored


def validate_message(msg: Message, path: str = "") -> list[ConfigIssue]:
    """All PGV rule violations in ``msg`` and everything under it, with config paths.

    ``Any`` fields are unpacked and validated as their inner type (an unknown ``@type`` is an
    issue); plugin configs (``PluginTypedConfig``) are left to their plugins.
    """
    issues: list[ConfigIssue] = []
    _validate(msg, path, issues)
    return issues


def _validate(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
    descriptor = msg.DESCRIPTOR
    full_name = descriptor.full_name
    if full_name == ANY_TYPE:
        _validate_any(msg, path, issues)
        return
    if full_name in WELL_KNOWN_TYPES:
        return  # no rules inside Duration, Struct, wrappers...
    plan = _plans.get(full_name)
    if plan is None:
        plan = _plans[full_name] = _compile_plan(descriptor)
    if plan.skip:
        return
    for oneof_name, members in plan.required_oneofs:
        if msg.WhichOneof(oneof_name) is None:
            issues.append(ConfigIssue(join_path(path, oneof_name), f"one of {members} is required"))
    for check in plan.checks:
        check(msg, path, issues)
    extra = _ENVOY_CHECKS.get(full_name)
    if extra is not None:
        extra(msg, path, issues)
    descend = plan.descend
    for field, value in msg.ListFields():
        mode = descend.get(field.number)
        if mode is None:
            continue
        field_path = join_path(path, field.name)
        if mode == _SINGULAR:
            _validate(value, field_path, issues)
        elif mode == _REPEATED:
            for index, item in enumerate(value):
                _validate(item, index_path(field_path, index), issues)
        else:
            for key in sorted(value):
                _validate(value[key], key_path(field_path, key), issues)


def _validate_any(any_msg: Any, path: str, issues: list[ConfigIssue]) -> None:
    try:
        inner, inner_path = unpack_any(any_msg, path)
    except ConfigError as exc:
        issues.extend(exc.errors)
        return
    if not isinstance(inner, PluginTypedConfig):
        _validate(inner, inner_path, issues)


def _compile_plan(descriptor: Any) -> _Plan:
    rules_ext, required_ext, disabled_ext, ignored_ext = _rules_extension()
    options = descriptor.GetOptions()
    skip = bool(
        (options.HasExtension(disabled_ext) and options.Extensions[disabled_ext])
        or (options.HasExtension(ignored_ext) and options.Extensions[ignored_ext])
    )
    required_oneofs: list[tuple[str, str]] = []
    for oneof in descriptor.oneofs:
        oneof_options = oneof.GetOptions()
        if oneof_options.HasExtension(required_ext) and oneof_options.Extensions[required_ext]:
            members = ", ".join(f.name for f in oneof.fields)
            required_oneofs.append((oneof.name, members))
    checks: list[_FieldCheck] = []
    descend: dict[int, int] = {}
    for field in descriptor.fields:
        rules = None
        field_options = field.GetOptions()
        if field_options.HasExtension(rules_ext):
            rules = field_options.Extensions[rules_ext]
        if rules is not None:
            check = _compile_field(field, rules)
            if check is not None:
                checks.append(check)
        skipped = rules is not None and rules.HasField("message") and rules.message.skip
        if field.type == FieldDescriptor.TYPE_MESSAGE and not skipped:
            if is_map_field(field):
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    descend[field.number] = _MAP
            elif field.is_repeated:
                descend[field.number] = _REPEATED
            else:
                descend[field.number] = _SINGULAR
    return _Plan(skip, tuple(required_oneofs), tuple(checks), descend)


def _compile_field(field: Any, rules: Any) -> _FieldCheck | None:
    name = field.name
    kind = rules.WhichOneof("type")
    sub = getattr(rules, kind) if kind else None
    if is_map_field(field):
        return _compile_map(name, field, sub) if kind == "map" else None
    if field.is_repeated:
        return _compile_repeated(name, field, sub) if kind == "repeated" else None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _compile_message_field(name, field, rules, kind, sub)
    check = value_check(kind, sub, field) if sub is not None else None
    if check is None:
        return None
    # Oneof members and proto3 'optional' scalars have presence: PGV checks them only if set.
    only_if_set = bool(field.has_presence)

    def check_scalar(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
        if only_if_set and not msg.HasField(name):
            return
        check(getattr(msg, name), join_path(path, name), issues)

    return check_scalar


def _compile_message_field(
    name: str, field: Any, rules: Any, kind: str | None, sub: Any
) -> _FieldCheck | None:
    required = bool(rules.HasField("message") and rules.message.required)
    if kind in ("duration", "any", "timestamp") and sub.HasField("required"):
        required = required or bool(sub.required)
    check: ValueCheck | None = None
    if sub is not None:
        target = field
        if field.message_type.full_name in WELL_KNOWN_TYPES and kind not in (
            "duration",
            "any",
            "timestamp",
        ):
            # Rules on a wrapper (UInt32Value, StringValue, ...) apply to its wrapped value.
            target = field.message_type.fields_by_name.get("value")
        if target is not None:
            check = value_check(kind, sub, target)
    if check is None and not required:
        return None
    unwrap = (
        field.message_type.full_name in WELL_KNOWN_TYPES
        and "value" in field.message_type.fields_by_name
        and kind not in ("duration", "any", "timestamp")
    )

    # 'required' on a oneof member is moot: PGV checks a oneof member only when it is the one
    # set (the oneof itself may be required, which validate.required on the oneof expresses).
    if field.containing_oneof is not None:
        required = False
        if check is None:
            return None

    def check_message(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
        if not msg.HasField(name):
            if required:
                issues.append(ConfigIssue(join_path(path, name), "value is required"))
            return
        if check is not None:
            value = getattr(msg, name)
            check(value.value if unwrap else value, join_path(path, name), issues)

    return check_message


def _compile_repeated(name: str, field: Any, sub: Any) -> _FieldCheck | None:
    min_items = sub.min_items if sub.HasField("min_items") else None
    max_items = sub.max_items if sub.HasField("max_items") else None
    unique = bool(sub.unique) and field.type != FieldDescriptor.TYPE_MESSAGE
    ignore_empty = bool(sub.ignore_empty)
    item_check = _element_check(sub.items, field) if sub.HasField("items") else None

    def check_repeated(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
        items = getattr(msg, name)
        count = len(items)
        if count == 0 and ignore_empty:
            return
        field_path = join_path(path, name)
        if min_items is not None and count < min_items:
            issues.append(
                ConfigIssue(field_path, f"value must contain at least {min_items} item(s)")
            )
        if max_items is not None and count > max_items:
            issues.append(
                ConfigIssue(field_path, f"value must contain no more than {max_items} item(s)")
            )
        if unique and len(set(items)) != count:
            issues.append(ConfigIssue(field_path, "repeated value must contain unique items"))
        if item_check is not None:
            for index, item in enumerate(items):
                item_check(item, index_path(field_path, index), issues)

    return check_repeated


def _compile_map(name: str, field: Any, sub: Any) -> _FieldCheck | None:
    entry = field.message_type
    min_pairs = sub.min_pairs if sub.HasField("min_pairs") else None
    max_pairs = sub.max_pairs if sub.HasField("max_pairs") else None
    ignore_empty = bool(sub.ignore_empty)
    key_check = (
        _element_check(sub.keys, entry.fields_by_name["key"]) if sub.HasField("keys") else None
    )
    value_check_ = (
        _element_check(sub.values, entry.fields_by_name["value"])
        if sub.HasField("values")
        else None
    )

    def check_map(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
        pairs = getattr(msg, name)
        count = len(pairs)
        if count == 0 and ignore_empty:
            return
        field_path = join_path(path, name)
        if min_pairs is not None and count < min_pairs:
            issues.append(
                ConfigIssue(field_path, f"value must contain at least {min_pairs} pair(s)")
            )
        if max_pairs is not None and count > max_pairs:
            issues.append(
                ConfigIssue(field_path, f"value must contain no more than {max_pairs} pair(s)")
            )
        if key_check is None and value_check_ is None:
            return
        for key in sorted(pairs):
            item_path = key_path(field_path, key)
            if key_check is not None:
                key_check(key, item_path, issues)
            if value_check_ is not None:
                value_check_(pairs[key], item_path, issues)

    return check_map


def _element_check(rules: Any, element_field: Any) -> ValueCheck | None:
    """The check for one list item / map key / map value, from nested FieldRules.

    ``message.required`` is meaningless here (an element always exists) and is ignored.
    """
    kind = rules.WhichOneof("type")
    if kind is None:
        return None
    message_type = element_field.message_type
    if (
        message_type is not None
        and message_type.full_name in WELL_KNOWN_TYPES
        and kind not in ("duration", "any", "timestamp")
    ):
        wrapped = message_type.fields_by_name.get("value")
        inner = value_check(kind, getattr(rules, kind), wrapped) if wrapped else None
        return _unwrapping(inner) if inner is not None else None
    return value_check(kind, getattr(rules, kind), element_field)


def _unwrapping(check: ValueCheck) -> ValueCheck:
    def unwrap(value: Any, path: str, issues: list[ConfigIssue]) -> None:
        check(value.value, path, issues)

    return unwrap


def _listener_checks(msg: Any, path: str, issues: list[ConfigIssue]) -> None:
    # Envoy rejects a listener without an address in C++ ("address is necessary"), not through
    # PGV: internal listeners and API listeners are the exceptions.
    if not msg.HasField("address") and not (
        msg.HasField("internal_listener") or msg.HasField("api_listener")
    ):
        issues.append(ConfigIssue(join_path(path, "address"), "value is required"))


# Checks Envoy performs in C++ at config load, keyed by message type, run after the PGV rules.
_ENVOY_CHECKS: dict[str, Callable[[Any, str, list[ConfigIssue]], None]] = {
    "envoy.config.listener.v3.Listener": _listener_checks,
}
