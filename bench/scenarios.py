"""The scenarios of the benchmark suite, one entry each.

A scenario names the config Envoy and envoi both get (``config(admin, listen, backend)``), the
backend it proxies to, a check that a proxy answers correctly, and the load that measures it.
Adding one is adding an entry here (plus its load, if it is a new kind). A slot whose protocol
envoi does not speak yet carries ``pending`` (why) and is listed, not run.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from bench import configs
from bench.load import LoadResult, run_dynamodb, run_h2load, run_mongo, run_wrk
from bench.procs import BenchError, http_get


@dataclass(frozen=True)
class Layout:
    """Where things run for one ``--concurrency``: with one worker the proxy gets CPU 0 and the
    load generator and backend the rest; with more, nobody is pinned (same cores for all)."""

    concurrency: int
    proxy_cpus: set[int] | None
    load_cpus: set[int] | None

    @property
    def name(self) -> str:
        return f"c{self.concurrency}"


@dataclass(frozen=True)
class RunSpec:
    seconds: float
    layout: Layout


LoadFn = Callable[[int, RunSpec, int | None], LoadResult]


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    #: The backend it needs: "http" (nginx, HTTP/1.1 port), "h2" (nginx's h2c port for the
    #: direct row; proxies still use HTTP/1.1 upstream), "mongo" (SecantusDB).
    backend: str
    config: Callable[[int, int, int], str]
    load: LoadFn | None
    verify: Callable[[int], None] | None = None
    pending: str = ""
    #: The config Envoy's row gets when the stock Envoy cannot run ``config`` (a contrib
    #: filter); ``what`` says so.
    envoy_config: Callable[[int, int, int], str] | None = None
    #: A fourth row, ``envoi-base``: envoi on this config (the scenario's without its filter) in
    #: the same run; the report prints the filter's cost, envoi minus envoi-base, per request.
    base_config: Callable[[int, int, int], str] | None = None


def _verify_http(path: str, size: int, body: bytes | None = None) -> Callable[[int], None]:
    def verify(port: int) -> None:
        status, got = http_get(port, path)
        if status != 200 or len(got) != size or (body is not None and got != body):
            raise BenchError(f"GET {path} through the proxy: {status}, {len(got)} bytes")
    return verify


def _verify_mongo(port: int) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=10000")
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _verify_dynamodb(port: int) -> None:
    from bench.dynamodb_load import TABLE, client, ensure_table

    ensure_table(port)
    tables = client(port).list_tables()["TableNames"]
    if TABLE not in tables:
        raise BenchError(f"ListTables through the proxy: {tables}")


def _wrk(path: str) -> LoadFn:
    def load(port: int, spec: RunSpec, proxy_pid: int | None) -> LoadResult:
        c = spec.layout.concurrency
        return run_wrk(f"http://127.0.0.1:{port}{path}", spec.seconds, threads=min(c, 2),
                       conns=32 * c, cpus=spec.layout.load_cpus, proxy_pid=proxy_pid)
    return load


def _h2load(path: str) -> LoadFn:
    def load(port: int, spec: RunSpec, proxy_pid: int | None) -> LoadResult:
        c = spec.layout.concurrency
        # More connections than workers, so that every worker gets some.
        return run_h2load(f"http://127.0.0.1:{port}{path}", spec.seconds, clients=4 * c,
                          streams=8, cpus=spec.layout.load_cpus, proxy_pid=proxy_pid)
    return load


def _grpc_h2load(port: int, spec: RunSpec, proxy_pid: int | None) -> LoadResult:
    c = spec.layout.concurrency
    body = tempfile.NamedTemporaryFile(prefix="grpc-", suffix=".bin")  # noqa: SIM115
    with body:
        body.write(configs.GRPC_REQUEST)
        body.flush()
        return run_h2load(f"http://127.0.0.1:{port}{configs.GRPC_PATH}", spec.seconds,
                          clients=4 * c, streams=8, cpus=spec.layout.load_cpus,
                          proxy_pid=proxy_pid,
                          extra=("-d", body.name, "-H", "content-type: application/grpc",
                                 "-H", "te: trailers"))


def _verify_grpc(port: int) -> None:
    """One call with a real HTTP/2 client: 200, the framed reply, and its trailer."""
    import h2.config
    import h2.connection
    import h2.events

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                              (":authority", "bench"), (":path", configs.GRPC_PATH),
                              ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(1, configs.GRPC_REQUEST, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body, trailers = "", b"", {}
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    status = dict(e.headers).get(b":status", b"").decode()
                elif isinstance(e, h2.events.DataReceived):
                    body += e.data
                    conn.acknowledge_received_data(e.flow_controlled_length, 1)
                elif isinstance(e, h2.events.TrailersReceived):
                    trailers = dict(e.headers)
            sock.sendall(conn.data_to_send())
            if trailers or status not in ("", "200"):
                break
    if status != "200" or body != configs.GRPC_REPLY or trailers.get(b"grpc-status") != b"0":
        raise BenchError(f"gRPC call through the proxy: {status}, {body!r}, {trailers}")


def _mongo(port: int, spec: RunSpec, proxy_pid: int | None) -> LoadResult:
    return run_mongo(port, spec.seconds, warmup=min(1.0, spec.seconds / 2),
                     clients=4 * spec.layout.concurrency, cpus=spec.layout.load_cpus,
                     proxy_pid=proxy_pid)


def _dynamodb(port: int, spec: RunSpec, proxy_pid: int | None) -> LoadResult:
    return run_dynamodb(port, spec.seconds, warmup=min(1.0, spec.seconds / 2),
                        clients=4 * spec.layout.concurrency, cpus=spec.layout.load_cpus,
                        proxy_pid=proxy_pid)


SMALL = _verify_http("/", len(configs.SMALL_BODY), configs.SMALL_BODY)
LARGE = _verify_http("/64k", configs.LARGE_SIZE)

SCENARIOS: list[Scenario] = [
    Scenario("h1-small", "HTTP/1.1 GET, 100-byte response (HCM + router), wrk keep-alive",
             "http", configs.http_proxy, _wrk("/"), SMALL),
    # Tracing's cost: h1-small with the connection manager's tracing (OpenTelemetry) at 1 %
    # and 100 % sampling; compare each with h1-small of the same run.
    Scenario("h1-small-trace1", "h1-small with tracing (OpenTelemetry, OTLP/gRPC) at 1 % "
             "random sampling", "http", configs.http_traced(1), _wrk("/"), SMALL),
    Scenario("h1-small-trace100", "h1-small with tracing (OpenTelemetry) at 100 % sampling",
             "http", configs.http_traced(100), _wrk("/"), SMALL),
    Scenario("h1-64k", "HTTP/1.1 GET, 64 KiB response (HCM + router), wrk keep-alive",
             "http", configs.http_proxy, _wrk("/64k"), LARGE),
    Scenario("tcp_proxy", "the h1-small load through tcp_proxy (bytes only)",
             "http", configs.tcp_proxy, _wrk("/"), SMALL),
    Scenario("mongo", "pymongo insert_one + find_one loop through mongo_proxy + tcp_proxy "
             "to SecantusDB", "mongo", configs.mongo_proxy, _mongo, _verify_mongo),
    Scenario("h2-small", "h2c (prior knowledge) GET, 100-byte response, h2load 8 streams per "
             "connection", "h2", configs.http_proxy, _h2load("/"), SMALL),
    Scenario("h2-64k", "h2c GET, 64 KiB response, h2load", "h2", configs.http_proxy,
             _h2load("/64k"), LARGE),
    Scenario("grpc-unary", "gRPC unary calls over h2c both sides (h2load POSTs a framed "
             "message, 8 streams per connection; nghttpd answers with a grpc-status trailer)",
             "grpc", configs.grpc_proxy, _grpc_h2load, _verify_grpc),
    Scenario("dynamodb", "boto3 PutItem + GetItem loop (checked) through the dynamo filter to "
             "moto's server; the stock Envoy has no dynamo filter (contrib), so its row and "
             "envoi-base run the plain HTTP route", "dynamodb", configs.dynamodb_filter,
             _dynamodb, _verify_dynamodb, envoy_config=configs.dynamodb_route,
             base_config=configs.dynamodb_route),
]


def by_name(names: list[str] | None) -> list[Scenario]:
    if not names:
        return SCENARIOS
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)}")
    return [known[n] for n in names]
