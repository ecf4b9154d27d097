from __future__ import annotations

from collections.abc import Iterator

import pytest
from control_plane import ControlPlane


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    """A scripted ADS control plane on a free loopback port."""
    plane = ControlPlane().start()
    yield plane
    plane.stop()
