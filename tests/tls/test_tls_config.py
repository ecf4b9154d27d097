"""TLS config: what is implemented builds, everything else is a config error naming its path
(an ignored TLS field is a security hole, so none is ignored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from envoi.config import ConfigError
from envoi.server import Options, Server
from tls_certs import Pki
from tls_configs import TLS_INSPECTOR, admin, cluster, downstream_tls, tcp_proxy, upstream_tls

LISTENER = "static_resources.listeners[0]"
TS = f"{LISTENER}.filter_chains[0].transport_socket.typed_config"
CTS = "static_resources.clusters[0].transport_socket.typed_config"


def listener_yaml(pki: Pki, *, extra: str = "", extra_common: str = "",
                  listener_extra: str = "", chain_extra: str = "") -> str:
    tls = downstream_tls(pki.servers["a.local"], extra=extra, extra_common=extra_common)
    return f"""{admin(19901)}\
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 19902}}}}
{listener_extra}\
    filter_chains:
    -
{chain_extra}{tls}\
{tcp_proxy("t", "c")}\
  clusters:
{cluster("c", 19903)}"""


def cluster_yaml(transport_socket: str) -> str:
    return f"""{admin(19901)}\
  clusters:
{cluster("c", 19903, transport_socket)}"""


def load(tmp_path: Path, text: str) -> Server:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    server = Server(Options(config_path=str(cfg)))
    server.load()
    return server


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [f"{e.path}: {e.message}" for e in info.value.errors]


def test_a_full_downstream_context_builds(tmp_path: Path, pki: Pki) -> None:
    common = f"""\
      alpn_protocols: ["h2", "http/1.1"]
      tls_params:
        tls_minimum_protocol_version: TLSv1_2
        tls_maximum_protocol_version: TLSv1_3
        cipher_suites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"]
        ecdh_curves: [P-256]
      validation_context:
        trusted_ca: {{filename: {pki.ca.pem}}}
        match_typed_subject_alt_names:
        - {{san_type: URI, matcher: {{prefix: "spiffe://envoi.test/"}}}}
        - {{san_type: DNS, matcher: {{safe_regex: {{regex: ".*[.]local"}}}}}}
        verify_certificate_hash: ["{"ab" * 32}"]
"""
    extra = """\
    require_client_certificate: true
    disable_stateless_session_resumption: true
    prefer_client_ciphers: true
