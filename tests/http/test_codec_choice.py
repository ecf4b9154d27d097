"""``--http1-codec auto`` is resolved once, not per connection: without httptools, the failed
``import httptools`` behind ``auto`` used to run for every connection (a failed import is not
cached by Python and costs ~0.2 ms), which made ``auto`` slower than ``h11``."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import pytest
from envoi_http import codec
from envoi_http.codec import make_codec, resolve_backend


class _NoHttptools(importlib.abc.MetaPathFinder):
    """Hides httptools and counts the attempts to import it."""

    def __init__(self) -> None:
        self.attempts = 0

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> Any:
        if name == "httptools":
            self.attempts += 1
            raise ModuleNotFoundError("No module named 'httptools'")
        return None


@pytest.fixture
def no_httptools(monkeypatch: pytest.MonkeyPatch) -> Iterator[_NoHttptools]:
    finder = _NoHttptools()
    for name in [m for m in sys.modules if m == "httptools" or m.startswith("httptools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    codec._httptools_installed.cache_clear()
    yield finder
    codec._httptools_installed.cache_clear()


def test_auto_without_httptools_asks_once(no_httptools: _NoHttptools) -> None:
    for _ in range(100):
        assert make_codec("auto", "server").backend == "h11"
        assert make_codec("auto", "client").backend == "h11"
    assert resolve_backend("auto") == "h11"
    assert no_httptools.attempts == 1


def test_auto_with_httptools() -> None:
    codec._httptools_installed.cache_clear()
    assert resolve_backend("auto") == "httptools"
    assert make_codec("auto", "server").backend == "httptools"
    assert resolve_backend("h11") == "h11"
