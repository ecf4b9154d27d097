"""HCM options and HTTP access logs, through the real Envoy 1.39.3 and envoi with the same config
(tests/http/hcm_options_config.py) and the same requests: ``use_remote_address`` with
``xff_num_trusted_hops``, ``headers_with_underscores_action``, ``max_headers_count``,
``server_name``, router ``suppress_envoy_headers``; the default access-log format, a custom
``text_format_source`` and a ``json_format``, compared line by line and field by field (start
times, durations and ephemeral ports aside)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import EnvoiProcess, EnvoyProcess, free_port, wait_for
from hcm_options_config import LISTENERS, config
from http_peers import EchoServer

# (listener, request) in order; the answer and what the upstream saw are kept per request.
XFF_REQUESTS = [
    b"GET /up/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /up/b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n\r\n",
    b"GET /up/c HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 3.3.3.3\r\n"
    b"X-Envoy-External-Address: 9.9.9.9\r\n\r\n",
]
LOG_REQUESTS = [
    b"GET /up/a?q=1 HTTP/1.1\r\nHost: h\r\nX-Foo: abcdefgh\r\nUser-Agent: ua/1\r\n\r\n",
    b"POST /up/b HTTP/1.1\r\nHost: h\r\nX-Bar: xy\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n",  # NR
    b"GET /dead HTTP/1.1\r\nHost: h\r\n\r\n",  # UF
    b"GET /empty HTTP/1.1\r\nHost: h\r\n\r\n",  # UH
    b"GET /direct HTTP/1.0\r\nHost: h\r\n\r\n",  # 426, DPE
    b"HEAD /direct HTTP/1.1\r\nHost: h\r\n\r\n",
]
REQUESTS: list[tuple[str, bytes]] = [
    *((n, r) for n in ("xff0", "xff1", "xff2", "noremote1", "noremote0") for r in XFF_REQUESTS),
    ("reject", b"GET /up/u HTTP/1.1\r\nHost: h\r\nx_under: 1\r\n\r\n"),
    ("reject", b"GET /up/m HTTP/1.1\r\nHost: h\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n"),
    ("reject", b"GET /up/m HTTP/1.1\r\nHost: h\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n"),
    ("dropu", b"GET /up/u HTTP/1.1\r\nHost: h\r\nx_under: 1\r\nx-ok: 2\r\n\r\n"),
    ("text", b"GET /up/u HTTP/1.1\r\nHost: h\r\nx_under: 1\r\n\r\n"),
    ("named", b"GET /up/n HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("named", b"GET /direct HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("named", b"GET /dead HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("named", b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"),
    *((n, r) for n in ("deflog", "text", "json") for r in LOG_REQUESTS),
]


def fetch(port: int, data: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if data.startswith(b"HEAD") or (m and len(body) >= int(m.group(1))):
                    break
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
                      }, body


def run(kind: str, tmp: Path, echo: EchoServer) -> dict[str, Any]:
    ports = {n: free_port() for n in LISTENERS}
    admin, dead = free_port(), free_port()
    logs = {n: str(tmp / f"{n}.log") for n in LISTENERS}
    for p in logs.values():
        Path(p).write_text("")
    text = config(admin, ports, logs, echo.port, dead)
    proc: Any
    if kind == "envoy":
        (tmp / "envoy.yaml").write_text(text)
        proc = EnvoyProcess(tmp / "envoy.yaml", admin, tmp / "envoy.log").start()
    else:
        proc = EnvoiProcess.from_yaml(text, tmp, admin).start()
    try:
        answers = []
        for name, req in REQUESTS:
            status, headers, body = fetch(ports[name], req)
            seen = None
            if body.startswith(b"{"):
                seen = json.loads(body)["headers"]
            answers.append((status, headers, body if seen is None else b"", seen))
        want = {"deflog": 7, "text": 8, "json": 7}
        wait_for(lambda: all(len(Path(logs[n]).read_text().splitlines()) >= k
                             for n, k in want.items()), 30, what=f"{kind}: access log lines")
        return {"answers": answers, "stats": proc.stats(),
                "logs": {n: Path(logs[n]).read_text().splitlines() for n in LISTENERS}}
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    with EchoServer() as echo:
        return {kind: run(kind, tmp_path_factory.mktemp(kind), echo)
                for kind in ("envoy", "envoi")}


def answer(results: dict[str, dict[str, Any]], kind: str, name: str, n: int = 0,
           ) -> tuple[str, dict[str, str], bytes, dict[str, str] | None]:
    idx = [i for i, (ln, _) in enumerate(REQUESTS) if ln == name][n]
    return results[kind]["answers"][idx]  # type: ignore[no-any-return]


_VOLATILE = ("date", "x-envoy-upstream-service-time", "x-request-id")


def same_answers(results: dict[str, dict[str, Any]], name: str) -> list[Any]:
    """The answers of one listener, equal in both (volatile headers aside); Envoy's returned."""
    out = []
    for i, (ln, _) in enumerate(REQUESTS):
        if ln != name:
            continue
        a, b = results["envoy"]["answers"][i], results["envoi"]["answers"][i]
        for x, y in ((a, "envoy"), (b, "envoi")):
            assert x is not None, y
        strip = [(s, {k: v for k, v in h.items() if k not in _VOLATILE}, body,
                  seen and {k: v for k, v in seen.items() if k not in _VOLATILE and k != "host"})
                 for s, h, body, seen in (a, b)]
        assert strip[0] == strip[1], (name, REQUESTS[i][1])
        out.append(a)
    return out