"""
    server = load(tmp_path, listener_yaml(
        pki, extra=extra, extra_common=common,
        listener_extra=TLS_INSPECTOR.replace("    - name", "    listener_filters:\n    - name")
        + "    listener_filters_timeout: 2s\n",
        chain_extra="      transport_socket_connect_timeout: 3s\n"))
    (listener,) = server.listeners
    (chain,) = listener.chains
    assert chain.tls is not None and chain.handshake_timeout == 3.0
    assert chain.tls.alpn == ("h2", "http/1.1") and chain.tls.curve == "P-256"
    assert chain.tls.require_client_certificate
    assert len(chain.tls.peer_checks.san_matchers) == 2
    assert listener.listener_filters_timeout == 2.0 and len(listener.listener_filters) == 1
    assert [c.serial_number for c in chain.tls.ca_certs]


@pytest.mark.parametrize(("extra", "extra_common", "expected"), [
    ("    session_timeout: 10s\n", "", f"{TS}.session_timeout: not implemented by envoi"),
    ("    require_sni: true\n", "", f"{TS}.require_sni: not implemented by envoi"),
    ("    ocsp_staple_policy: MUST_STAPLE\n", "",
     f"{TS}.ocsp_staple_policy: not implemented by envoi"),
    ("", "      tls_params: {ecdh_curves: [X25519, P-256]}\n",
     f"{TS}.common_tls_context.tls_params.ecdh_curves: Python's ssl module sets one group"),
    ("", "      tls_params: {ecdh_curves: [P-999]}\n",
     f"{TS}.common_tls_context.tls_params.ecdh_curves[0]: unknown curve P-999"),
    ("", "      tls_params: {signature_algorithms: [ed25519]}\n",
     f"{TS}.common_tls_context.tls_params.signature_algorithms: not implemented"),
    ("", "      tls_params: {cipher_suites: [NOT-A-CIPHER]}\n",
     f"{TS}.common_tls_context.tls_params.cipher_suites: no cipher suite"),
    ("", "      tls_params: {tls_minimum_protocol_version: TLSv1_3, "
         "tls_maximum_protocol_version: TLSv1_2}\n",
     f"{TS}.common_tls_context.tls_params.tls_minimum_protocol_version: the minimum"),
    ("    require_client_certificate: true\n", "",
     f"{TS}.require_client_certificate: require_client_certificate needs"),
    ("", "      key_log: {path: /tmp/keys}\n", f"{TS}.common_tls_context.key_log: not implemented"),
    ("", "      validation_context: {allow_expired_certificate: true}\n",
     f"{TS}.common_tls_context.validation_context.allow_expired_certificate: not implemented"),
    ("", "      validation_context: {match_typed_subject_alt_names: "
         "[{san_type: DNS, matcher: {exact: a}}]}\n",
     f"{TS}.common_tls_context.validation_context.match_typed_subject_alt_names: SAN-based"),
    ("", "      validation_context: {verify_certificate_hash: [" + "z" * 64 + "]}\n",
     f"{TS}.common_tls_context.validation_context.verify_certificate_hash[0]: invalid hex"),
])
def test_downstream_refusals(tmp_path: Path, pki: Pki, extra: str, extra_common: str,
                             expected: str) -> None:
    found = errors(tmp_path, listener_yaml(pki, extra=extra, extra_common=extra_common))
    assert any(e.startswith(expected) for e in found), found


def test_missing_and_mismatched_certificate_files(tmp_path: Path, pki: Pki) -> None:
    text = listener_yaml(pki).replace(str(pki.servers["a.local"].cert), "/nonexistent.pem")
    found = errors(tmp_path, text)
    assert any(".tls_certificates[0].certificate_chain.filename: cannot read '/nonexistent.pem'"
               in e for e in found), found
    text = listener_yaml(pki).replace(str(pki.servers["a.local"].key),
                                      str(pki.servers["b.local"].key))
    found = errors(tmp_path, text)
    assert any(".tls_certificates[0]: cannot load the certificate and private key" in e
               for e in found), found


def test_other_transport_sockets(tmp_path: Path, pki: Pki) -> None:
    text = listener_yaml(pki).replace(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
    found = errors(tmp_path, text)
    assert any("expected envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" in e
               for e in found), found
    raw = """\
    transport_socket:
      name: envoy.transport_sockets.raw_buffer
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer
"""
    server = load(tmp_path, cluster_yaml(raw))
    assert server.cluster_manager.get("c").tls is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "expected"), [
    ("allow_renegotiation: true", f"{CTS}.allow_renegotiation: renegotiation"),
    ("max_session_keys: 4", f"{CTS}.max_session_keys: upstream TLS session"),
    ("auto_sni_san_validation: true", f"{CTS}.auto_sni_san_validation: not implemented"),
    ("enforce_rsa_key_usage: true", f"{CTS}.enforce_rsa_key_usage: not implemented"),
])
def test_upstream_refusals(tmp_path: Path, extra: str, expected: str) -> None:
    found = errors(tmp_path, cluster_yaml(upstream_tls(sni="x", extra=extra)))
    assert any(e.startswith(expected) for e in found), found


def test_upstream_context_builds(tmp_path: Path, pki: Pki) -> None:
    server = load(tmp_path, cluster_yaml(upstream_tls(
        sni="upstream.local", ca=str(pki.ca.pem), cert=pki.client, alpn='"h2", "http/1.1"')))
    tls = server.cluster_manager.get("c").tls  # type: ignore[union-attr]
    assert tls.sni == "upstream.local" and tls.alpn == ("h2", "http/1.1")
    assert tls.server_hostname("") == "upstream.local"
    assert server.stats.get("cluster.c.ssl.handshake") is not None
    assert server.stats.get(
        "cluster.c.ssl.certificate.unnamed_cert_e3b0c442.expiration_unix_time_seconds")


def test_listener_filter_errors(tmp_path: Path, pki: Pki) -> None:
    unknown = "    listener_filters:\n    - name: envoy.filters.listener.original_dst\n"
    found = errors(tmp_path, listener_yaml(pki, listener_extra=unknown))
    assert any(e.startswith(f"{LISTENER}.listener_filters[0]: no envoy.filters.listener "
                            "extension is registered") for e in found), found
    too_big = TLS_INSPECTOR.replace("    - name", "    listener_filters:\n    - name") + \
        "        max_client_hello_size: 100000\n"
    found = errors(tmp_path, listener_yaml(pki, listener_extra=too_big))
    assert any("typed_config.max_client_hello_size: value must be inside range (255, 16384]"
               in e for e in found), found


def test_validate_mode_prints_the_path(tmp_path: Path, pki: Pki) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(listener_yaml(pki, extra="    session_timeout: 10s\n"))
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{TS}.session_timeout: not implemented by envoi" in out.stderr + out.stdout
