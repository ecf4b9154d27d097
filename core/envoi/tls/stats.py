"""The ``ssl.*`` stats of a listener (``listener.<addr>.ssl.``) or a cluster
(``cluster.<name>.ssl.``), named as Envoy names them, and how a handshake's outcome maps onto
them.

Envoy's rules (``ContextImpl::logHandshake`` and ``SslSocket::drainErrorQueue``), which envoi
follows with what Python's ``ssl`` module exposes:

* a completed handshake counts ``handshake``, ``versions.<TLSv1.x>``, ``ciphers.<name>``,
  ``session_reused`` when resumed, and ``no_certificate`` when the peer sent no certificate;
* ``curves.<name>`` is counted only when the context allows exactly one group (``ecdh_curves``
  with one entry), the one case where the group is known: Python's ``ssl`` does not say which
  group a handshake used. ``sigalgs.<name>`` is never counted (not exposed either);
* a failed handshake counts ``fail_verify_no_cert`` (a required client certificate was
  missing), ``fail_verify_error`` (the peer's chain did not verify), or otherwise
  ``connection_error`` - verification failures are not connection errors, as in Envoy;
* checks envoi makes after the handshake count ``fail_verify_san`` and ``fail_verify_cert_hash``.
"""

from __future__ import annotations

import ssl
from typing import Any

from envoi.stats import Counter, Gauge, Scope, StatsGroup

#: OpenSSL's names for the groups ``ecdh_curves`` may name, keyed by Envoy's (BoringSSL's) names.
CURVE_NAMES = {"X25519": "X25519", "P-256": "prime256v1", "P-384": "secp384r1",
               "P-521": "secp521r1"}


class SslStats(StatsGroup):
    connection_error: Counter
    handshake: Counter
    session_reused: Counter
    no_certificate: Counter
    fail_verify_no_cert: Counter
    fail_verify_error: Counter
    fail_verify_san: Counter
    fail_verify_cert_hash: Counter
    ocsp_staple_failed: Counter
    ocsp_staple_omitted: Counter
    ocsp_staple_requests: Counter
    ocsp_staple_responses: Counter

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self._dynamic: dict[str, Counter] = {}

    def _count(self, family: str, value: str) -> None:
        key = f"{family}.{value}"
        counter = self._dynamic.get(key)
        if counter is None:
            counter = self._dynamic[key] = self.scope.counter(key)
        counter.value += 1

    def record_handshake(self, ssl_object: Any, curve: str | None) -> None:
        """Count a completed handshake (``ssl_object`` is an ``ssl.SSLObject``/``SSLSocket``)."""
        self.handshake.value += 1
        if ssl_object.session_reused:
            self.session_reused.value += 1
        version = ssl_object.version()
        if version:
            self._count("versions", version)
        cipher = ssl_object.cipher()
        if cipher:
            self._count("ciphers", cipher[0])
            if curve and (version == "TLSv1.3" or cipher[0].startswith("ECDHE")):
                self._count("curves", curve)
        if ssl_object.getpeercert(binary_form=True) is None:
            self.no_certificate.value += 1

    def record_failure(self, exc: BaseException) -> None:
        """Count a handshake that raised ``exc``."""
        stat = failure_stat(exc)
        if stat is not None:
            getattr(self, stat).value += 1


def failure_stat(exc: BaseException) -> str | None:
    """The counter a failed handshake increments, or None when it counts nothing (the peer
    closed or the wait timed out before a TLS error: Envoy counts nothing then either)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fail_verify_error"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "fail_verify_no_cert"
        if reason == "CERTIFICATE_VERIFY_FAILED":
            return "fail_verify_error"
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return None
        return "connection_error"
    return None


class CertificateGauges:
    """``ssl.certificate.<name>.expiration_unix_time_seconds``: Envoy names a certificate that
    came from the config (not SDS) ``unnamed_cert_e3b0c442`` / ``unnamed_ca_cert_e3b0c442``."""

    LEAF = "unnamed_cert_e3b0c442"
    CA = "unnamed_ca_cert_e3b0c442"

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def set_expiry(self, kind: str, unix_seconds: int) -> None:
        gauge: Gauge = self.scope.gauge(f"certificate.{kind}.expiration_unix_time_seconds")
        # Several certificates under one name: the one that expires first is what matters.
        if not gauge.used or unix_seconds < gauge.value:
            gauge.set(unix_seconds)


class SocketFactoryStats(StatsGroup):
    """``listener.<addr>.server_ssl_socket_factory.*`` / ``cluster.<n>.client_ssl_socket_factory.*``
    (SDS counters in Envoy; envoi has no SDS, so they stay 0, present for dashboards)."""

    ssl_context_update_by_sds: Counter
    upstream_context_secrets_not_ready: Counter
    downstream_context_secrets_not_ready: Counter