@pytest.mark.parametrize("name", ["xff0", "xff1", "xff2", "noremote1", "noremote0"])
def test_xff_and_external_address(results: dict[str, dict[str, Any]], name: str) -> None:
    same_answers(results, name)
    # The client address each chose, as the access log shows it.
    envoy_log, envoi_log = results["envoy"]["logs"][name], results["envoi"]["logs"][name]
    assert len(envoy_log) == len(envoi_log) == 3
    for a, b in zip(envoy_log, envoi_log, strict=True):
        fa, fb = a.split(" "), b.split(" ")
        assert fa[9].endswith(":0") == fb[9].endswith(":0")
        if fa[9].endswith(":0"):
            assert fa[9] == fb[9]


def test_xff_rules_spelled_out(results: dict[str, dict[str, Any]]) -> None:
    seen = {n: [answer(results, "envoi", n, i)[3] for i in range(3)]
            for n in ("xff0", "xff1", "xff2", "noremote1", "noremote0")}
    host = seen["xff0"][0]["x-forwarded-for"]  # type: ignore[index]
    assert host != "127.0.0.1"  # a loopback peer appends the host's own address, as Envoy
    assert seen["xff1"][1]["x-forwarded-for"] == "1.1.1.1, 2.2.2.2," + host  # type: ignore[index]
    assert [s["x-envoy-external-address"] for s in seen["xff1"]] == [  # type: ignore[index]
        "127.0.0.1", "2.2.2.2", "3.3.3.3"]
    assert [s["x-envoy-external-address"] for s in seen["xff2"]] == [  # type: ignore[index]
        "127.0.0.1", "1.1.1.1", "127.0.0.1"]
    assert "x-forwarded-for" not in seen["noremote0"][0]  # type: ignore[operator]
    assert seen["noremote0"][2]["x-envoy-external-address"] == "9.9.9.9"  # type: ignore[index]
    ds = [ln.split(" ")[9] for ln in results["envoi"]["logs"]["noremote1"]]
    assert ds[1] == "1.1.1.1:0" and ds[2].startswith("127.0.0.1:")


