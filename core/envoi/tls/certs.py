"""What envoi knows about the certificates in its config: for ``/certs``, the
``ssl.certificate.*`` gauges, ``server.days_until_first_cert_expiring`` and choosing a
certificate by SNI. Parsed once at config time with ``cryptography``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from envoi.config import ConfigError, ConfigIssue


@dataclass(frozen=True)
class CertInfo:
    """One certificate as Envoy's ``/certs`` describes it (``CertificateDetails``)."""

    path: str
    serial_number: str
    #: ``(kind, value)`` with kind ``dns``, ``uri`` or ``ip_address`` (Envoy's JSON keys).
    subject_alt_names: tuple[tuple[str, str], ...]
    not_before: datetime
    not_after: datetime
    common_name: str = ""
    is_ca: bool = False
    key_type: str = ""  # RSA, EC, Ed25519...

    @property
    def dns_names(self) -> tuple[str, ...]:
        """Names this certificate serves: its DNS SANs, else its common name (as BoringSSL's
        and Envoy's SNI selection read it)."""
        names = tuple(v.lower() for k, v in self.subject_alt_names if k == "dns")
        return names or ((self.common_name.lower(),) if self.common_name else ())

    def days_until_expiration(self, now: datetime) -> int:
        return max(0, (self.not_after - now).days)


def load_certificates(pem: bytes, path: str, where: str) -> list[CertInfo]:
    """Every certificate in a PEM bundle; ConfigError (at ``where``) if there is none or one is
    malformed."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(where, f"cannot read certificates from {path}: {exc}")]
                          ) from None
    out = []
    for cert in certs:
        sans: list[tuple[str, str]] = []
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            ext = None
        if ext is not None:
            sans += [("dns", str(v)) for v in ext.get_values_for_type(x509.DNSName)]
            sans += [("uri", str(v)) for v in ext.get_values_for_type(
                x509.UniformResourceIdentifier)]
            sans += [("ip_address", str(v)) for v in ext.get_values_for_type(x509.IPAddress)]
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            is_ca = False
        key_type = type(cert.public_key()).__name__.replace("PublicKey", "").lstrip("_")
        out.append(CertInfo(
            path=path,
            serial_number=_serial_hex(cert.serial_number),
            subject_alt_names=tuple(sans),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            common_name=str(cns[0].value) if cns else "",
            is_ca=is_ca,
            key_type=key_type,
        ))
    return out


def _serial_hex(serial: int) -> str:
    """Lower-case hex in whole bytes, as Envoy prints a serial number (BN_bn2hex)."""
    text = format(serial, "x")
    return "0" + text if len(text) % 2 else text


def sha256_fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def spki_sha256(der: bytes) -> bytes:
    """SHA-256 of a DER certificate's DER SubjectPublicKeyInfo (verify_certificate_spki)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def peer_sans(der: bytes) -> list[tuple[str, str]]:
    """The subject alternative names of a DER certificate as ``(type, value)`` with Envoy's
    SAN type names (``DNS``, ``EMAIL``, ``URI``, ``IP_ADDRESS``)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [("DNS", str(v)) for v in ext.get_values_for_type(x509.DNSName)]
    out += [("EMAIL", str(v)) for v in ext.get_values_for_type(x509.RFC822Name)]
    out += [("URI", str(v)) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    out += [("IP_ADDRESS", str(v)) for v in ext.get_values_for_type(x509.IPAddress)]
    return out


def dns_name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching as Envoy's DNS SAN check: a leading ``*.`` stands for exactly one
    label."""
    pattern, name = pattern.lower(), name.lower()
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and bool(name.split(".", 1)[0])
    return False
