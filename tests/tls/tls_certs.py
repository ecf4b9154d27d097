"""A throw-away PKI for the TLS tests, made at test time with ``cryptography`` (no key is ever
committed): a CA, server certificates for named hosts, a client certificate, and the bad ones
(signed by another CA, expired)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> CertFiles:
    cpath, kpath = directory / f"{name}.pem", directory / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return CertFiles(cpath, kpath)


class Authority:
    """A CA that issues leaf certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "envoi-test-ca") -> None:
        self.directory = directory
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(days=1))
            .not_valid_after(_NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.files = _write(directory, name, self.cert, self.key)

    @property
    def pem(self) -> Path:
        return self.files.cert

    def issue(self, name: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), client: bool = False, days: int = 10,
              expired: bool = False) -> CertFiles:
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        start = _NOW - datetime.timedelta(days=1)
        end = _NOW + datetime.timedelta(days=days)
        if expired:
            start, end = _NOW - datetime.timedelta(days=10), _NOW - datetime.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(self.directory, name, cert, key)


@dataclass
class Pki:
    """Everything the TLS tests use."""

    directory: Path
    ca: Authority
    other_ca: Authority
    #: a.local, b.local, c.local, a.local+b.local (one certificate for both), upstream.local
    servers: dict[str, CertFiles]
    client: CertFiles  # client.local, with a URI SAN
    untrusted_client: CertFiles  # signed by other_ca
    untrusted_server: CertFiles  # upstream.local, signed by other_ca
    expired_server: CertFiles  # upstream.local, expired


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory)
    other = Authority(directory, "other-ca")
    servers = {n: ca.issue(n, dns=(n,)) for n in ("a.local", "b.local", "c.local")}
    servers["a.local+b.local"] = ca.issue("ab.local", dns=("a.local", "b.local"))
    servers["upstream.local"] = ca.issue("upstream.local", dns=("upstream.local",),
                                         ips=("127.0.0.1",))
    return Pki(
        directory=directory,
        ca=ca,
        other_ca=other,
        servers=servers,
        client=ca.issue("client.local", dns=("client.local",),
                        uris=("spiffe://envoi.test/client",), client=True),
        untrusted_client=other.issue("rogue-client", dns=("client.local",), client=True),
        untrusted_server=other.issue("untrusted-upstream", dns=("upstream.local",)),
        expired_server=ca.issue("expired-upstream", dns=("upstream.local",), expired=True),
    )
