"""Typed config for a plugin's own ``typed_config``, from a dataclass: no hand-written checks.

::

    @dataclass(frozen=True)
    class TenantConfig:
        header: str = "x-tenant"          # optional: it has a default
        allowed: list[str] = field(default_factory=list)
        reject_status: int = 403

        def __post_init__(self) -> None:  # checks across fields: raise ValueError
            if not 400 <= self.reject_status <= 599:
                raise ValueError("reject_status: must be a 4xx or 5xx status")

    @hookimpl
    def envoi_config_schemas():
        return [config_schema("acme.filters.http.tenant.v1.Tenant", TenantConfig)]

The factory then gets a ``TenantConfig``. Every problem in the data is a config error with its
path (``...typed_config.allowed[2]: expected a string, got 7``), all reported at once: a key the
dataclass does not have (config is a contract: nothing is silently ignored), a missing required
field, a value of the wrong type. Field types: ``str``, ``int``, ``float`` (an int is accepted),
``bool``, ``bytes`` (from a string), ``list[T]``, ``dict[str, T]``, a nested dataclass,
``T | None``, ``Literal[...]`` and ``enum.Enum`` subclasses (by member name). A ``ValueError``
from ``__post_init__`` is reported at the entry (or at the field its message starts with).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from envoi.config import ConfigError, ConfigIssue
from envoi.config.errors import index_path, join_path, key_path
from envoi.extensions import ConfigSchema

T = TypeVar("T")

__all__ = ["config_schema", "parse_dataclass"]


def config_schema(type_url: str, cls: type[T]) -> ConfigSchema:
    """A :class:`~envoi.extensions.ConfigSchema` that parses ``typed_config`` into ``cls``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"config_schema needs a dataclass, not {cls!r}")
    _hints(cls)  # unresolvable annotations fail at registration, not at the first config
    # The dataclass's fields are the keys the filter implements; the parser refuses any other
    # key at every level, nested dataclasses included.
    fields = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return ConfigSchema(type_url, lambda data: parse_dataclass(cls, data), fields=fields)


def parse_dataclass(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """``data`` (plain JSON values) -> a ``cls`` instance; raises ``ConfigError`` with every
    problem, paths relative to ``path``."""
    issues: list[ConfigIssue] = []
    value = _Parser(issues).dataclass(cls, data, path)
    if issues:
        raise ConfigError(issues)
    return typing.cast(T, value)


_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    found = _hint_cache.get(cls)
    if found is None:
        found = _hint_cache[cls] = typing.get_type_hints(cls)
    return found


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"{type(value).__name__} {value!r}"


class _Invalid(Exception):
    """One value could not be converted; the message says what was expected."""


class _Parser:
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues

    def dataclass(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            self.issues.append(ConfigIssue(path, f"expected an object, got {_describe(data)}"))
            return None
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = _hints(cls)
        before = len(self.issues)
        for key in data:
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                self.issues.append(ConfigIssue(join_path(path, str(key)),
                                               f"unknown field (known: {known})"))
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            fpath = join_path(path, name)
            if name not in data:
                if f.default is dataclasses.MISSING and \
                        f.default_factory is dataclasses.MISSING:
                    self.issues.append(ConfigIssue(fpath, "required"))
                continue
            kwargs[name] = self.value(hints[name], data[name], fpath)
        if len(self.issues) > before:
            return None
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            head, sep, rest = message.partition(": ")
            where = join_path(path, head) if sep and head in fields else path
            self.issues.append(ConfigIssue(where, rest if where != path else message))
            return None

    def value(self, tp: Any, data: Any, path: str) -> Any:
        try:
            return self._value(tp, data, path)
        except _Invalid as exc:
            self.issues.append(ConfigIssue(path, str(exc)))
            return None

    def _value(self, tp: Any, data: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if tp is Any:
            return data
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if data is None and type(None) in args:
                return None
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                return self._value(rest[0], data, path)
            raise _Invalid(f"unions other than 'T | None' are not supported ({tp})")
        if origin is typing.Literal:
            allowed = typing.get_args(tp)
            if not any(data == a and type(data) is type(a) for a in allowed):
                raise _Invalid(f"must be one of {', '.join(map(repr, allowed))}, "
                               f"got {_describe(data)}")
            return data
        if origin is list:
            (item,) = typing.get_args(tp) or (Any,)
            if not isinstance(data, list):
                raise _Invalid(f"expected a list, got {_describe(data)}")
            return [self.value(item, v, index_path(path, i)) for i, v in enumerate(data)]
        if origin is dict:
            key_tp, item = typing.get_args(tp) or (str, Any)
            if key_tp is not str:
                raise _Invalid("only dict[str, T] is supported")
            if not isinstance(data, dict):
                raise _Invalid(f"expected an object, got {_describe(data)}")
            return {k: self.value(item, v, key_path(path, k)) for k, v in data.items()}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass(tp, data, path)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            if isinstance(data, str) and data in tp.__members__:
                return tp[data]
            raise _Invalid(f"must be one of {', '.join(tp.__members__)}, got {_describe(data)}")
        return _scalar(tp, data)


def _scalar(tp: Any, data: Any) -> Any:
    if tp is bool:
        if isinstance(data, bool):
            return data
        raise _Invalid(f"expected true or false, got {_describe(data)}")
    if tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if isinstance(data, float) and data.is_integer():
            return int(data)
        raise _Invalid(f"expected an integer, got {_describe(data)}")
    if tp is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise _Invalid(f"expected a number, got {_describe(data)}")
    if tp is str:
        if isinstance(data, str):
            return data
        raise _Invalid(f"expected a string, got {_describe(data)}")
    if tp is bytes:
        if isinstance(data, str):
            return data.encode()
        raise _Invalid(f"expected a string, got {_describe(data)}")
    raise _Invalid(f"fields of type {tp!r} are not supported by envoi.schema")
