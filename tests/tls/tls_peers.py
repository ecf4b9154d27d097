"""Peers for the TLS tests: an HTTPS echo upstream that reports what the TLS client (the proxy)
sent it, and small raw TLS clients."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from typing import Any

from envoi.testing import free_port


class _TlsEcho(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        sock: Any = self.connection
        peer = sock.getpeercert()
        subject = dict(x[0] for x in peer.get("subject", ())) if peer else {}
        body = json.dumps({
            "path": self.path,
            "port": self.server.server_address[1],
            "sni": getattr(sock, "envoi_test_sni", None),
            "alpn": sock.selected_alpn_protocol(),
            "version": sock.version(),
            "client_cn": subject.get("commonName"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.handshake_errors: list[str] = []
        super().__init__(("127.0.0.1", port), _TlsEcho)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request's thread, so a slow client stalls nobody else.
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(str(exc))
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class TlsEchoServer:
    """HTTPS on 127.0.0.1 that answers JSON with the SNI, ALPN, TLS version and client
    certificate it saw. ``client_ca`` makes a client certificate mandatory."""

    def __init__(self, cert: tuple[str, str], *, client_ca: str | None = None,
                 alpn: list[str] | None = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.port = free_port()
        self.httpd = _Server(self.port, ctx)

        def sni_cb(obj: Any, name: str | None, c: ssl.SSLContext) -> None:
            obj.envoi_test_sni = name

        ctx.sni_callback = sni_cb
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TlsEchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tls_client_context(ca: str | None = None, cert: tuple[str, str] | None = None,
                       alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_exchange(port: int, sni: str | None, payload: bytes, ctx: ssl.SSLContext,
                 timeout: float = 10.0) -> bytes:
    """Connect with TLS, send ``payload``, half-close, and return all the answer; raises
    ssl.SSLError / OSError when the proxy refuses."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                return out


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def http_get(path: str = "/", host: str = "x") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode()


def body_json(response: bytes) -> Any:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:200]
    return json.loads(body)


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "port": self.server.server_address[1],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class HttpEchoServer:
    """Plain HTTP/1.1 on 127.0.0.1 answering JSON with its own port (which cluster served)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Echo)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HttpEchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
