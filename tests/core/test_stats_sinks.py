"""Stats sinks without a server process: the flusher's counter deltas, the histogram values'
path to the sinks, the statsd line formats, datagram packing, the TCP sink's bound, and the
config errors (Envoy's words where Envoy has them)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from envoi.config import ConfigError
from envoi.server import Options, Server
from envoi.stats import Histogram, Store
from envoi.stats import statsd as statsd_mod
from envoi.stats.sink import MetricSnapshot, StatsFlusher
from envoi.stats.statsd import (
    TcpStatsdSink,
    UdpStatsdSink,
    flush_lines,
    histogram_lines,
    pack_datagrams,
)
from envoi.testing import factory_context
from envoi.testing.context import StandaloneServer
from envoi.upstream.cluster import Cluster, ClusterStats
from envoi.upstream.host import Host
from envoi.upstream.lb import LbParams, RoundRobin


class Recorder:
    def __init__(self) -> None:
        self.snapshots: list[MetricSnapshot] = []
        self.values: list[tuple[str, list[float]]] = []

    def flush(self, snapshot: MetricSnapshot) -> None:
        self.snapshots.append(snapshot)

    def on_histogram_values(self, histogram: Histogram, values: list[float]) -> None:
        self.values.append((histogram.name, list(values)))


def test_counters_are_deltas_and_stay_used() -> None:
    store = Store()
    c = store.counter("a.total")
    store.counter("never.used")
    rec = Recorder()
    flusher = StatsFlusher([rec])
    c.inc(5)
    flusher.flush(store)
    c.inc(2)
    flusher.flush(store)
    flusher.flush(store)
    deltas = [{s.name: (s.delta, s.used) for s in snap.counters} for snap in rec.snapshots]
    assert [d["a.total"] for d in deltas] == [(5, True), (2, True), (0, True)]
    assert all(d["never.used"] == (0, False) for d in deltas)
    store.reset_counters()  # /reset_counters: what is counted after is all new
    c.inc(3)
    flusher.flush(store)
    assert {s.name: s.delta for s in rec.snapshots[-1].counters}["a.total"] == 3


def test_histogram_values_reach_sinks_once_in_batches() -> None:
    store = Store()
    rec = Recorder()
    flusher = StatsFlusher([rec])
    h = store.histogram("before.observer")
    store.set_histogram_observer(flusher.histogram_observer())
    h2 = store.histogram("after.observer")
    for v in (1.5, 2.0):
        h.record(v)
        h2.record(v * 10)
    assert rec.values == []  # record() only appends
    h.flush()
    h2.flush()
    assert sorted(rec.values) == [("after.observer", [15.0, 20.0]),
                                  ("before.observer", [1.5, 2.0])]
    h.flush()
    assert len(rec.values) == 2  # nothing new, nothing sent
    assert h.sample_count == 2  # and the histogram still counted them
    for i in range(1024):  # a full batch goes at once
        h.record(float(i))
    assert len(rec.values) == 3 and len(rec.values[-1][1]) == 1024


def test_no_sinks_no_observer() -> None:
    assert StatsFlusher().histogram_observer() is None


def test_broken_sink_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Recorder):
        def flush(self, snapshot: MetricSnapshot) -> None:
            raise RuntimeError("boom")

    store = Store()
    store.counter("x").inc()
    ok = Recorder()
    StatsFlusher([Broken(), ok]).flush(store)
    assert len(ok.snapshots) == 1
    assert "failed to flush" in caplog.text


def test_statsd_and_dogstatsd_lines() -> None:
    store = Store()
    store.counter("cluster.web.upstream_rq_total").inc(3)
    store.counter("cluster.web.upstream_rq_503")  # unused: not sent
    store.gauge("server.live").set(1)
    store.gauge("cluster.web.membership_total")  # never set: not sent
    snap = StatsFlusher().snapshot(store)
    assert flush_lines("envoy", snap, use_tag=False) == [
        "envoy.cluster.web.upstream_rq_total:3|c", "envoy.server.live:1|g"]
    assert flush_lines("dd", snap, use_tag=True) == [
        "dd.cluster.upstream_rq_total:3|c|#envoy.cluster_name:web", "dd.server.live:1|g"]
    h = store.histogram("http.ingress.downstream_rq_time")
    assert histogram_lines("envoy", h, [4.7, 0.2], use_tag=False) == [
        "envoy.http.ingress.downstream_rq_time:4|ms",
        "envoy.http.ingress.downstream_rq_time:0|ms"]
    assert histogram_lines("dd", h, [12.0], use_tag=True) == [
        "dd.http.downstream_rq_time:12|ms|#envoy.http_conn_manager_prefix:ingress"]
    h.unit = "percent"
    assert histogram_lines("x", h, [0.5], use_tag=False) == [
        "x.http.ingress.downstream_rq_time:0.5|h"]


def test_pack_datagrams() -> None:
    lines = ["a" * 10, "b" * 10, "c" * 10, "d" * 40]
    assert pack_datagrams(lines, 0) == [s.encode() for s in lines]
    # As Envoy: a line too long for the limit goes out at once, ahead of what is buffered.
    assert pack_datagrams(lines, 25) == [b"a" * 10 + b"\n" + b"b" * 10, b"d" * 40, b"c" * 10]
    assert pack_datagrams(lines, 21) == [b"a" * 10 + b"\n" + b"b" * 10, b"d" * 40, b"c" * 10]
    assert pack_datagrams(lines, 20) == [b"a" * 10, b"b" * 10, b"d" * 40, b"c" * 10]
    assert pack_datagrams([], 100) == []


def test_udp_sink_sends_datagrams() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    try:
        sink = UdpStatsdSink(rx.getsockname(), "", use_tag=False)
        store = Store()
        store.counter("a").inc(2)
        store.gauge("g").set(7)
        sink.flush(StatsFlusher().snapshot(store))
        sink.on_histogram_values(store.histogram("h"), [3.0])
        got = {rx.recv(100) for _ in range(3)}
        assert got == {b"envoy.a:2|c", b"envoy.g:7|g", b"envoy.h:3|ms"}
        sink.close()
    finally:
        rx.close()


def test_tcp_sink_overflow_drops_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A statsd server that never reads: past the bound, the output is dropped, the connection
    closed and ``statsd.cx_overflow`` counted; the sink never blocks."""
    monkeypatch.setattr(statsd_mod, "MAX_BUFFERED_BYTES", 64 * 1024)

    async def scenario() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the kernel soon
        lsock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(never_read, sock=lsock)
        port = server.sockets[0].getsockname()[1]
        stats = Store()
        cluster = Cluster(name="statsd", stats=ClusterStats(stats.root.scope("cluster.statsd")))
        cluster.lb = RoundRobin([], LbParams(), cluster)
        cluster.set_hosts([Host("127.0.0.1", port)])
        ctx = factory_context(server=StandaloneServer(stats=stats,
                                                      clusters={"statsd": cluster}))
        sink = TcpStatsdSink(ctx, "statsd", "p")
        h = stats.histogram("big.histogram")
        sink.on_histogram_values(h, [1.0])  # connects; what waited goes out once connected
        for _ in range(500):
            await asyncio.sleep(0.01)
            if cluster.stats.upstream_cx_tx_bytes_total.value:
                break
        assert cluster.stats.upstream_cx_tx_bytes_total.value == len(b"p.big.histogram:1|ms\n")
        for _ in range(3000):
            sink.on_histogram_values(h, [1.0] * 1000)
            await asyncio.sleep(0)
            if stats.counter("statsd.cx_overflow").value:
                break
        assert stats.counter("statsd.cx_overflow").value >= 1
        assert cluster.stats.upstream_cx_tx_bytes_total.value > 64 * 1024
        sink.close()
        server.close()
        for w in accepted:
            w.close()

    asyncio.run(scenario())


