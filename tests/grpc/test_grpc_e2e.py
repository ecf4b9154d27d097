"""Native gRPC end to end, the real Envoy 1.39.3 and envoi side by side on one config
(``grpc_e2e_config.grpc_yaml``: grpc_web + grpc_stats + router, h2c to a grpcio server of
``protos/envoi_e2e.proto``, compiled with grpcio-tools here): the four call kinds, metadata and
trailers, status codes (trailers-only and after messages), deadlines and cancellation reaching
the server, large messages, 1,000 concurrent calls on one connection, TLS (ALPN h2) downstream,
local replies shaped as gRPC errors, and the ``grpc.*`` stats compared with Envoy's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from echo_service import EchoServer, compile_protos, status_code
from envoi.testing import free_port, wait_for
from envoi_grpc.framing import encode
from grpc_e2e_config import grpc_yaml, raw_call

KINDS = ["envoy", "envoi"]
BIG = 64 << 20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", BIG),
                   ("grpc.max_send_message_length", BIG)]


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
def server(protos: tuple[ModuleType, ModuleType]) -> Iterator[EchoServer]:
    with EchoServer(*protos) as s:
        yield s


class Proxy:
    def __init__(self, kind: str, proc: Any, port: int, pb2: ModuleType,
                 pb2_grpc: ModuleType) -> None:
        self.kind, self.proc, self.port, self.pb2 = kind, proc, port, pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.stub = pb2_grpc.EchoStub(self.channel)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxy_process: Callable[..., Any],
          server: EchoServer, protos: tuple[ModuleType, ModuleType]) -> Iterator[Proxy]:
    port, admin = free_port(), free_port()
    proc = proxy_process(request.param, grpc_yaml(port, admin, server.port), admin)
    p = Proxy(request.param, proc, port, *protos)
    yield p
    p.close()


def _req(pb2: ModuleType, **kw: Any) -> Any:
    return pb2.EchoRequest(**kw)


def test_unary_metadata_and_trailers(proxy: Proxy) -> None:
    pb2 = proxy.pb2
    reply, call = proxy.stub.Unary.with_call(
        _req(pb2, payload=b"hi"), metadata=(("x-echo", "abc"), ("x-in-bin", b"\x00\xff")),
        timeout=20)
    assert reply.payload == b"hi" and reply.received == 2
    assert ("x-echo", "abc") in call.initial_metadata()
    trailers = dict(call.trailing_metadata())
    assert trailers["x-trailer"] == "unary" and trailers["x-bin-bin"] == b"\x00\x01\xfe\xff"
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming(proxy: Proxy) -> None:
    replies = list(proxy.stub.ServerStream(_req(proxy.pb2, count=50, reply_size=1000),
                                           timeout=30))
    assert [r.index for r in replies] == list(range(50))
    assert all(len(r.payload) == 1000 for r in replies)


def test_client_streaming(proxy: Proxy) -> None:
    pb2 = proxy.pb2
    reply = proxy.stub.ClientStream(
        iter([_req(pb2, payload=bytes(i)) for i in range(200)]), timeout=30)
    assert (reply.index, reply.received) == (200, sum(range(200)))


def test_bidi_ping_pong(proxy: Proxy) -> None:
    """Each reply comes back before the next request is sent: nothing waits for the end of
    the request stream on either side of the proxy."""
    import queue

    pb2 = proxy.pb2
    q: queue.Queue[Any] = queue.Queue()

    def requests() -> Iterator[Any]:
        while (item := q.get()) is not None:
            yield item

    q.put(_req(pb2, payload=b"ping 0"))
    responses = proxy.stub.Bidi(requests(), timeout=30)
    got = []
    for i, r in enumerate(responses):
        got.append(r.payload)
        q.put(_req(pb2, payload=b"ping %d" % (i + 1)) if i < 19 else None)
    assert got == [b"ping %d" % i for i in range(20)]


@pytest.mark.parametrize("code", [3, 5, 7, 8, 13, 16])
def test_status_codes_trailers_only(proxy: Proxy, code: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Unary(_req(proxy.pb2, code=code, message="nope: ünïcode %"), timeout=20)
    err: Any = info.value
    assert err.code() == status_code(code)
    assert err.details() == "nope: ünïcode %"
    assert dict(err.trailing_metadata())["x-trailer"] == "unary"


def test_status_after_messages(proxy: Proxy) -> None:
    call = proxy.stub.ServerStream(_req(proxy.pb2, count=3, code=10, message="aborted late"),
                                   timeout=20)
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for r in call:
            got.append(r.index)
    assert got == [0, 1, 2]
    err: Any = info.value
    assert (err.code(), err.details()) == (grpc.StatusCode.ABORTED, "aborted late")
    assert dict(err.trailing_metadata())["x-trailer"] == "stream"


def test_trailers_only_answer_is_passed_as_one_headers_frame(proxy: Proxy) -> None:
    ans = raw_call(proxy.port, "/envoi.e2e.Echo/Unary",
                   encode(proxy.pb2.EchoRequest(code=5, message="gone").SerializeToString()))
    assert ans.headers[":status"] == "200" and ans.headers.get("grpc-status") == "5", ans
    assert ans.headers["grpc-message"] == "gone" and ans.data == b"" and not ans.trailers


def test_large_messages(proxy: Proxy) -> None:
    pb2 = proxy.pb2
    payload = bytes(range(256)) * (12 << 12)  # 12 MiB each way
    reply = proxy.stub.Unary(_req(pb2, payload=payload), timeout=60)
    assert reply.payload == payload
    replies = list(proxy.stub.ServerStream(_req(pb2, count=40, reply_size=256 << 10),
                                           timeout=60))
    assert len(replies) == 40 and all(len(r.payload) == 256 << 10 for r in replies)


def test_deadline_reaches_the_server_and_expires(proxy: Proxy, server: EchoServer) -> None:
    ended = server.count(("Unary", "terminated"))
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Unary(_req(proxy.pb2, sleep_ms=30_000, payload=b"slow"), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert time.monotonic() - start < 15
    # grpc-timeout went through: the server's own deadline ends the call there too, and the
    # client's cancel (RST_STREAM) is forwarded; the call ends there long before its 30 s
    # (the bounds leave a loaded box room).
    assert server.wait_more(("Unary", "terminated"), ended, timeout=20)


def test_cancellation_reaches_the_server(proxy: Proxy, server: EchoServer) -> None:
    """The client's RST_STREAM reaches the server: the call (1,000 replies 50 ms apart) ends
    there at once, not finished ("ok")."""
    ended, ok = server.count(("ServerStream", "terminated")), server.count(("ServerStream", "ok"))
    call = proxy.stub.ServerStream(_req(proxy.pb2, count=1000, sleep_ms=50), timeout=60)
    it = iter(call)
    assert next(it).index == 0 and next(it).index == 1
    call.cancel()
    assert server.wait_more(("ServerStream", "terminated"), ended), \
        "the server never saw the cancellation"
    assert server.count(("ServerStream", "ok")) == ok


def test_1000_concurrent_calls_on_one_connection(proxy: Proxy,
                                                 protos: tuple[ModuleType, ModuleType]) -> None:
    pb2, pb2_grpc = protos

    async def run() -> list[Any]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as ch:
            stub = pb2_grpc.EchoStub(ch)
            return list(await asyncio.gather(*(
                stub.Unary(pb2.EchoRequest(payload=b"%d" % i), timeout=120)
                for i in range(1000))))

    replies = asyncio.run(run())
    assert [r.payload for r in replies] == [b"%d" % i for i in range(1000)]
    st = proxy.proc.stats()
    assert st["http.grpc_in.downstream_cx_http2_total"] == 1
    assert st["http.grpc_in.downstream_rq_http2_total"] == 1000
    assert st["cluster.greeter.grpc.envoi.e2e.Echo.Unary.success"] >= 1000


def test_no_route_is_unimplemented(proxy: Proxy) -> None:
    """A local reply to a gRPC request is a gRPC error: HTTP 200 and grpc-status mapped from
    the HTTP code (404 -> 12), trailers-only."""
    ans = raw_call(proxy.port, "/other.Service/Method", encode(b""))
    assert ans.headers[":status"] == "200", ans
    assert ans.headers["grpc-status"] == "12" and ans.headers["content-type"] == \
        "application/grpc"
    with pytest.raises(grpc.RpcError) as info:
        proxy.channel.unary_unary("/other.Service/Method")(b"", timeout=20)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_down_is_unavailable(kind: str, proxy_process: Callable[..., Any],
                                      protos: tuple[ModuleType, ModuleType]) -> None:
    port, admin = free_port(), free_port()
    proxy_process(kind, grpc_yaml(port, admin, free_port()), admin)
    ans = raw_call(port, "/envoi.e2e.Echo/Unary", encode(b""))
    assert ans.headers[":status"] == "200", (kind, ans)
    assert ans.headers["grpc-status"] == "14", (kind, ans)
    assert "upstream connect error" in ans.headers["grpc-message"], (kind, ans)


def _stats_traffic(p: Proxy) -> None:
    pb2 = p.pb2
    for i in range(3):
        p.stub.Unary(_req(pb2, payload=b"x" * i), timeout=20)
    list(p.stub.ServerStream(_req(pb2, count=4), timeout=20))
    p.stub.ClientStream(iter([_req(pb2)] * 5), timeout=20)
    list(p.stub.Bidi(iter([_req(pb2)] * 6), timeout=20))
    for code in (5, 5, 13):
        with pytest.raises(grpc.RpcError):
            p.stub.Unary(_req(pb2, code=code), timeout=20)
    with pytest.raises(grpc.RpcError):
        list(p.stub.ServerStream(_req(pb2, count=2, code=10), timeout=20))


def test_grpc_stats_equal_envoys(proxy_process: Callable[..., Any], server: EchoServer,
                                 protos: tuple[ModuleType, ModuleType]) -> None:
    """The same calls through each proxy leave the same ``cluster.greeter.grpc.*`` counters
    (names and values; ``upstream_rq_time`` is a histogram, not among them)."""
    seen = {}
    for kind in KINDS:
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, grpc_yaml(port, admin, server.port), admin)
        p = Proxy(kind, proc, port, *protos)
        try:
            _stats_traffic(p)
        finally:
            p.close()
        name = "cluster.greeter.grpc.envoi.e2e.Echo.ServerStream.total"
        wait_for(lambda p=proc, n=name: p.stats().get(n) == 2, what=f"{kind}: {name} == 2")
        seen[kind] = {k: v for k, v in proc.stats().items()
                      if k.startswith("cluster.greeter.grpc.")}
    assert seen["envoi"] == seen["envoy"]
    assert seen["envoy"]["cluster.greeter.grpc.envoi.e2e.Echo.Unary.5"] == 2


def test_tls_downstream(proxy_process: Callable[..., Any], server: EchoServer,
                        protos: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    from tls_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    cert = pki.servers["a.local"]
    tls = f"""\
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.\\
            DownstreamTlsContext"
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
            - certificate_chain: {{filename: {cert.cert}}}
              private_key: {{filename: {cert.key}}}
