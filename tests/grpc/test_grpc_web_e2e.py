"""gRPC-Web end to end over HTTP/1.1, the real Envoy 1.39.3 and envoi side by side: the sonora
client and raw requests (httpx and curl) in ``application/grpc-web+proto`` and
``application/grpc-web-text`` through ``grpc_web`` + ``grpc_stats`` + router to a native grpcio
server over h2c; replies, the trailer frame, trailers-only errors, a bad base64 body, and the
``grpc.*``/``grpc-web.*`` stats with ``grpc_web`` before and after ``grpc_stats`` in the chain
(Envoy counts them differently)."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from echo_service import EchoServer, compile_protos
from envoi.testing import free_port, wait_for
from envoi_grpc.framing import encode
from grpc_e2e_config import grpc_yaml

KINDS = ["envoy", "envoi"]
PROTO = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
def server(protos: tuple[ModuleType, ModuleType]) -> Iterator[EchoServer]:
    with EchoServer(*protos) as s:
        yield s


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxy_process: Callable[..., Any],
          server: EchoServer) -> tuple[str, Any, int]:
    port, admin = free_port(), free_port()
    text = grpc_yaml(port, admin, server.port, h2_options=False)
    return request.param, proxy_process(request.param, text, admin), port


def frames(body: bytes) -> list[tuple[int, bytes]]:
    """The gRPC-Web frames of a response body: (flags, payload)."""
    out = []
    while body:
        assert len(body) >= 5, body
        n = int.from_bytes(body[1:5], "big")
        out.append((body[0], body[5:5 + n]))
        assert len(body) >= 5 + n, "truncated frame"
        body = body[5 + n:]
    return out


def trailer_dict(payload: bytes) -> dict[str, str]:
    out = {}
    for line in payload.decode().split("\r\n"):
        if line:
            k, _, v = line.partition(":")
            out[k.strip().lower()] = v.strip()
    return out


def web_call(port: int, method: str, msg: Any, *, text: bool = False,
             headers: dict[str, str] | None = None) -> httpx.Response:
    body = encode(msg.SerializeToString())
    ct = TEXT if text else PROTO
    with httpx.Client(http1=True, http2=False, timeout=20) as c:
        return c.post(f"http://127.0.0.1:{port}/envoi.e2e.Echo/{method}",
                      content=base64.b64encode(body) if text else body,
                      headers={"content-type": ct, "accept": ct, "x-grpc-web": "1",
                               "x-user-agent": "grpc-web-javascript/0.1", **(headers or {})})


def test_proto_unary(proxy: tuple[str, Any, int], protos: tuple[ModuleType, ModuleType]
                     ) -> None:
    kind, _, port = proxy
    pb2 = protos[0]
    r = web_call(port, "Unary", pb2.EchoRequest(payload=b"web"))
    assert r.status_code == 200 and r.headers["content-type"] == PROTO, kind
    (f0, msg), (f1, tr) = frames(r.content)
    assert (f0, f1) == (0, 0x80)
    assert pb2.EchoReply.FromString(msg).payload == b"web"
    t = trailer_dict(tr)
    assert t["grpc-status"] == "0" and t["x-trailer"] == "unary", (kind, t)


def test_text_server_stream(proxy: tuple[str, Any, int],
                            protos: tuple[ModuleType, ModuleType]) -> None:
    kind, _, port = proxy
    pb2 = protos[0]
    r = web_call(port, "ServerStream", pb2.EchoRequest(count=4, reply_size=3000), text=True)
    assert r.status_code == 200 and r.headers["content-type"] == TEXT + "+proto", kind
    # Each message's base64 is padded on its own: decode segment by segment.
    raw = b""
    text = r.content
    while text:
        seg_end = len(text)
        for i in range(0, len(text), 4):
            if b"=" in text[i:i + 4]:
                seg_end = i + 4
                break
        raw += base64.b64decode(text[:seg_end])
        text = text[seg_end:]
    fs = frames(raw)
    assert [f for f, _ in fs] == [0, 0, 0, 0, 0x80], kind
    assert [pb2.EchoReply.FromString(m).index for _, m in fs[:4]] == [0, 1, 2, 3]
    assert trailer_dict(fs[4][1])["grpc-status"] == "0"


def test_error_is_trailers_only_in_headers(proxy: tuple[str, Any, int],
                                          protos: tuple[ModuleType, ModuleType]) -> None:
    kind, _, port = proxy
    r = web_call(port, "Unary", protos[0].EchoRequest(code=7, message="denied"))
    assert r.status_code == 200, kind
    assert (r.headers["grpc-status"], r.headers["grpc-message"]) == ("7", "denied"), kind
    assert r.content == b"", kind


def test_bad_base64_body(proxy: tuple[str, Any, int]) -> None:
    kind, _, port = proxy
    with httpx.Client(timeout=20) as c:
        r = c.post(f"http://127.0.0.1:{port}/envoi.e2e.Echo/Unary", content=b"!!!not base64",
                   headers={"content-type": TEXT, "x-grpc-web": "1"})
    assert r.status_code == 400, (kind, r.status_code, r.content)
    assert r.headers.get("grpc-status") == "13" or b"" in r.content


def test_curl_grpc_web(proxy: tuple[str, Any, int], protos: tuple[ModuleType, ModuleType],
                       tmp_path: Any) -> None:
    kind, _, port = proxy
    body = tmp_path / "body"
    body.write_bytes(encode(protos[0].EchoRequest(payload=b"curl").SerializeToString()))
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "-H", f"content-type: {PROTO}", "-H", "x-grpc-web: 1",
         "--data-binary", f"@{body}", f"http://127.0.0.1:{port}/envoi.e2e.Echo/Unary"],
        capture_output=True, timeout=30, check=True).stdout
    (_, msg), (flag, tr) = frames(out)
    assert protos[0].EchoReply.FromString(msg).payload == b"curl" and flag == 0x80, kind
    assert trailer_dict(tr)["grpc-status"] == "0"


def _traffic(port: int, pb2: ModuleType) -> None:
    for i in range(2):
        assert web_call(port, "Unary", pb2.EchoRequest(payload=b"x" * i)).status_code == 200
    assert web_call(port, "ServerStream", pb2.EchoRequest(count=3), text=True
                    ).status_code == 200
    assert web_call(port, "Unary", pb2.EchoRequest(code=5)).status_code == 200


@pytest.mark.parametrize("stats_first", [False, True], ids=["web-first", "stats-first"])
def test_stats_equal_envoys(stats_first: bool, proxy_process: Callable[..., Any],
                            server: EchoServer, protos: tuple[ModuleType, ModuleType]) -> None:
    seen = {}
    for kind in KINDS:  # (seen[kind] printed by pytest when they differ)
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, grpc_yaml(port, admin, server.port, h2_options=False,
                                             stats_first=stats_first), admin)
        _traffic(port, protos[0])
        wait_for(lambda p=proc: p.stats().get("http.grpc_in.downstream_rq_completed") == 4,
                 what=f"{kind}: 4 requests completed")
        seen[kind] = {k: v for k, v in proc.stats().items()
                      if k.startswith(("cluster.greeter.grpc.", "cluster.greeter.grpc-web."))}
    assert seen["envoi"] == seen["envoy"]
    assert seen["envoy"], "no gRPC stats at all"


def test_sonora_client(proxy: tuple[str, Any, int], protos: tuple[ModuleType, ModuleType]
                       ) -> None:
    """The sonora gRPC-Web client (HTTP/1.1, +proto) with the generated stub: unary, server
    streaming, and an error status with its message."""
    import grpc
    import sonora.client

    kind, _, port = proxy
    pb2 = protos[0]
    ser, reply = pb2.EchoRequest.SerializeToString, pb2.EchoReply.FromString
    with sonora.client.insecure_web_channel(f"http://127.0.0.1:{port}") as ch:
        # (the generated stub passes grpcio's private _registered_method, which sonora lacks)
        unary = ch.unary_unary("/envoi.e2e.Echo/Unary", ser, reply)
        stream = ch.unary_stream("/envoi.e2e.Echo/ServerStream", ser, reply)
        assert unary(pb2.EchoRequest(payload=b"sonora"), timeout=20).payload == b"sonora"
        got = [r.index for r in stream(pb2.EchoRequest(count=5), timeout=20)]
        assert got == list(range(5)), kind
        with pytest.raises(grpc.RpcError) as info:
            unary(pb2.EchoRequest(code=5, message="no such thing"), timeout=20)
        err: Any = info.value
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing"), kind
