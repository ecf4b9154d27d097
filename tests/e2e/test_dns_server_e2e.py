"""STRICT_DNS against a real DNS server (dnslib's) started by the test, whose answers change
while traffic flows: hosts come and go through the one update path without dropping requests in
flight; ``respect_dns_ttl``; and DNS that answers nothing, garbage, or not at all."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSHandler, DNSServer
from envoi.testing import EnvoiProcess, free_port, wait_for
from upstream_peers import WEB_LISTENER, Backend, backend_address, request

NAME = "svc.envoi.test"


class Answers(BaseResolver):
    """Answers ``NAME`` with the current address list; ``mode`` can make it misbehave."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.ttl = 30
        self.mode = "answer"  # answer | garbage | silent
        self.queries = 0
        self.first_query: float | None = None  # time.monotonic() of the first query

    def resolve(self, request: Any, handler: Any) -> Any:
        self.queries += 1
        if self.first_query is None:
            self.first_query = time.monotonic()
        if self.mode == "silent":
            time.sleep(5)
        reply = request.reply()
        q = request.q
        if str(q.qname).rstrip(".") == NAME and QTYPE[q.qtype] == "A":
            for a in self.addresses:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(a), ttl=self.ttl))
        return reply


class _Handler(DNSHandler):
    def get_reply(self, data: bytes) -> bytes:
        resolver = self.server.resolver  # type: ignore[attr-defined]
        if resolver.mode == "garbage":
            resolver.queries += 1
            return data[:2] + bytes(random.getrandbits(8) for _ in range(20))
        return bytes(super().get_reply(data))


@pytest.fixture
def dns() -> Iterator[tuple[Answers, int]]:
    answers = Answers()
    server = DNSServer(answers, port=0, address="127.0.0.1", handler=_Handler,
                       logger=_Quiet())
    server.start_thread()
    yield answers, server.server.server_address[1]
    server.stop()


class _Quiet:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def config(admin: int, listen: int, port: int, dns_port: int, extra: str = "") -> str:
    return WEB_LISTENER.format(admin=admin, listen=listen) + f"""\
                route: {{cluster: svc}}
  clusters:
  - name: svc
    type: STRICT_DNS
    connect_timeout: 0.5s
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 0.2s
{extra}
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.\\
          CaresDnsResolverConfig"
        resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {dns_port}}}}}]
        query_timeout_seconds: 1
        query_tries: 1
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {NAME}, port_value: {port}}}}}}}
"""


def hosts_of(proc: EnvoiProcess) -> set[str]:
    out = set()
    for line in proc.get("/clusters")[1].splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "svc" and parts[2] == "hostname":
            out.add(parts[1].rsplit(":", 1)[0])
    return out


@pytest.mark.timeout(120)
def test_answers_change_hosts_follow_requests_in_flight_finish(
        envoi_process: Callable[..., EnvoiProcess], dns: tuple[Answers, int]) -> None:
    answers, dns_port = dns
    port = free_port()
    b2 = Backend(port, address="127.0.0.2").start()
    b3 = Backend(port, address="127.0.0.3").start()
    admin, listen = free_port(), free_port()
    try:
        answers.addresses = ["127.0.0.2"]
        proc = envoi_process(config(admin, listen, port, dns_port), admin)
        assert hosts_of(proc) == {"127.0.0.2"}
        assert {backend_address(request(listen)[1]) for _ in range(5)} == {"127.0.0.2"}
        # A slow request on .2, in flight while .2 leaves the cluster.
        slow: list[tuple[int, bytes]] = []
        # (long enough to outlast the host change on a loaded box)
        t = threading.Thread(target=lambda: slow.append(request(listen, "/slow?ms=5000",
                                                                timeout=30)))
        t.start()
        proc.wait_stat("cluster.svc.upstream_rq_active", 1)  # in flight on .2
        answers.addresses = ["127.0.0.3"]
        wait_for(lambda: hosts_of(proc) == {"127.0.0.3"}, 10, what="host set {.3}")
        assert {backend_address(request(listen)[1]) for _ in range(5)} == {"127.0.0.3"}
        t.join(30)
        assert slow and slow[0][0] == 200 and backend_address(slow[0][1]) == "127.0.0.2"
        answers.addresses = ["127.0.0.2", "127.0.0.3"]
        wait_for(lambda: hosts_of(proc) == {"127.0.0.2", "127.0.0.3"}, 10, what="both")
        assert {backend_address(request(listen)[1]) for _ in range(6)} == {
            "127.0.0.2", "127.0.0.3"}
        stats = proc.stats()
        assert stats["cluster.svc.membership_change"] >= 3
        assert stats["cluster.svc.update_success"] >= 3
        assert stats["cluster.svc.update_no_rebuild"] >= 1
        assert stats["cluster.svc.update_failure"] == 0
        assert stats["cluster.svc.membership_total"] == 2
    finally:
        b2.kill()
        b3.kill()


def test_respect_dns_ttl(envoi_process: Callable[..., EnvoiProcess],
                         dns: tuple[Answers, int]) -> None:
    answers, dns_port = dns
    answers.addresses = ["127.0.0.2"]
    answers.ttl = 1
    admin, listen = free_port(), free_port()
    text = config(admin, listen, 9, dns_port, extra="    respect_dns_ttl: true").replace(
        "dns_refresh_rate: 0.2s", "dns_refresh_rate: 60s")
    proc = envoi_process(text, admin)
    t0 = time.monotonic()
    proc.wait_stat("cluster.svc.update_attempt", lambda v: v >= 3, timeout=60)
    # Refreshed by the 1 s TTL (about 2 s for three), not the 60 s refresh rate (120 s).
    assert time.monotonic() - t0 < 40


@pytest.mark.parametrize("mode", ["garbage", "silent", "empty"])
def test_bad_dns_answers_are_counted_and_hosts_kept(
        envoi_process: Callable[..., EnvoiProcess], dns: tuple[Answers, int],
        mode: str) -> None:
    answers, dns_port = dns
    b = Backend(address="127.0.0.2").start()
    admin, listen = free_port(), free_port()
    try:
        answers.addresses = ["127.0.0.2"]
        proc = envoi_process(config(admin, listen, b.port, dns_port), admin)
        assert request(listen)[0] == 200
        if mode == "empty":
            answers.addresses = []
        else:
            answers.mode = mode
        failures = proc.stats()["cluster.svc.update_failure"]
        proc.wait_stat("cluster.svc.update_failure", lambda v: v >= failures + 2, timeout=20)
        # The name keeps the address it had; traffic flows on.
        assert hosts_of(proc) == {"127.0.0.2"}
        assert request(listen)[0] == 200
        answers.mode = "answer"
        answers.addresses = ["127.0.0.2"]
        s = proc.wait_stat("cluster.svc.update_success", lambda v: v >= 2, timeout=20)
        assert s >= 2
    finally:
        b.kill()


def test_dns_that_never_answers_does_not_hold_the_start_forever(
        envoi_process: Callable[..., EnvoiProcess], dns: tuple[Answers, int]) -> None:
    answers, dns_port = dns
    answers.mode = "silent"
    admin, listen = free_port(), free_port()
    proc = envoi_process(config(admin, listen, 9, dns_port), admin)
    # Ready about the 1 s query timeout after the query (c-ares' defaults would be 5 s x 4
    # tries), timed from the query, not from the process start (seconds on a loaded box).
    assert answers.first_query is not None
    assert time.monotonic() - answers.first_query < 12
    assert proc.stats()["cluster.svc.membership_total"] == 0
    status, body = request(listen)
    assert (status, body) == (503, b"no healthy upstream")
