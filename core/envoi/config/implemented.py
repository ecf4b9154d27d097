"""Which config fields envoi acts on, and the check that refuses every other one.

A config field envoi accepts but does not act on is worse than an error: an ignored upstream
``transport_socket`` sends secrets in the clear, an ignored ``normalize_path`` lets routes and
the upstream see different paths. So every part of envoi that consumes a proto message declares
the fields of that message it implements, and ``unimplemented_fields`` walks a whole config
(every set field, ``ListFields()`` recursively: nested messages, lists, maps, oneof members and
the messages inside ``Any``/``typed_config``, TypedStruct-wrapped ones included) and turns every
set field nobody declared into a config error naming its path::

    static_resources.clusters[0].transport_socket: not implemented by envoi

A field added to a message later is refused until someone implements it and declares it.

Declaring
---------
The module that consumes a message declares, at import time, next to the code that reads it::

    from envoi.config import implements

    implements("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
               "stat_prefix", "cluster", "weighted_clusters", "idle_timeout")

Keys are the message's full proto name; a message may be declared from several modules (each
adds its fields). Rules:

- Declare a field only when the code acts on it for every value the proto allows, or rejects
  (with a ConfigError naming the field) the values it does not handle. A field that is parsed
  but not acted on is not implemented.
- A declared message-typed field is walked into: its own message's fields must be declared too.
  Well-known types (Duration, wrappers, Struct, ...) are leaves.
- The module must be imported when the plugin registers (the plugin module imports it, or the
  registration hook does), so the declarations exist before any config is checked.
- A field set to its default value is not "set" for proto3 scalars, so ``codec_type: AUTO``
  needs no declaration; message-typed fields (``use_remote_address: false``) do.
- A declaration holds wherever the message appears. A message used in several places
  (``core.v3.HttpProtocolOptions`` for the HCM and for clusters) is declared with every field
  some consumer implements, and each consumer refuses, in its own place, the fields it does not
  act on: ``issues += refuse_unlisted(msg, ("idle_timeout", ...), path)``.

Plugins with their own config schema (``envoi_config_schemas``) declare their top-level keys in
``ConfigSchema.fields`` instead; the core refuses other keys before ``parse`` runs
(``check_schema_keys``).

``implemented_fields()`` lists the declarations; ``scripts/implemented_fields.py`` writes the
README's list from it, and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .errors import ConfigError, ConfigIssue, index_path, join_path, key_path
from .protos import ANY_TYPE, WELL_KNOWN_TYPES, find_message_type, is_map_field
from .typed import PluginTypedConfig, unpack_any

__all__ = [
    "NOT_IMPLEMENTED",
    "address_issue",
    "check_schema_keys",
    "implemented_fields",
    "implements",
    "refuse_unlisted",
    "unimplemented_fields",
]

NOT_IMPLEMENTED = "not implemented by envoi"

_declared: dict[str, set[str]] = {}
_declared_by: dict[str, set[str]] = {}


def implements(message: str, *fields: str) -> None:
    """Declare that envoi acts on ``fields`` of the proto message ``message`` (its full name,
    e.g. ``envoy.config.cluster.v3.Cluster``). Call at import time of the consuming module."""
    if not fields:
        raise ValueError(f"implements({message!r}) names no field")
    _declared.setdefault(message, set()).update(fields)
    owner = _caller_module()
    if owner:
        _declared_by.setdefault(message, set()).add(owner)


def _caller_module() -> str:
    import sys

    frame = sys._getframe(2)
    return str(frame.f_globals.get("__name__", ""))


def implemented_fields() -> dict[str, frozenset[str]]:
    """Every declaration: message full name -> the fields envoi implements."""
    return {name: frozenset(fields) for name, fields in sorted(_declared.items())}


def declared_by(message: str) -> frozenset[str]:
    """The modules that declared fields of ``message`` (for docs and error hints)."""
    return frozenset(_declared_by.get(message, ()))


def check_declarations() -> list[str]:
    """Declarations that name a message or field protobuf does not know (a typo would otherwise
    silently refuse a field that was meant to work). Needs the protos loaded."""
    problems = []
    for name, fields in sorted(_declared.items()):
        descriptor = find_message_type(name)
        if descriptor is None:
            problems.append(f"{name}: no such message")
            continue
        for field in sorted(fields):
            if field not in descriptor.fields_by_name:
                problems.append(f"{name}.{field}: no such field")
    return problems


def unimplemented_fields(
    message: Any, path: str = "", *, known_type_urls: Collection[str] = ()
) -> list[ConfigIssue]:
    """One issue per set field in ``message`` (and everything under it) that no part of envoi
    declared. ``known_type_urls`` are the config types some registered factory serves: an
    ``Any`` of a type nobody serves is left to its consumer, which reports the unknown
    extension (with the package that provides it) instead of a line per field."""
    walker = _Walker({_bare(url) for url in known_type_urls})
    walker.walk(message, path)
    return walker.issues


def _bare(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


class _Walker:
    def __init__(self, known_types: set[str]) -> None:
        self.known_types = known_types
        self.issues: list[ConfigIssue] = []

    def walk(self, msg: Any, path: str) -> None:
        full_name = msg.DESCRIPTOR.full_name
        if full_name == ANY_TYPE:
            self.any(msg, path)
            return
        if full_name in WELL_KNOWN_TYPES:
            return
        declared = _declared.get(full_name, ())
        for field, value in msg.ListFields():
            field_path = join_path(path, field.name)
            if field.name not in declared:
                self.issues.append(ConfigIssue(field_path, NOT_IMPLEMENTED))
                continue
            if field.message_type is None:
                continue
            if is_map_field(field):
                if field.message_type.fields_by_name["value"].message_type is None:
                    continue
                for key in sorted(value):
                    self.walk(value[key], key_path(field_path, key))
            elif field.is_repeated:
                for index, item in enumerate(value):
                    self.walk(item, index_path(field_path, index))
            else:
                self.walk(value, field_path)

    def any(self, any_msg: Any, path: str) -> None:
        if not any_msg.type_url:
            return
        try:
            inner, inner_path = unpack_any(any_msg, path)
        except ConfigError:
            return  # validation reports an Any that cannot be unpacked
        if isinstance(inner, PluginTypedConfig):
            return  # a plugin schema's keys are checked where it is parsed (check_schema_keys)
        name = inner.DESCRIPTOR.full_name
        if name not in _declared and name not in self.known_types:
            return  # no factory serves it: the consumer reports the unknown extension
        self.walk(inner, inner_path)


def refuse_unlisted(msg: Any, allowed: Collection[str], path: str) -> list[ConfigIssue]:
    """A "not implemented" issue for every set field of ``msg`` outside ``allowed``: for a
    consumer of a shared message that implements only some of its declared fields."""
    return [ConfigIssue(join_path(path, f.name), NOT_IMPLEMENTED)
            for f, _ in msg.ListFields() if f.name not in allowed]


def address_issue(address: Any, path: str) -> ConfigIssue:
    """Why an ``envoy.config.core.v3.Address`` without a ``socket_address`` cannot be used: the
    kind it has instead is not implemented (the very issue the walk reports, so the two merge
    into one line), or it is empty."""
    kind = address.WhichOneof("address")
    if kind is not None:
        return ConfigIssue(join_path(path, kind), NOT_IMPLEMENTED)
    return ConfigIssue(path, "a socket_address is required")


def check_schema_keys(
    data: Mapping[str, Any], fields: Iterable[str], path: str, type_name: str
) -> None:
    """Refuse every key of a plugin config that its ``ConfigSchema.fields`` does not declare.

    ``fields`` are key paths: ``"stat_prefix"`` for a top-level key, ``"limits.max_bytes"`` for
    a key inside the object under ``limits`` (the keys of a list of objects are written the same
    way: ``"rules.name"``). An object whose keys no declaration names (``limits`` alone) is the
    schema's own to check. Raises ConfigError with one issue per unknown key."""
    declared = set(fields)
    issues: list[ConfigIssue] = []
    _check_keys(data, "", declared, path, type_name, issues)
    if issues:
        raise ConfigError(issues)


def _check_keys(
    data: Any, prefix: str, declared: set[str], path: str, type_name: str,
    issues: list[ConfigIssue],
) -> None:
    if isinstance(data, list):
        for index, item in enumerate(data):
            _check_keys(item, prefix, declared, index_path(path, index), type_name, issues)
        return
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        inner = dotted + "."
        nested = any(d.startswith(inner) for d in declared)
        if dotted not in declared and not nested:
            issues.append(ConfigIssue(join_path(path, str(key)),
                                      f"not implemented by the plugin serving {type_name}"))
            continue
        if nested:
            _check_keys(value, inner, declared, join_path(path, str(key)), type_name, issues)
