"""Fixtures for the TLS tests: a PKI made at test time and plain HTTP echo upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tls_certs import Pki, make_pki
from tls_peers import HttpEchoServer


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def echoes() -> Iterator[list[HttpEchoServer]]:
    """Three HTTP echo upstreams, each answering with its own port."""
    servers = [HttpEchoServer() for _ in range(3)]
    for s in servers:
        s.__enter__()
    yield servers
    for s in servers:
        s.__exit__()
