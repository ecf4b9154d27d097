"""The sans-IO ClientHello reader: real ClientHellos from OpenSSL (through ``ssl.MemoryBIO``),
every prefix of them, the same message split over several records, malformed variants, and
fuzzing with random and mutated bytes."""

from __future__ import annotations

import ssl
import struct

import pytest
from envoi.tls.client_hello import ClientHello, NeedMore, NotTls, parse_client_hello
from hypothesis import given, settings
from hypothesis import strategies as st


def client_hello(sni: str | None = "a.local", alpn: list[str] | None = None,
                 max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight of a real OpenSSL client."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def reframe(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake message carried in records of the given payload sizes."""
    message = hello[5:]
    out, pos = b"", 0
    for n in [*sizes, len(message)]:
        chunk = message[pos:pos + n]
        if not chunk:
            break
        out += b"\x16\x03\x01" + struct.pack(">H", len(chunk)) + chunk
        pos += len(chunk)
    return out


HELLO = client_hello(alpn=["h2", "http/1.1"])


def test_sni_and_alpn_of_a_real_client_hello() -> None:
    r = parse_client_hello(HELLO)
    assert isinstance(r, ClientHello)
    assert r.server_name == "a.local"
    assert r.alpn == ("h2", "http/1.1")
    assert r.size == len(HELLO)
    assert r.legacy_version == 0x0303


def test_no_sni_no_alpn_and_tls12_only() -> None:
    r = parse_client_hello(client_hello(sni=None))
    assert isinstance(r, ClientHello) and r.server_name == "" and r.alpn == ()
    r = parse_client_hello(client_hello(max_version=ssl.TLSVersion.TLSv1_2, alpn=["http/1.1"]))
    assert isinstance(r, ClientHello) and r.server_name == "a.local" and r.alpn == ("http/1.1",)


def test_every_prefix_needs_more() -> None:
    for n in range(len(HELLO)):
        assert isinstance(parse_client_hello(HELLO[:n]), NeedMore), n


def test_need_more_says_how_far() -> None:
    r = parse_client_hello(HELLO[:3])
    assert r == NeedMore(5)
    r = parse_client_hello(HELLO[:10])
    assert r == NeedMore(len(HELLO))


def test_message_split_over_records() -> None:
    data = reframe(HELLO, [1, 3, 50, 7])
    r = parse_client_hello(data)
    assert isinstance(r, ClientHello) and r.server_name == "a.local" and r.size == len(data)
    for n in range(len(data)):
        assert isinstance(parse_client_hello(data[:n]), NeedMore), n


def test_bytes_after_the_record_are_not_counted() -> None:
    r = parse_client_hello(HELLO + b"\x14\x03\x03\x00\x01\x01")
    assert isinstance(r, ClientHello) and r.size == len(HELLO)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x80\x2e\x01\x00\x02",  # SSLv2-compatible hello
    b"\x17\x03\x03\x00\x05hello",  # application data first
    b"\x16\x02\x00\x00\x05hello",  # record version 2.x
    b"\x16\x03\x01\x00\x00",  # empty record
    b"\x16\x03\x01\x48\x01" + b"\x01" * 10,  # record longer than 2^14
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello
    b"\x16\x03\x01\x00\x04\x01\x00\x50\x00",  # ClientHello message longer than 16 KiB
])
def test_not_tls(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), NotTls)


def _with_body(body: bytes) -> bytes:
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(msg)) + msg


def _body(exts: bytes | None, suites: bytes = b"\x00\x02\x13\x01", comp: bytes = b"\x01\x00",
          session: bytes = b"\x00") -> bytes:
    body = b"\x03\x03" + b"\x00" * 32 + session + suites + comp
    return body if exts is None else body + struct.pack(">H", len(exts)) + exts


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">HH", kind, len(data)) + data


def _sni(name: bytes) -> bytes:
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    return _ext(0, struct.pack(">H", len(entry)) + entry)


def test_minimal_hellos() -> None:
    r = parse_client_hello(_with_body(_body(None)))
    assert isinstance(r, ClientHello) and r.server_name == "" and r.alpn == ()
    r = parse_client_hello(_with_body(_body(_sni(b"Example.COM"))))
    assert isinstance(r, ClientHello) and r.server_name == "Example.COM"


@pytest.mark.parametrize("body", [
    _body(None, suites=b"\x00\x00"),  # no cipher suites
    _body(None, suites=b"\x00\x03\x13\x01\x00"),  # odd cipher-suite length
    _body(None, comp=b"\x00"),  # no compression methods
    _body(None, session=b"\x21" + b"\x00" * 33),  # session id longer than 32
    _body(_sni(b"a") + _sni(b"b")),  # duplicate extension
    _body(_sni(b"")),  # empty host name
    _body(_sni(b"a\x00b")),  # NUL in the host name
    _body(_ext(0, b"\x00\x00")),  # empty server_name list
    _body(_ext(16, b"\x00\x00")),  # empty ALPN list
    _body(_ext(16, b"\x00\x01\x00")),  # empty protocol name
    _body(_ext(16, b"\x00\x05\x02h2")),  # ALPN list length beyond the data
    _body(None) + b"\x00",  # a stray byte where the extensions length would be
    _body(_sni(b"a.local")) + b"junk",  # data after the extensions
    b"\x02\x00" + _body(None)[2:],  # client version 2.0
])
def test_malformed_hellos_are_not_tls(body: bytes) -> None:
    assert isinstance(parse_client_hello(_with_body(body)), NotTls)


def test_alpn_names_are_read_as_latin1() -> None:
    names = b"\x02h2\x08http/1.1\x03\xffab"
    r = parse_client_hello(_with_body(_body(_ext(16, struct.pack(">H", len(names)) + names))))
    assert isinstance(r, ClientHello) and r.alpn == ("h2", "http/1.1", "\xffab")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), NeedMore | NotTls | ClientHello)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(HELLO)))
def test_mutated_client_hellos_never_raise(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(HELLO)
    for pos, value in flips:
        data[pos] = value
    r = parse_client_hello(bytes(data[:cut]))
    assert isinstance(r, NeedMore | NotTls | ClientHello)
    if isinstance(r, ClientHello):
        assert r.size <= cut


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=6))
def test_any_record_split_reads_the_same(sizes: list[int]) -> None:
    data = reframe(HELLO, sizes)
    r = parse_client_hello(data)
    assert isinstance(r, ClientHello)
    assert (r.server_name, r.alpn) == ("a.local", ("h2", "http/1.1"))