def test_headers_with_underscores_and_max_headers_count(results: dict[str, dict[str, Any]],
                                                        ) -> None:
    rejected, five, six = same_answers(results, "reject")
    assert rejected[0] == "HTTP/1.1 400 Bad Request" and rejected[2] == b"Bad Request"
    assert rejected[1]["connection"] == "close"
    assert five[0] == "HTTP/1.1 200 OK"  # host + 4 = max_headers_count
    assert six[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    (dropped,) = same_answers(results, "dropu")
    assert "x_under" not in dropped[3] and dropped[3]["x-ok"] == "2"
    allowed = answer(results, "envoi", "text")
    assert allowed[3] is not None and allowed[3]["x_under"] == "1"  # ALLOW is the default
    for kind in ("envoy", "envoi"):
        st = results[kind]["stats"]
        assert st["http1.requests_rejected_with_underscores_in_headers"] == 1, kind
        assert st["http1.dropped_headers_with_underscores"] == 1, kind
        assert st["http.reject.downstream_cx_protocol_error"] == 2, kind
        assert st["http.reject.downstream_rq_4xx"] == 2, kind


def test_server_name_and_suppress_envoy_headers(results: dict[str, dict[str, Any]]) -> None:
    up, direct, dead, nope = same_answers(results, "named")
    for a in (up, direct, dead, nope):
        assert a[1]["server"] == "my-proxy/1.0"
    assert "x-envoy-upstream-service-time" not in up[1]
    assert "x-envoy-expected-rq-timeout-ms" not in up[3]
    assert dead[2].endswith(b"reset reason: remote connection failure")


def _norm_default(line: str) -> list[str]:
    # [start] "GET /p HTTP/1.1" code flags rx tx duration upstream-time "xff" "ua" "id" ...
    f = line.split(" ")
    del f[0]  # start time
    f[7] = "D"  # %DURATION%
    f[8] = "T" if f[8] != "-" else "-"  # x-envoy-upstream-service-time
    return [re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "ID",
                   re.sub(r"127\.0\.0\.1:\d+", "A", x)) for x in f]


def test_default_access_log_format(results: dict[str, dict[str, Any]]) -> None:
    a, b = results["envoy"]["logs"]["deflog"], results["envoi"]["logs"]["deflog"]
    assert len(a) == len(b) == 7
    for x, y in zip(a, b, strict=True):
        assert _norm_default(x) == _norm_default(y), (x, y)
    flags = [ln.split(" ")[5] for ln in b]
    assert flags == ["-", "-", "NR", "UF", "UH", "DPE", "-"]


def test_custom_text_access_log(results: dict[str, dict[str, Any]]) -> None:
    def norm(line: str) -> str:
        return re.sub(r"127\.0\.0\.1:\d+", "A", re.sub(r"dur=\d+", "", line))

    a, b = results["envoy"]["logs"]["text"], results["envoi"]["logs"]["text"]
    assert len(a) == len(b) == 8
    assert [norm(x) for x in a] == [norm(x) for x in b]
    # b[0] is the underscore request of the headers test; then LOG_REQUESTS.
    assert b[1].startswith("abcde - application/json 200 - 127.0.0.1:")  # X-FOO, cut to 5
    assert b[2].startswith("xy - ")  # X-BAR when X-FOO is absent
    assert [ln.split(" ")[4] for ln in b[2:7]] == ["-", "NR", "UF", "UH", "DPE"]


def test_json_access_log(results: dict[str, dict[str, Any]]) -> None:
    a, b = results["envoy"]["logs"]["json"], results["envoi"]["logs"]["json"]
    assert len(a) == len(b) == 7
    for x, y in zip(a, b, strict=True):
        ja, jb = json.loads(x), json.loads(y)
        assert list(ja) == list(jb)  # same keys, same order (sorted)
        for d in (ja, jb):
            assert isinstance(d.pop("duration"), int)
            if isinstance(d.get("up"), str):
                d["up"] = re.sub(r":\d+$", ":P", d["up"])
        assert ja == jb, (x, y)
    first = json.loads(b[0])
    assert first["code"] == 200 and first["rx"] == 0 and first["flags"] == "-"
    assert first["foo"] == "abcde" and first["mixed"] == "code=200 path=/up/a?q=1"
    assert json.loads(b[2])["up"] is None and json.loads(b[2])["flags"] == "NR"
