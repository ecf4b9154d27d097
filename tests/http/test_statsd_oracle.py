"""Stats sinks against the real Envoy: ``envoy.stat_sinks.statsd`` (UDP and TCP) and
``envoy.stat_sinks.dog_statsd`` (tags, datagram packing) receive the same metric names, types
and tags from Envoy 1.39.3 and from envoi, for the same config and the same traffic; the
counters are deltas (they add up to the traffic); every histogram value arrives once; with two
worker processes the server is flushed once (not once per worker)."""

from __future__ import annotations

import fnmatch
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ALL_ROUTES, EchoServer
from scripted_upstream import read_reply

N_REQUESTS = 7

CONFIG = """
node: {{id: node-1, cluster: cluster-1}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
stats_flush_interval: 0.5s
stats_sinks:
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    address: {{socket_address: {{address: 127.0.0.1, port_value: {udp}, protocol: UDP}}}}
- name: envoy.stat_sinks.dog_statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink
    address: {{socket_address: {{address: 127.0.0.1, port_value: {dog}}}}}
    prefix: dd
    max_bytes_per_datagram: 512
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    tcp_cluster_name: statsd_tcp
    prefix: tcpx
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: ingress_http
""" + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: web}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: web
    connect_timeout: 1s
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {web}}}}}}}
  - name: statsd_tcp
    connect_timeout: 1s
    load_assignment:
      cluster_name: statsd_tcp
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {tcp}}}}}}}
"""

# Metrics Envoy sends that envoi does not, and why (the stats oracle lists the same stats).
ENVOY_ONLY = {
    "*server.stats_recent_lookups": "the stats store has no lookup recorder",
    "*thread_local_cluster_manager.*": "no thread-local cluster managers",
    "*server.version": "envoi's server.version is 0, never set",
    "*server.hot_restart_generation": "no hot restart",
    "*runtime.override_dir_not_exists": "no runtime override directories are looked up",
    # Envoy adds 0 to these at start, which marks them used; envoi's counters are used once
    # they are non-zero.
    "*server.static_unknown_fields": "used at 0 in Envoy",
    "*server.dynamic_unknown_fields": "used at 0 in Envoy",
    "*server.wip_protos": "used at 0 in Envoy",
    # Gauges Envoy sets to 0 along the way (which marks them used) and envoi never moves.
    "*circuit_breakers.*.cx_pool_open": "envoi's HTTP/1 pool does not set cx_pool_open",
    "*downstream_cx_rx_bytes_buffered": "envoi does not count buffered downstream bytes",
    # Envoy closes its pooled upstream connections before its last flush at shutdown.
    "*cluster.web.upstream_cx_destroy*": "envoi's HTTP pool keeps its idle connection (and "
                                         "does not count it closed) until the process ends",
    "*cluster.upstream_cx_destroy*|#envoy.cluster_name:web": "as above (DogStatsD)",
    # Histograms envoi does not record.
    "*external.upstream_rq_time": "no internal/external split of upstream_rq_time",
    "*upstream_rq_per_cx": "not recorded",
    "*connections_accepted_per_socket_event": "not recorded",
}
# Metrics envoi sends that Envoy does not, and why.
ENVOI_ONLY = {
    "*cluster*circuit_breakers.default.*_open": "envoi marks these gauges used when it makes "
                                                "a cluster; Envoy at its first connection pool "
                                                "(the TCP statsd cluster has none)",
    "*cluster*upstream_cx_rx_bytes_buffered": "as above",
    "*runtime.admin_overrides_active": "envoi sets it to 0 at start, Envoy when an admin "
                                       "override is made",
}


@dataclass
class Received:
    """What the three sinks' receivers got: UDP datagrams and TCP bytes."""

    udp: list[bytes] = field(default_factory=list)
    dog: list[bytes] = field(default_factory=list)
    tcp: list[bytes] = field(default_factory=list)

    def lines(self, kind: str) -> list[str]:
        if kind == "tcp":
            text = b"".join(self.tcp).decode()
            assert not text or text.endswith("\n"), "TCP statsd lines end with a newline"
            return [line for line in text.split("\n") if line]
        out = []
        for datagram in list(getattr(self, kind)):
            assert not datagram.endswith(b"\n"), datagram
            out += datagram.decode().split("\n")
        return out


