"""What a TLS connection tells its filters: Envoy's ``Ssl::ConnectionInfo``.

``connection.ssl`` is an :class:`SslConnectionInfo` on a connection whose filter chain
terminates TLS (None in plaintext); ``connection.next_protocol`` is the negotiated ALPN
protocol and ``connection.requested_server_name`` the SNI. Everything is read from the
``ssl.SSLObject`` when asked for, so a connection whose filters never look pays nothing.
"""

from __future__ import annotations

import ssl
from typing import Any


class ServerSSLObject(ssl.SSLObject):
    """The SSL object of a server-side connection; remembers the SNI the client sent, which
    Python's ``ssl`` shows only to the ``sni_callback`` (see :func:`record_sni`)."""

    requested_server_name = ""


def record_sni(ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
    """An ``sni_callback`` that keeps the client's SNI on the SSL object."""
    if server_name:
        ssl_object.requested_server_name = server_name


class SslConnectionInfo:
    """The TLS facts of one connection, read lazily from its ``ssl.SSLObject``."""

    __slots__ = ("_peer_der", "_peer_sans", "ssl_object")

    def __init__(self, ssl_object: Any) -> None:
        self.ssl_object = ssl_object
        self._peer_der: bytes | bool | None = False  # False: not read yet
        self._peer_sans: list[tuple[str, str]] | None = None

    @property
    def tls_version(self) -> str:
        """``TLSv1.2``, ``TLSv1.3``..."""
        return str(self.ssl_object.version() or "")

    @property
    def ciphersuite(self) -> str:
        cipher = self.ssl_object.cipher()
        return str(cipher[0]) if cipher else ""

    @property
    def alpn(self) -> str:
        return str(self.ssl_object.selected_alpn_protocol() or "")

    @property
    def sni(self) -> str:
        return str(getattr(self.ssl_object, "requested_server_name", "") or
                   getattr(self.ssl_object, "server_hostname", "") or "")

    @property
    def session_reused(self) -> bool:
        return bool(self.ssl_object.session_reused)

    @property
    def peer_certificate_der(self) -> bytes | None:
        if self._peer_der is False:
            self._peer_der = self.ssl_object.getpeercert(binary_form=True)
        return self._peer_der  # type: ignore[return-value]

    @property
    def peer_certificate_presented(self) -> bool:
        return self.peer_certificate_der is not None

    @property
    def peer_certificate_validated(self) -> bool:
        """True when the peer's certificate was verified against the trusted CA."""
        return self.peer_certificate_presented and bool(self.ssl_object.getpeercert())

    @property
    def sha256_peer_certificate_digest(self) -> str:
        """Hex SHA-256 of the peer certificate (``x-forwarded-client-cert``'s ``Hash``)."""
        import hashlib

        der = self.peer_certificate_der
        return hashlib.sha256(der).hexdigest() if der else ""

    def _sans(self) -> list[tuple[str, str]]:
        if self._peer_sans is None:
            der = self.peer_certificate_der
            if der is None:
                self._peer_sans = []
            else:
                from envoi.tls.certs import peer_sans

                self._peer_sans = peer_sans(der)
        return self._peer_sans

    @property
    def uri_san_peer_certificate(self) -> list[str]:
        return [v for k, v in self._sans() if k == "URI"]

    @property
    def dns_san_peer_certificate(self) -> list[str]:
        return [v for k, v in self._sans() if k == "DNS"]

    @property
    def subject_peer_certificate(self) -> str:
        """The peer's subject in RFC 2253 form (``CN=client,O=Acme``), as Envoy prints it."""
        der = self.peer_certificate_der
        if der is None:
            return ""
        from cryptography import x509

        return str(x509.load_der_x509_certificate(der).subject.rfc4514_string())


def negotiated_protocol(transport: Any) -> str:
    """The ALPN protocol a connection negotiated (``h2``, ``http/1.1``), "" without TLS/ALPN.
    For upstream connections from ``Cluster.connect``."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ""
    return str(ssl_object.selected_alpn_protocol() or "")
