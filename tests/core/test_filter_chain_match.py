"""Filter-chain selection by Envoy's order of precedence."""

from __future__ import annotations

import ipaddress

from envoi.network.listener import ChainMatch, ConnectionMeta, FilterChain, select_filter_chain


def ch(name: str, **kw: object) -> FilterChain:
    return FilterChain(name, ChainMatch(**kw), [])  # type: ignore[arg-type]


def meta(dst_port: int = 80, src: str = "127.0.0.1", src_port: int = 5000,
         dst: str = "127.0.0.1") -> ConnectionMeta:
    return ConnectionMeta(ipaddress.ip_address(dst), dst_port, ipaddress.ip_address(src), src_port)


def net(s: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(s)  # type: ignore[return-value]


def test_destination_port_beats_wildcard() -> None:
    chains = [ch("any"), ch("p80", destination_port=80)]
    assert select_filter_chain(chains, None, meta(80)).name == "p80"  # type: ignore[union-attr]
    assert select_filter_chain(chains, None, meta(81)).name == "any"  # type: ignore[union-attr]


def test_longest_source_prefix_wins() -> None:
    chains = [ch("wide", source_prefix_ranges=[net("127.0.0.0/8")]),
              ch("narrow", source_prefix_ranges=[net("127.0.0.1/32")])]
    assert select_filter_chain(chains, None, meta(src="127.0.0.1")).name == "narrow"  # type: ignore[union-attr]
    assert select_filter_chain(chains, None, meta(src="127.0.0.2")).name == "wide"  # type: ignore[union-attr]


def test_no_match_uses_default_or_none() -> None:
    chains = [ch("p443", destination_port=443)]
    default = ch("default")
    assert select_filter_chain(chains, None, meta(80)) is None
    assert select_filter_chain(chains, default, meta(80)) is default


def test_destination_port_is_decided_before_source() -> None:
    # A port match wins even if a port-less chain has a more specific source match.
    chains = [ch("port", destination_port=80),
              ch("src", source_prefix_ranges=[net("127.0.0.1/32")])]
    assert select_filter_chain(chains, None, meta(80)).name == "port"  # type: ignore[union-attr]


def test_source_type_and_ports() -> None:
    chains = [ch("local", source_type="SAME_IP_OR_LOOPBACK"), ch("ext", source_type="EXTERNAL")]
    assert select_filter_chain(chains, None, meta(src="127.0.0.5")).name == "local"  # type: ignore[union-attr]
    assert select_filter_chain(chains, None, meta(src="10.1.1.1")).name == "ext"  # type: ignore[union-attr]
    chains = [ch("sp", source_ports=[5000]), ch("other")]
    assert select_filter_chain(chains, None, meta(src_port=5000)).name == "sp"  # type: ignore[union-attr]
    assert select_filter_chain(chains, None, meta(src_port=5001)).name == "other"  # type: ignore[union-attr]


def test_server_names_never_match_plaintext() -> None:
    chains = [ch("sni", server_names=["a.local"]), ch("raw", transport_protocol="raw_buffer")]
    assert select_filter_chain(chains, None, meta()).name == "raw"  # type: ignore[union-attr]
