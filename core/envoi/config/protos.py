"""Access to the xds-protos messages: loading them, resolving type URLs, field lookup.

protobuf resolves an ``Any``'s ``@type`` only against messages already in the default descriptor
pool, i.e. whose generated ``_pb2`` module has been imported. A config may name any Envoy
extension: ``find_message_type`` imports the generated modules of a message's package the first
time a config names it, and the config parser resolves every ``@type`` through it before
protobuf parses the config. ``ensure_protos_loaded`` imports all of them (about 0.3 s and
~10 MiB per process), for the xDS client, whose resources may name any type.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Any

from google.protobuf import descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import Message

__all__ = [
    "ANY_TYPE",
    "TYPED_STRUCT_TYPES",
    "WELL_KNOWN_TYPES",
    "XDS_TYPED_STRUCT_URL",
    "duration_seconds",
    "ensure_config_protos",
    "ensure_protos_loaded",
    "field_for_key",
    "find_message_type",
    "format_duration",
    "is_map_field",
    "message_class",
    "type_name_of",
]

# Packages whose generated modules may be named by an ``@type`` in a Bootstrap. ``envoy.service``
# (xDS RPC stubs) and ``envoy.admin`` (config dump output) are left out: they are never config.
# ``envoy.watchdog`` is in because Bootstrap.watchdogs actions take its typed configs.
_PROTO_PACKAGES = (
    "envoy.config",
    "envoy.extensions",
    "envoy.type",
    "envoy.watchdog",
    "xds.type",
    "udpa.type",
)

ANY_TYPE = "google.protobuf.Any"
XDS_TYPED_STRUCT_URL = "type.googleapis.com/xds.type.v3.TypedStruct"
# Envoy accepts both wrappers for "config of a type protobuf does not know".
TYPED_STRUCT_TYPES = frozenset({"xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"})

# Messages json_format writes in a special (non-object or object-with-rules) JSON form; code that
# walks config dicts by descriptor must not treat their JSON as ordinary fields.
WELL_KNOWN_TYPES = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.Timestamp",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)

# What every config parse needs whatever it names: the Bootstrap (and, through its imports, the
# messages it is built from) and the TypedStruct wrappers plugin-typed configs are rewritten to.
_CONFIG_MODULES = (
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "xds.type.v3.typed_struct_pb2",
    "udpa.type.v1.typed_struct_pb2",
)

_load_lock = threading.Lock()
_loaded = False
_config_loaded = False
_field_maps: dict[str, dict[str, Any]] = {}


def ensure_protos_loaded() -> None:
    """Import every generated ``_pb2`` module of the config packages, once per process."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for package_name in _PROTO_PACKAGES:
            _import_pb2_modules(package_name)
        _loaded = True


def ensure_config_protos() -> None:
    """Import the modules every config parse needs. Other messages are imported when a config
    names them (:func:`find_message_type`): importing all of them (about 1,400 modules) would
    cost each process ~10 MiB of memory and ~0.3 s of start-up for types it never uses."""
    global _config_loaded
    if _config_loaded:
        return
    with _load_lock:
        for module_name in _CONFIG_MODULES:
            _import_quietly(module_name)
        _config_loaded = True


def _import_pb2_modules(package_name: str) -> None:
    try:
        package = importlib.import_module(package_name)
    except ImportError:
        # An older xds-protos may lack a package (e.g. envoy.watchdog); its types then simply
        # stay unknown and configs naming them get "could not find @type".
        return
    # Walking the directory tree instead of pkgutil.walk_packages avoids importing every
    # package __init__ just to list its children; only the _pb2 modules are imported.
    for root in package.__path__:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d.isidentifier()]
            rel = os.path.relpath(dirpath, root)
            prefix = package_name if rel == "." else f"{package_name}.{rel.replace(os.sep, '.')}"
            for filename in filenames:
                if filename.endswith("_pb2.py"):
                    _import_quietly(f"{prefix}.{filename[:-3]}")


def _import_quietly(module_name: str) -> None:
    # One broken generated module must not make every other config type unusable.
    with contextlib.suppress(Exception):
        importlib.import_module(module_name)


def _pool() -> Any:
    return descriptor_pool.Default()


def _import_package_of(name: str) -> bool:
    """Import the generated modules of the proto package declaring message ``name`` (a full
    name, possibly of a nested message); True if a config package directory was found."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        package_name = ".".join(parts[:cut])
        if not package_name.startswith(_PROTO_PACKAGES):
            continue
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for root in package.__path__:
            try:
                filenames = sorted(os.listdir(root))
            except OSError:
                continue
            for filename in filenames:
                if filename.endswith("_pb2.py"):
                    _import_quietly(f"{package_name}.{filename[:-3]}")
        return True
    return False


def type_name_of(type_url: str) -> str:
    """Full message name in a type URL: the part after the last ``/``, as protobuf resolves it."""
    return type_url.rsplit("/", 1)[-1]


def find_message_type(type_url_or_name: str) -> Any | None:
    """The message descriptor a type URL (or bare full name) names, or None if unknown; the
    generated modules of its package are imported if they were not yet."""
    name = type_name_of(type_url_or_name)
    if not name:
        return None
    try:
        return _pool().FindMessageTypeByName(name)
    except KeyError:
        pass
    if _loaded or not _import_package_of(name):
        return None
    try:
        return _pool().FindMessageTypeByName(name)
    except KeyError:
        return None


def message_class(descriptor: Any) -> type[Message]:
    """The generated Python class for a message descriptor."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def is_map_field(field: Any) -> bool:
    """True for ``map<K, V>`` fields (repeated fields of a synthetic map-entry message)."""
    return bool(
        field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def field_for_key(descriptor: Any, key: object) -> Any | None:
    """The field a JSON/YAML key names: the proto name (Envoy's YAML) or the camelCase json_name.

    json_format accepts both spellings, so any code that walks config dicts must too.
    """
    if not isinstance(key, str):
        return None
    fields = _field_maps.get(descriptor.full_name)
    if fields is None:
        fields = {}
        for field in descriptor.fields:
            fields[field.json_name] = field
        for field in descriptor.fields:
            # The proto name wins if a json_name ever collides with another field's name.
            fields[field.name] = field
        _field_maps[descriptor.full_name] = fields
    return fields.get(key)


def duration_seconds(d: duration_pb2.Duration) -> float:
    """A ``google.protobuf.Duration`` as float seconds."""
    return float(d.seconds) + float(d.nanos) / 1e9


def format_duration(d: duration_pb2.Duration) -> str:
    """A Duration the way Envoy YAML writes it: ``0s``, ``1.5s``, ``0.000000001s``."""
    seconds = int(d.seconds)
    nanos = int(d.nanos)
    if nanos == 0:
        return f"{seconds}s"
    sign = "-" if seconds < 0 or nanos < 0 else ""
    total = abs(seconds) * 1_000_000_000 + abs(nanos)
    whole, frac = divmod(total, 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}".rstrip("0") + "s"
