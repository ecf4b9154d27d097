"""pytest fixtures for envoi (registered through the ``pytest11`` entry point).

``envoi_process(yaml_text, admin_port)`` starts envoi from a config and stops it after the test::

    def test_proxy(envoi_process, tmp_path):
        admin, port = free_port(), free_port()
        proc = envoi_process(CONFIG.format(admin=admin, port=port), admin)
        assert proc.stats()["listener_manager.total_listeners_active"] == 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envoi.testing.process import EnvoiProcess


@pytest.fixture
def envoi_process(tmp_path: Path) -> Iterator[Callable[..., EnvoiProcess]]:
    started: list[EnvoiProcess] = []

    def start(yaml_text: str, admin_port: int, **kw: Any) -> EnvoiProcess:
        d = tmp_path / f"envoi{len(started)}"
        d.mkdir()
        proc = EnvoiProcess.from_yaml(yaml_text, d, admin_port, **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
