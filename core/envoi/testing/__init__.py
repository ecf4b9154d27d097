"""Helpers for testing envoi filters and configs.

* :class:`NetworkFilterDriver` runs network filters on a real :class:`~envoi.network.connection.
  Connection` with a fake transport: feed bytes, read what was written, assert statuses, no
  sockets.
* :class:`HttpFilterDriver` runs the HTTP filters one factory adds, for one stream, with no
  server: request and response headers, body and trailers in; statuses, what passed, the local
  reply and stat deltas out.
* :func:`factory_context` makes the context a factory gets (a :class:`StandaloneServer`, the
  installed plugins), to build filters in unit tests.
* :class:`StatsDelta` records counter values before and after a block.
* :class:`EnvoiProcess` starts ``python -m envoi`` from a YAML file on free ports and waits for
  ``/ready``; the pytest plugin :mod:`envoi.testing.pytest_plugin` exposes it as the
  ``envoi_process`` fixture.
* :class:`EnvoyProcess` starts the real Envoy on the same config, as an oracle.
"""

from envoi.testing.context import StandaloneServer, factory_context
from envoi.testing.driver import FakeTransport, NetworkFilterDriver, StatsDelta
from envoi.testing.envoy import EnvoyProcess, envoy_binary, envoy_validate
from envoi.testing.filter_manager_model import LocalReply, Message
from envoi.testing.http_driver import HttpFilterDriver
from envoi.testing.process import EnvoiProcess, free_port, wait_for

__all__ = [
    "EnvoiProcess",
    "EnvoyProcess",
    "FakeTransport",
    "HttpFilterDriver",
    "LocalReply",
    "Message",
    "NetworkFilterDriver",
    "StandaloneServer",
    "StatsDelta",
    "envoy_binary",
    "envoy_validate",
    "factory_context",
    "free_port",
    "wait_for",
]
