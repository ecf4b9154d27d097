"""Config errors and the field paths they point at.

Every problem found in a config (YAML syntax, JSON-to-proto parsing, validation rules) becomes a
``ConfigIssue``: a path written the way a user navigates their YAML
(``static_resources.listeners[0].address.socket_address.port_value``) and a one-line message.
``ConfigError`` carries one or more of them, so a user fixing a config sees every validation
problem at once instead of one per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "describe_value",
    "index_path",
    "join_path",
    "key_path",
]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (``path``) and what (``message``)."""

    path: str
    message: str

    def __str__(self) -> str:
        # A root-level problem has no path; printing ': message' would look like a bug.
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """One or more config errors.

    ``errors`` is the list of ``ConfigIssue``; ``str()`` renders one ``<path>: <message>`` line
    per issue. ``source`` names the file (or ``"<string>"``) when the error came from a loader.
    """

    errors: list[ConfigIssue]
    source: str | None

    def __init__(
        self,
        errors: ConfigIssue | Iterable[ConfigIssue],
        *,
        source: str | None = None,
    ) -> None:
        issues = [errors] if isinstance(errors, ConfigIssue) else list(errors)
        if not issues:
            # An error without a reason is useless to the user and would hide a caller's bug.
            raise ValueError("ConfigError needs at least one ConfigIssue")
        self.errors = issues
        self.source = source
        super().__init__(self._render())

    @classmethod
    def at(cls, path: str, message: str, *, source: str | None = None) -> ConfigError:
        """Shorthand for an error with a single issue."""
        return cls([ConfigIssue(path, message)], source=source)

    def _render(self) -> str:
        return "\n".join(str(issue) for issue in self.errors)

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[Any, ...]:
        # Worker processes pass errors across process boundaries; the default pickling of an
        # Exception would call __init__ with the rendered string instead of the issue list.
        return (_rebuild_config_error, (self.errors, self.source))


def _rebuild_config_error(errors: list[ConfigIssue], source: str | None) -> ConfigError:
    return ConfigError(errors, source=source)


def join_path(parent: str, name: str) -> str:
    """``parent.name``; a bare ``name`` at the root."""
    return f"{parent}.{name}" if parent else name


def index_path(parent: str, index: int) -> str:
    """``parent[index]`` for a repeated field element."""
    return f"{parent}[{index}]"


def key_path(parent: str, key: object) -> str:
    """``parent[key]`` for a map value.

    Map keys are written unquoted, as protobuf's own JSON errors do; Envoy's map keys (filter
    names, protocol option type names) never contain ``]``, so the path stays unambiguous.
    """
    return f"{parent}[{key}]"


def describe_value(value: object) -> str:
    """Short description of a YAML value for messages like 'expected a string, got ...'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