CONFIG_HEAD = """
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  clusters:
  - name: statsd
    load_assignment:
      cluster_name: statsd
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
        {address: 127.0.0.1, port_value: 8125}}}}]}]
"""


def load(yaml_text: str) -> Server:
    server = Server(Options(config_yaml=yaml_text))
    server.load()
    return server


def errors(yaml_text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(yaml_text)
    return [f"{i.path}: {i.message}" for i in info.value.errors]


def sink(typed: str) -> str:
    return CONFIG_HEAD + "stats_sinks:\n- name: s\n  typed_config:\n" + "".join(
        f"    {line}\n" for line in typed.strip().splitlines())


STATSD = '"@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink'
DOG = '"@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink'


def test_config_builds_sinks() -> None:
    server = load(sink(STATSD + "\naddress: {socket_address: {address: '::1', "
                       "port_value: 8125}}\nprefix: p"))
    (s,) = server.stats_flusher.sinks
    assert isinstance(s, UdpStatsdSink) and s.address == ("::1", 8125) and s.prefix == "p"
    server = load(sink(DOG + "\naddress: {socket_address: {address: 127.0.0.1, "
                       "port_value: 1}}\nmax_bytes_per_datagram: 512"))
    (s,) = server.stats_flusher.sinks
    assert isinstance(s, UdpStatsdSink) and s.use_tag and s.max_bytes == 512
    assert s.prefix == "envoy"
    server = load("node: {id: n, cluster: c}\n" + sink(f"{STATSD}\ntcp_cluster_name: statsd"))
    assert isinstance(server.stats_flusher.sinks[0], TcpStatsdSink)
    assert server.stats.get("statsd.cx_overflow") is not None


def test_config_errors() -> None:
    assert errors(sink(f"{STATSD}\ntcp_cluster_name: statsd")) == [
        "stats_sinks[0].typed_config.tcp_cluster_name: tcp statsd: node 'id' and 'cluster' are "
        "required. Set it either in 'node' config or via --service-node and --service-cluster "
        "options."]
    assert errors("node: {id: n, cluster: c}\n" + sink(f"{STATSD}\ntcp_cluster_name: nope")) \
        == ["stats_sinks[0].typed_config.tcp_cluster_name: tcp statsd: unknown cluster 'nope'"]
    assert errors(sink(STATSD + "\naddress: {socket_address: {address: localhost, "
                       "port_value: 1}}")) == [
        "stats_sinks[0].typed_config.address.socket_address.address: malformed IP address: "
        "localhost"]
    assert errors(sink(f"{DOG}\naddress: {{pipe: {{path: /tmp/x}}}}")) == [
        "stats_sinks[0].typed_config.address.pipe: not implemented by envoi"]
    assert errors(sink(STATSD + "\naddress: {socket_address: {address: 127.0.0.1, "
                       "port_value: 1, resolver_name: r}}")) == [
        "stats_sinks[0].typed_config.address.socket_address.resolver_name: not implemented "
        "by envoi"]
    problems = errors(CONFIG_HEAD + "stats_sinks:\n- name: envoy.stat_sinks.nope\n")
    assert len(problems) == 1 and problems[0].startswith("stats_sinks[0]")
