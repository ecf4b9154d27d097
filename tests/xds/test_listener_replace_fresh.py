"""A listener replaced over LDS (same address, another filter chain) loses no new connection.

Clients open only new connections, one request each, while the listener is replaced 50 times
(filesystem LDS, each version another ``server_name``). A connection the kernel completed just
before a replacement -- still in the accept queue, or accepted by the old listener but with its
request not read yet -- must be answered (by the old filter chain or the new one), never reset
or closed unanswered. Run with one process, with ``--concurrency 2`` (each worker its own
``SO_REUSEPORT`` socket) and, as the oracle, with the real Envoy 1.39.3 (which loses none).

envoi used to: the old listener's HTTP connections were drained at once, and one accepted just
before the replacement that had not sent its request yet counted as idle and was closed -- its
request then met a reset (2-3 of ~700 requests per run)."""

from __future__ import annotations

import http.client
import socket
import threading
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from envoi.testing.envoy import EnvoyProcess
from http_peers import EchoServer
from test_fs_xds_e2e import move_into_place

REPLACEMENTS = 50
CLIENTS = 3

BOOTSTRAP = """
node: {{id: envoi-test, cluster: envoi-test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {{path: {dir}/lds.yaml}}
static_resources:
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
"""

LDS = """
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: replaced
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
{listener_filters}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
          http_connection_manager.v3.HttpConnectionManager"
        stat_prefix: replaced
        server_name: envoi-{version}
        http_filters:
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: echo}}
"""


class FreshClients:
    """``CLIENTS`` threads, each opening a new connection per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.servers: set[str] = set()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> FreshClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self) -> None:
        while not self.stop.is_set() and self.ok + len(self.failures) < 100_000:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.servers.add(resp.getheader("server", ""))
                    else:
                        self.failures.append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()


INSPECTOR = """\
  listener_filters:
  - name: envoy.filters.listener.http_inspector
    typed_config:
      "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.\\
        HttpInspector\""""


@pytest.mark.parametrize("kind,concurrency,inspect", [
    ("envoi", 1, False), ("envoi", 2, False), ("envoi", 1, True), ("envoy", 1, False),
    ("envoy", 1, True)])
def test_replacements_lose_no_new_connection(tmp_path: Path, kind: str, concurrency: int,
                                             inspect: bool) -> None:
    """``inspect``: a listener filter (``http_inspector``) runs on each new connection before
    its filter chain is chosen, so envoi accepts it itself (``envoi.network.acceptor``)."""
    port, admin = free_port(), free_port()
    lds = tmp_path / "lds.yaml"
    extra = INSPECTOR if inspect else ""

    def lds_text(version: int) -> str:
        return LDS.format(version=version, port=port, listener_filters=extra)

    with EchoServer() as echo:
        lds.write_text(lds_text(1))
        boot = BOOTSTRAP.format(admin=admin, dir=tmp_path, echo=echo.port)
        proc: EnvoiProcess | EnvoyProcess
        if kind == "envoi":
            proc = EnvoiProcess.from_yaml(boot, tmp_path, admin, concurrency=concurrency,
                                          args=("--drain-time-s", "2"))
        else:
            (tmp_path / "envoy.yaml").write_text(boot)
            proc = EnvoyProcess(tmp_path / "envoy.yaml", admin, tmp_path / "envoy.log",
                                args=("--drain-time-s", "2"))
        with proc:
            with FreshClients(port) as clients:
                wait_for(lambda: clients.ok >= 20, 30, what="traffic")
                for v in range(2, REPLACEMENTS + 2):
                    before = clients.ok
                    move_into_place(lds, lds_text(v))
                    wait_for(lambda v=v: proc.stats().get(
                        "listener_manager.lds.update_success") == v, 30, what=f"lds v{v}")
                    # Traffic meets each version's hand-over, not only some of them.
                    wait_for(lambda before=before: clients.ok >= before + 5, 30,
                             what=f"requests after v{v}")
                wait_for(lambda: f"envoi-{REPLACEMENTS + 1}" in clients.servers, 30,
                         what="the last version serves")
            st = proc.stats()
        print(f"\n{kind}: listener replaced {REPLACEMENTS}x (concurrency {concurrency}, "
              f"inspector {inspect}): "
              f"{clients.ok} requests ok, {len(clients.failures)} failed")
        assert st["listener_manager.listener_modified"] == REPLACEMENTS
        assert clients.failures == [], clients.failures[:10]


def _reply(s: socket.socket) -> tuple[bytes, bytes]:
    """The status line and headers of one reply on ``s`` (the echo body is read whole)."""
    f = s.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        assert line, f"closed after {head!r}"
        head += line
    length = next(int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                  if k.strip().lower() == b"content-length")
    f.read(length)
    return head.split(b"\r\n", 1)[0], head.lower()


# Long enough that the two requests after the replacement and the 1.5 s "not yet" window fit
# in it on a loaded box.
DRAIN = "8"


@pytest.mark.parametrize("kind", ["envoi", "envoy"])
def test_open_connections_stay_until_the_drain_time(tmp_path: Path, kind: str) -> None:
    """An idle keep-alive connection and one that has sent nothing yet, open when the listener
    is replaced: both are still served by the old filter chain (``server: envoi-1``), and a
    connection nobody uses is closed when ``--drain-time-s`` is over, as in Envoy."""
    port, admin = free_port(), free_port()
    lds = tmp_path / "lds.yaml"
    with EchoServer() as echo:
        lds.write_text(LDS.format(version=1, port=port, listener_filters=""))
        boot = BOOTSTRAP.format(admin=admin, dir=tmp_path, echo=echo.port)
        proc: EnvoiProcess | EnvoyProcess
        if kind == "envoi":
            proc = EnvoiProcess.from_yaml(boot, tmp_path, admin, args=("--drain-time-s", DRAIN))
        else:
            (tmp_path / "envoy.yaml").write_text(boot)
            proc = EnvoyProcess(tmp_path / "envoy.yaml", admin, tmp_path / "envoy.log",
                                args=("--drain-time-s", DRAIN))
        get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"
        with proc, socket.create_connection(("127.0.0.1", port), timeout=10) as used, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as fresh, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as unused:
            used.sendall(get)
            assert _reply(used)[0] == b"HTTP/1.1 200 OK"
            active = f"listener.127.0.0.1_{port}.downstream_cx_active"
            wait_for(lambda: proc.stats().get(active) == 3, 10, what="3 connections")
            move_into_place(lds, LDS.format(version=2, port=port, listener_filters=""))
            wait_for(lambda: proc.stats().get("listener_manager.lds.update_success") == 2, 30,
                     what="lds v2")
            for s in (used, fresh):
                s.sendall(get)
                status, head = _reply(s)
                assert status == b"HTTP/1.1 200 OK"
                assert b"server: envoi-1\r\n" in head
            # Nobody uses the third: it is closed when the drain time is over, not before.
            unused.settimeout(1.5)
            with pytest.raises(TimeoutError):
                unused.recv(1)
            unused.settimeout(30)
            assert unused.recv(1) == b""
