"""Bodies stream with backpressure: 100 MiB down from Debian's nginx and 100 MiB up to a
counting upstream, through envoi with curl and httpx, checked by hash, with envoi's RSS sampled
during the transfer; a slow upstream reader holds the client back; pipelined requests are
answered in order."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import httpx
import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER
from scripted_upstream import TcpUpstream

SIZE = 100 * 1024 * 1024
RSS_LIMIT_KB = 150 * 1024
NGINX = "/usr/sbin/nginx"

NGINX_CONF = """
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
daemon off;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /sink {{ client_max_body_size 0; return 200 "ok\\n"; }}
    }}
}}
"""

ENVOI = HCM_LISTENER + """\
          stat_prefix: s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/count"}}
                route: {{cluster: counter, timeout: 120s}}
              - match: {{prefix: "/"}}
                route: {{cluster: nginx, timeout: 120s}}
  clusters:
  - name: nginx
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: nginx
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {nginx}}}}}}}
  - name: counter
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: counter
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {counter}}}}}}}
"""


class Counter(TcpUpstream):
    """An HTTP/1.1 upstream (h11, one thread per connection) that hashes request bodies and
    answers ``<bytes> <sha256>``; ``hold`` (an Event, when set) keeps it from reading."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        super().__init__()

    def serve(self, c: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            h = hashlib.sha256()
            n = 0
            while True:
                e = conn.next_event()
                if e is h11.NEED_DATA:
                    if isinstance(conn.their_state, type(h11.SEND_BODY)) and \
                            conn.their_state is h11.SEND_BODY:
                        self.started.set()
                        self.release.wait()
                    data = c.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(e, h11.Data):
                    h.update(e.data)
                    n += len(e.data)
                elif isinstance(e, h11.EndOfMessage):
                    break
                elif isinstance(e, h11.ConnectionClosed):
                    return
            body = f"{n} {h.hexdigest()}".encode()
            c.sendall(conn.send(h11.Response(status_code=200, headers=[
                ("content-length", str(len(body)))])) + conn.send(h11.Data(data=body))
                + conn.send(h11.EndOfMessage()))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


class RssSampler:
    """Reads VmRSS of a pid every 20 ms in a thread; ``peak_kb`` after ``stop()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                    self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("nginx")
    (d / "www").mkdir()
    path = d / "www" / "big.bin"
    h = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(SIZE // (1 << 20)):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return path, h.hexdigest()


@pytest.fixture(scope="module")
def nginx(payload: tuple[Path, str]) -> Iterator[int]:
    assert shutil.which(NGINX) or Path(NGINX).exists(), "nginx missing: scripts/setup.sh --test"
    d = payload[0].parent.parent
    port = free_port()
    # As root, nginx workers would run as nobody, who cannot read pytest's 0700 tmp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port, user=user))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e",
                             str(d / "error.log")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is None and httpx.get(
            f"http://127.0.0.1:{port}/sink").status_code == 200, 20, what="nginx")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def proxy(nginx: int, envoi_process: Callable[..., EnvoiProcess]
          ) -> Iterator[tuple[EnvoiProcess, int, Counter]]:
    counter = Counter()
    port, admin = free_port(), free_port()
    proc = envoi_process(ENVOI.format(admin=admin, port=port, nginx=nginx,
                                      counter=counter.port), admin)
    yield proc, port, counter
    counter.close()


def pid(proc: EnvoiProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def test_download_100mib_curl(proxy: tuple[EnvoiProcess, int, Counter],
                              payload: tuple[Path, str]) -> None:
    proc, port, _ = proxy
    with RssSampler(pid(proc)) as rss:
        curl = subprocess.Popen(["curl", "-sf", f"http://127.0.0.1:{port}/big.bin"],
                                stdout=subprocess.PIPE)
        assert curl.stdout is not None
        h = hashlib.sha256()
        n = 0
        while chunk := curl.stdout.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        assert curl.wait(60) == 0
    assert n == SIZE and h.hexdigest() == payload[1]
    assert rss.samples > 5 and rss.peak_kb < RSS_LIMIT_KB, rss.peak_kb


def test_download_100mib_httpx_slow_client(proxy: tuple[EnvoiProcess, int, Counter],
                                           payload: tuple[Path, str]) -> None:
    """A client that reads slowly at first: envoi must pause nginx, not buffer the file."""
    proc, port, _ = proxy
    with RssSampler(pid(proc)) as rss, httpx.stream(
            "GET", f"http://127.0.0.1:{port}/big.bin", timeout=60) as r:
        h = hashlib.sha256()
        n = 0
        for i, chunk in enumerate(r.iter_raw(1 << 16)):
            if i < 20:
                time.sleep(0.05)  # the slow reader being tested: 1 s of trickling
            h.update(chunk)
            n += len(chunk)
    assert n == SIZE and h.hexdigest() == payload[1]
    assert rss.peak_kb < RSS_LIMIT_KB, rss.peak_kb
    assert proc.stats()["cluster.nginx.upstream_flow_control_paused_reading_total"] >= 1


def test_upload_100mib_curl_to_nginx_and_counter(proxy: tuple[EnvoiProcess, int, Counter],
                                                 payload: tuple[Path, str]) -> None:
    proc, port, _ = proxy
    path, digest = payload
    with RssSampler(pid(proc)) as rss:
        out = subprocess.run(["curl", "-sf", "-H", "Expect:", "--data-binary", f"@{path}",
                              f"http://127.0.0.1:{port}/count"], capture_output=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode() == f"{SIZE} {digest}"
        out = subprocess.run(["curl", "-sf", "-T", str(path), f"http://127.0.0.1:{port}/sink"],
                             capture_output=True, timeout=120)
        assert out.returncode == 0 and out.stdout == b"ok\n", out
    assert rss.peak_kb < RSS_LIMIT_KB, rss.peak_kb


def test_upload_100mib_httpx_chunked_slow_upstream(proxy: tuple[EnvoiProcess, int, Counter],
                                                   payload: tuple[Path, str]) -> None:
    """The upstream does not read for a while: the client must be held back (backpressure),
    envoi's RSS stays bounded, and then every byte arrives."""
    proc, port, counter = proxy
    path, digest = payload
    counter.release.clear()
    sent = [0]

    def body() -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                sent[0] += len(chunk)
                yield chunk

    result: list[httpx.Response] = []

    def upload() -> None:
        result.append(httpx.post(f"http://127.0.0.1:{port}/count", content=body(),
                                 timeout=120))

    with RssSampler(pid(proc)) as rss:
        t = threading.Thread(target=upload)
        t.start()
        assert counter.started.wait(20)
        # While the upstream does not read, the client stalls well short of the whole body.
        wait_for(lambda: proc.stats().get("http.s.downstream_flow_control_paused_reading_total",
                                          0) >= 1, 20, what="envoi pauses the client")
        stalled = sent[0]
        time.sleep(0.5)  # the upstream's stall being tested: the client must not progress much
        assert sent[0] < SIZE // 2 and sent[0] - stalled < 16 * 1024 * 1024, (stalled, sent[0])
        counter.release.set()
        t.join(120)
    assert result and result[0].text == f"{SIZE} {digest}"
    assert rss.peak_kb < RSS_LIMIT_KB, rss.peak_kb


def test_pipelined_requests_answered_in_order(proxy: tuple[EnvoiProcess, int, Counter]) -> None:
    _, port, _ = proxy
    reqs = b"".join(b"POST /count/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (i, i + 1, b"p" * (i + 1)) for i in range(8))
    reqs += b"GET /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(reqs)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    bodies = [p.split(b"\r\n\r\n", 1)[1][:80] for p in out.split(b"HTTP/1.1 200 OK")[1:]]
    for i in range(8):
        want = f"{i + 1} {hashlib.sha256(b'p' * (i + 1)).hexdigest()}".encode()
        assert bodies[i].startswith(want), (i, bodies[i])
    assert bodies[8].startswith(b"ok\n") and len(bodies) == 9
