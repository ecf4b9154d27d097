"""pytest fixtures for envoi (registered through the ``pytest11`` entry point).

``envoi_process(yaml_text, admin_port)`` starts envoi from a config and stops it after the test::

    def test_proxy(envoi_process, tmp_path):
        admin, port = free_port(), free_port()
        proc = envoi_process(CONFIG.format(admin=admin, port=port), admin)
        assert proc.stats()["listener_manager.total_listeners_active"] == 1

``proxy_process(kind, yaml_text, admin_port)`` starts the same config under ``"envoy"`` (the real
Envoy, the oracle) or ``"envoi"``; both answer ``stats()`` and ``get(path)``. Parametrise a
fixture over the two kinds to run one test against both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envoi.testing.envoy import EnvoyProcess
from envoi.testing.process import EnvoiProcess


@pytest.fixture
def envoi_process(tmp_path: Path) -> Iterator[Callable[..., EnvoiProcess]]:
    started: list[EnvoiProcess] = []

    def start(yaml_text: str, admin_port: int, *, wait_ready: bool = True,
              **kw: Any) -> EnvoiProcess:
        d = tmp_path / f"envoi{len(started)}"
        d.mkdir()
        proc = EnvoiProcess.from_yaml(yaml_text, d, admin_port, **kw)
        started.append(proc)
        return proc.start(wait_ready=wait_ready)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def proxy_process(tmp_path: Path, envoi_process: Callable[..., EnvoiProcess]
                  ) -> Iterator[Callable[[str, str, int], EnvoiProcess | EnvoyProcess]]:
    envoys: list[EnvoyProcess] = []

    def start(kind: str, yaml_text: str, admin_port: int) -> EnvoiProcess | EnvoyProcess:
        if kind == "envoi":
            return envoi_process(yaml_text, admin_port)
        if kind != "envoy":
            raise ValueError(f"kind must be 'envoy' or 'envoi', not {kind!r}")
        cfg = tmp_path / f"envoy{len(envoys)}.yaml"
        cfg.write_text(yaml_text)
        envoy = EnvoyProcess(cfg, admin_port, tmp_path / f"envoy{len(envoys)}.log")
        envoys.append(envoy)
        return envoy.start()

    yield start
    for envoy in envoys:
        envoy.stop()