"""
    pb2, pb2_grpc = protos
    for kind in KINDS:
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, grpc_yaml(port, admin, server.port, listener_tls=tls), admin)
        creds = grpc.ssl_channel_credentials(root_certificates=Path(pki.ca.pem).read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
                ("grpc.ssl_target_name_override", "a.local")]) as ch:
            stub = pb2_grpc.EchoStub(ch)
            assert stub.Unary(pb2.EchoRequest(payload=b"tls"), timeout=20).payload == b"tls"
            assert len(list(stub.ServerStream(pb2.EchoRequest(count=5), timeout=20))) == 5
        ans = raw_call(port, "/envoi.e2e.Echo/Unary",
                       encode(pb2.EchoRequest(payload=b"r").SerializeToString()),
                       tls_ca=str(pki.ca.pem))
        assert ans.trailers["grpc-status"] == "0", (kind, ans)
        assert proc.stats()["http.grpc_in.downstream_cx_ssl_total"] >= 2, kind


def test_bad_input_answers_as_envoys(proxy_process: Callable[..., Any], server: EchoServer,
                                     protos: tuple[ModuleType, ModuleType]) -> None:
    """A frame length that lies, a truncated prefix, a compressed flag with no encoding and a
    non-gRPC content type on the gRPC route: whatever the server answers reaches the client as
    through Envoy, and the proxy goes on serving."""
    pb2 = protos[0]
    good = encode(pb2.EchoRequest(payload=b"ok").SerializeToString())
    cases = {"lying_length": (b"\x00\x00\x00\x00\x64" + b"short", {}),
             "truncated_prefix": (b"\x00\x00\x00", {}),
             "compressed_no_encoding": (b"\x01" + good[1:], {}),
             "not_grpc": (b"hello", {"content-type": "text/plain"})}
    seen: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        port, admin = free_port(), free_port()
        proxy_process(kind, grpc_yaml(port, admin, server.port), admin)
        seen[kind] = {}
        for name, (body, headers) in cases.items():
            ans = raw_call(port, "/envoi.e2e.Echo/Unary", body, headers=headers)
            status = ans.trailers.get("grpc-status", ans.headers.get("grpc-status"))
            seen[kind][name] = (ans.headers.get(":status"), status, ans.reset)
        assert raw_call(port, "/envoi.e2e.Echo/Unary", good).trailers["grpc-status"] == "0"
    assert seen["envoi"] == seen["envoy"]
    assert seen["envoy"]["lying_length"][1] not in (None, "0")