class Receivers:
    """A UDP socket per UDP sink and a TCP listener taking any number of connections."""

    def __init__(self) -> None:
        self.got = Received()
        self.socks = {}
        for kind in ("udp", "dog"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            self.socks[kind] = s
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.tcp.settimeout(0.2)
        self.stopping = False
        self.threads = [threading.Thread(target=self._udp, args=(k,), daemon=True)
                        for k in self.socks]
        self.threads.append(threading.Thread(target=self._accept, daemon=True))
        for t in self.threads:
            t.start()

    def port(self, kind: str) -> int:
        sock = self.tcp if kind == "tcp" else self.socks[kind]
        return int(sock.getsockname()[1])

    def _udp(self, kind: str) -> None:
        sock, out = self.socks[kind], getattr(self.got, kind)
        while not self.stopping:
            try:
                out.append(sock.recv(65536))
            except TimeoutError:
                continue

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self.stopping:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                self.got.tcp.append(data)

    def close(self) -> None:
        self.stopping = True
        for t in self.threads:
            t.join(2)
        for s in (*self.socks.values(), self.tcp):
            s.close()


LINE = re.compile(r"^(?P<name>[^:|#]+):(?P<value>[^|]+)\|(?P<type>c|g|ms|h)(?P<tags>\|#.*)?$")


def parse(lines: list[str], port: int) -> list[tuple[str, float, str, str]]:
    out = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"not a statsd line: {line!r}"
        name = m["name"].replace(f"127.0.0.1_{port}", "L")
        tags = (m["tags"] or "").replace(f"127.0.0.1_{port}", "L")
        out.append((name, float(m["value"]), m["type"], tags))
    return out


def kinds(parsed: list[tuple[str, float, str, str]]) -> set[tuple[str, str, str]]:
    return {(name, kind, tags) for name, _, kind, tags in parsed}


def total(parsed: list[tuple[str, float, str, str]], name: str, kind: str) -> float:
    return sum(v for n, v, k, _ in parsed if n == name and k == kind)


def count(parsed: list[tuple[str, float, str, str]], name: str, kind: str,
          tags: str | None = None) -> int:
    return sum(1 for n, _, k, t in parsed
               if n == name and k == kind and (tags is None or t == tags))


def flushes(lines: list[str]) -> int:
    """How many flushes a sink has sent: every flush carries the server.uptime gauge once."""
    return sum(1 for line in lines if line.split(":", 1)[0].endswith("server.uptime")
               and "|g" in line)


def traffic(port: int) -> None:
    """A keep-alive client that sends N_REQUESTS requests, then closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i in range(N_REQUESTS):
            s.sendall(f"GET /r{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            assert read_reply(s).status == 200


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as e:
        yield e


def run(kind: str, echo: EchoServer, start: Callable[..., Any]
        ) -> dict[str, list[tuple[str, float, str, str]]]:
    rx = Receivers()
    try:
        port, admin = free_port(), free_port()
        proc = start(kind, CONFIG.format(admin=admin, port=port, web=echo.port,
                                         udp=rx.port("udp"), dog=rx.port("dog"),
                                         tcp=rx.port("tcp")), admin)
        traffic(port)

        def settled() -> bool:
            # Every request counted (deltas add up) and its histogram values arrived, on
            # every sink; then one more flush, so gauges after the traffic are in too.
            for k, prefix in (("udp", "envoy"), ("tcp", "tcpx")):
                p = parse(rx.got.lines(k), port)
                if total(p, f"{prefix}.http.ingress_http.downstream_rq_completed", "c") \
                        < N_REQUESTS:
                    return False
                if count(p, f"{prefix}.http.ingress_http.downstream_rq_time", "ms") \
                        < N_REQUESTS:
                    return False
            p = parse(rx.got.lines("dog"), port)
            return count(p, "dd.http.downstream_rq_time", "ms",
                         "|#envoy.http_conn_manager_prefix:ingress_http") >= N_REQUESTS

        wait_for(settled, 30, what=f"{kind}: the traffic in every sink")
        # Two more flushes on every sink (counted, not timed: a loaded box flushes late), so
        # the gauges after the traffic are in too.
        seen = {k: flushes(rx.got.lines(k)) for k in ("udp", "dog", "tcp")}
        wait_for(lambda: all(flushes(rx.got.lines(k)) >= n + 2 for k, n in seen.items()), 30,
                 what=f"{kind}: two more flushes on every sink")
        proc.stop()
        return {k: parse(rx.got.lines(k), port) for k in ("udp", "dog", "tcp")}
    finally:
        rx.close()


def unexplained(names: set[tuple[str, str, str]], allowed: dict[str, str]
                ) -> list[tuple[str, str, str]]:
    """The metrics (name, type, tags) no pattern explains (matched against the name, and
    against the name and the tags)."""
    return sorted(n for n in names if not any(
        fnmatch.fnmatchcase(n[0], p) or fnmatch.fnmatchcase(n[0] + n[2], p) for p in allowed))


def test_same_metrics_as_envoy(echo: EchoServer, proxy_process: Callable[..., Any]) -> None:
    envoy = run("envoy", echo, proxy_process)
    envoi = run("envoi", echo, proxy_process)
    problems = []
    for sink in ("udp", "dog", "tcp"):
        a, b = kinds(envoy[sink]), kinds(envoi[sink])
        assert len(a) > 60, (sink, sorted(a))
        if missing := unexplained(a - b, ENVOY_ONLY):
            problems.append(f"{sink}: envoi does not send {missing}")
        if extra := unexplained(b - a, ENVOI_ONLY):
            problems.append(f"{sink}: envoi sends what Envoy does not: {extra}")
    assert not problems, "\n".join(problems)
    # Counters are deltas: summed over the flushes they are the totals, in both.
    for result in (envoy, envoi):
        udp, tcp, dog = result["udp"], result["tcp"], result["dog"]
        assert total(udp, "envoy.http.ingress_http.downstream_rq_total", "c") == N_REQUESTS
        assert total(tcp, "tcpx.cluster.web.upstream_rq_200", "c") == N_REQUESTS
        assert total(dog, "dd.cluster.upstream_rq_total", "c") == N_REQUESTS
        assert ("dd.cluster.upstream_rq_total", "c", "|#envoy.cluster_name:web") in kinds(dog)
        # Every histogram value once, as a timer in integer milliseconds.
        assert count(udp, "envoy.http.ingress_http.downstream_rq_time", "ms") == N_REQUESTS
        assert count(dog, "dd.http.downstream_rq_time", "ms",
                     "|#envoy.http_conn_manager_prefix:ingress_http") == N_REQUESTS
        # Gauges carry values: one web host, healthy.
        assert ("envoy.cluster.web.membership_healthy", 1.0, "g", "") in udp


def test_with_two_workers_the_server_is_flushed_once(
        echo: EchoServer, envoi_process: Callable[..., Any]) -> None:
    """Two worker processes: counters are the server's sums (sent once per flush, not once
    per worker), each histogram value is sent once, by the worker that recorded it."""

    def start(kind: str, text: str, admin: int) -> Any:
        return envoi_process(text, admin, concurrency=2)

    got = run("envoi", echo, start)
    udp = got["udp"]
    assert total(udp, "envoy.http.ingress_http.downstream_rq_total", "c") == N_REQUESTS
    assert count(udp, "envoy.http.ingress_http.downstream_rq_time", "ms") == N_REQUESTS
    assert total(udp, "envoy.listener_manager.listener_added", "c") == 1
    flushes = count(udp, "envoy.server.uptime", "g")
    assert flushes >= 3
    # One line per metric per flush: a name that every flush carries comes once a flush.
    assert count(udp, "envoy.cluster.web.membership_total", "g") == flushes
