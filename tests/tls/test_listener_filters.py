"""The tls_inspector and http_inspector listener filters without sockets: peeked bytes in,
socket facts and stats out; and filter-chain selection on what they found."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from envoi.filters.http_inspector import MAX_INSPECT_SIZE, HttpInspectorFactory, detect
from envoi.filters.tls_inspector import TlsInspectorFactory
from envoi.network.filter import FilterStatus
from envoi.network.listener import ChainMatch, ConnectionMeta, FilterChain, select_filter_chain
from envoi.network.listener_filter import ListenerFilter
from envoi.stats import Store
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from test_client_hello import HELLO, client_hello

CONTINUE, STOP = FilterStatus.CONTINUE, FilterStatus.STOP_ITERATION


class FakeSocket:
    """Plays the acceptor's part: the socket facts and the callbacks."""

    def __init__(self, transport: str = "") -> None:
        self.requested_server_name = ""
        self.detected_transport_protocol = transport
        self.requested_application_protocols: Sequence[str] = ()
        self.local_address = ("127.0.0.1", 443)
        self.remote_address = ("127.0.0.1", 5555)
        self.closed = False

    @property
    def socket(self) -> FakeSocket:
        return self

    def close(self) -> None:
        self.closed = True


class _Ctx:
    def __init__(self, store: Store, path: str = "x") -> None:
        self.scope = store.root
        self.path = path


def tls_inspector(store: Store, **fields: object) -> ListenerFilter:
    cfg = tls_inspector_pb2.TlsInspector(**fields)  # type: ignore[arg-type]
    return TlsInspectorFactory().create_filter_factory(cfg, _Ctx(store))()  # type: ignore[arg-type]


def http_inspector(store: Store) -> ListenerFilter:
    return HttpInspectorFactory().create_filter_factory(
        http_inspector_pb2.HttpInspector(), _Ctx(store))()  # type: ignore[arg-type]


def stat(store: Store, name: str) -> int:
    s = store.get(name)
    return int(s.value) if s is not None else 0  # type: ignore[union-attr]


def test_tls_inspector_reads_sni_and_alpn() -> None:
    store = Store()
    f, sock = tls_inspector(store), FakeSocket()
    assert f.on_accept(sock) is STOP
    assert f.on_data(HELLO[:100]) is STOP
    assert f.on_data(HELLO) is CONTINUE
    assert sock.detected_transport_protocol == "tls"
    assert sock.requested_server_name == "a.local"
    assert tuple(sock.requested_application_protocols) == ("h2", "http/1.1")
    for name in ("tls_found", "sni_found", "alpn_found"):
        assert stat(store, f"tls_inspector.{name}") == 1
    hist = store.get("tls_inspector.bytes_processed")
    assert hist is not None


def test_tls_inspector_plaintext_and_no_sni() -> None:
    store = Store()
    f, sock = tls_inspector(store), FakeSocket()
    f.on_accept(sock)
    assert f.on_data(b"GET / HTTP/1.1\r\n") is CONTINUE
    assert sock.detected_transport_protocol == "" and not sock.closed
    assert stat(store, "tls_inspector.tls_not_found") == 1
    f, sock = tls_inspector(store), FakeSocket()
    f.on_accept(sock)
    assert f.on_data(client_hello(sni=None)) is CONTINUE
    assert sock.detected_transport_protocol == "tls" and sock.requested_server_name == ""
    assert stat(store, "tls_inspector.sni_not_found") == 1
    assert stat(store, "tls_inspector.alpn_not_found") == 1


def test_tls_inspector_client_hello_too_large() -> None:
    store = Store()
    f, sock = tls_inspector(store, max_client_hello_size={"value": 200}), FakeSocket()
    assert f.max_read_bytes == 200
    f.on_accept(sock)
    assert f.on_data(HELLO[:200]) is STOP
    assert sock.closed
    assert stat(store, "tls_inspector.client_hello_too_large") == 1


def test_tls_inspector_can_close_on_parse_errors() -> None:
    store = Store()
    f = tls_inspector(store, close_connection_on_client_hello_parsing_errors=True)
    sock = FakeSocket()
    f.on_accept(sock)
    assert f.on_data(b"hello") is STOP and sock.closed


def test_tls_inspector_config_errors() -> None:
    from envoi.config import ConfigError

    store = Store()
    with pytest.raises(ConfigError, match="greater than maximum of 16384"):
        tls_inspector(store, max_client_hello_size={"value": 70000})
    with pytest.raises(ConfigError, match="enable_ja3_fingerprinting: not implemented"):
        tls_inspector(store, enable_ja3_fingerprinting={"value": True})


@pytest.mark.parametrize(("data", "found"), [
    (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", "http/1.1"),
    (b"POST /a?b=c HTTP/1.0\r\n", "http/1.0"),
    (b"GET /\r\n", "http/1.0"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h2c"),
    (b"\x16\x03\x01\x02\x00\x01", ""),
    (b"\r\nGET / HTTP/1.1\r\n", ""),
    (b"GET / FTP/1.1\r\n", ""),
    (b"G(T / HTTP/1.1\r\n", ""),
    (b"GET", None),
    (b"GET /path HTTP/1.", None),
    (b"PRI * HTTP/2", None),
])
def test_http_detection(data: bytes, found: str | None) -> None:
    assert detect(data) == found


def test_http_inspector_sets_the_protocol() -> None:
    store = Store()
    f, sock = http_inspector(store), FakeSocket()
    assert f.on_accept(sock) is STOP
    assert f.on_data(b"GET / HT") is STOP
    assert f.on_data(b"GET / HTTP/1.1\r\n") is CONTINUE
    assert tuple(sock.requested_application_protocols) == ("http/1.1",)
    assert stat(store, "http_inspector.http11_found") == 1
    f, sock = http_inspector(store), FakeSocket()
    f.on_accept(sock)
    assert f.on_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is CONTINUE
    assert tuple(sock.requested_application_protocols) == ("h2c",)
    assert stat(store, "http_inspector.http2_found") == 1


def test_http_inspector_skips_tls_and_counts_garbage() -> None:
    store = Store()
    f = http_inspector(store)
    assert f.on_accept(FakeSocket("tls")) is CONTINUE
    f, sock = http_inspector(store), FakeSocket()
    f.on_accept(sock)
    assert f.on_data(b"\x00\x01binary") is CONTINUE
    assert stat(store, "http_inspector.http_not_found") == 1
    f, sock = http_inspector(store), FakeSocket()
    f.on_accept(sock)
    assert f.on_data(b"GET /" + b"a" * MAX_INSPECT_SIZE) is STOP
    assert sock.closed and stat(store, "http_inspector.read_error") == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_http_detection_never_raises(data: bytes) -> None:
    assert detect(data) in (None, "", "http/1.0", "http/1.1", "h2c")


# -- filter-chain selection on what the listener filters found --------------------------------

def chain(name: str, **kw: object) -> FilterChain:
    return FilterChain(name, ChainMatch(**kw), [])  # type: ignore[arg-type]


def meta(sni: str = "", transport: str = "raw_buffer", alpn: Sequence[str] = ()) -> ConnectionMeta:
    ip = ipaddress.ip_address("127.0.0.1")
    return ConnectionMeta(ip, 443, ip, 5000, server_name=sni, transport_protocol=transport,
                          application_protocols=alpn)


def pick(chains: list[FilterChain], m: ConnectionMeta, default: FilterChain | None = None
         ) -> str | None:
    c = select_filter_chain(chains, default, m)
    return c.name if c is not None else None


def test_server_names_exact_beats_wildcards_longest_wildcard_first() -> None:
    chains = [chain("com", server_names=["*.com"]), chain("ex", server_names=["*.example.com"]),
              chain("a-ex", server_names=["*.a.example.com"]),
              chain("www", server_names=["www.a.example.com"]), chain("any")]
    assert pick(chains, meta("www.a.example.com", "tls")) == "www"
    assert pick(chains, meta("api.a.example.com", "tls")) == "a-ex"
    assert pick(chains, meta("x.y.example.com", "tls")) == "ex"
    assert pick(chains, meta("example.com", "tls")) == "com"
    assert pick(chains, meta("example.org", "tls")) == "any"
    assert pick(chains, meta("", "raw_buffer")) == "any"
    assert pick(chains, meta("WWW.A.EXAMPLE.COM", "tls")) == "www"


def test_a_wildcard_needs_a_label_before_it() -> None:
    chains = [chain("ex", server_names=["*.example.com"])]
    assert pick(chains, meta("example.com", "tls")) is None


def test_transport_protocol_and_no_backtracking() -> None:
    chains = [chain("sni", server_names=["a.local"], transport_protocol="tls"),
              chain("raw", transport_protocol="raw_buffer")]
    assert pick(chains, meta("a.local", "tls")) == "sni"
    assert pick(chains, meta("", "raw_buffer")) == "raw"
    # TLS without SNI: the only SNI-less chain wants raw_buffer, so nothing matches (the
    # server_names level already chose, Envoy does not go back).
    assert pick(chains, meta("", "tls")) is None
    assert pick(chains, meta("c.local", "tls"), default=chain("dflt")) == "dflt"


def test_application_protocols() -> None:
    chains = [chain("h2", application_protocols=["h2", "h2c"]),
              chain("h1", application_protocols=["http/1.1"]), chain("other")]
    assert pick(chains, meta(alpn=["h2c"])) == "h2"
    assert pick(chains, meta(alpn=["http/1.1"])) == "h1"
    assert pick(chains, meta(alpn=["h2", "http/1.1"], transport="tls")) == "h2"
    assert pick(chains, meta(alpn=["http/1.0"])) == "other"
    assert pick(chains, meta()) == "other"
