"""TLS contexts from Envoy's config: ``DownstreamTlsContext`` (a filter chain's
``transport_socket``) and ``UpstreamTlsContext`` (a cluster's), built once at config time into
stdlib ``ssl.SSLContext`` objects plus the checks ``ssl`` cannot make during the handshake.

What is implemented is listed in :data:`IMPLEMENTED`; every other field that is set is a config
error naming its path (an ignored TLS setting is a security hole). Where Python's ``ssl`` cannot
do what a field asks, the field is refused with the reason, never approximated:

* ``ecdh_curves`` takes one group (``SSLContext.set_ecdh_curve``); with none, OpenSSL's default
  list applies (Envoy's default is ``X25519:P-256``).
* ``cipher_suites`` applies to TLS 1.2 and below, as in Envoy; BoringSSL's equal-preference
  groups ``[A|B]`` become plain preference order ``A:B``. TLS 1.3 suites are OpenSSL's.
* subject-alt-name and certificate-hash checks run right after the handshake (``ssl`` has no
  verify callback): a peer that fails them is disconnected and counted (``fail_verify_san``,
  ``fail_verify_cert_hash``), but it saw a finished handshake first, where Envoy would have sent
  an alert during it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.tls.certs import (
    CertInfo,
    dns_name_matches,
    load_certificates,
    peer_sans,
    sha256_fingerprint,
    spki_sha256,
)
from envoi.tls.info import ServerSSLObject, record_sni
from envoi.tls.stats import CURVE_NAMES

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_TRANSPORT_SOCKET = "envoy.transport_sockets.raw_buffer"
DOWNSTREAM_TYPE = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TYPE = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_BUFFER_TYPE = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

_TLS = "envoy.extensions.transport_sockets.tls.v3."
#: Message -> the fields envoi acts on (the rest are refused when set).
IMPLEMENTED: dict[str, frozenset[str]] = {
    "envoy.config.core.v3.TransportSocket": frozenset({"name", "typed_config"}),
    _TLS + "DownstreamTlsContext": frozenset({
        # require_sni is not implemented by Envoy either ([#not-implemented-hide:]): refused.
        "common_tls_context", "require_client_certificate",
        "disable_stateless_session_resumption", "prefer_client_ciphers"}),
    _TLS + "UpstreamTlsContext": frozenset({
        "common_tls_context", "sni", "auto_host_sni", "allow_renegotiation",
        "max_session_keys"}),
    _TLS + "CommonTlsContext": frozenset({
        "tls_params", "tls_certificates", "validation_context", "alpn_protocols"}),
    _TLS + "TlsParameters": frozenset({
        "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites",
        "ecdh_curves"}),
    _TLS + "TlsCertificate": frozenset({"certificate_chain", "private_key", "password"}),
    _TLS + "CertificateValidationContext": frozenset({
        "trusted_ca", "match_typed_subject_alt_names", "verify_certificate_hash",
        "verify_certificate_spki", "crl", "only_verify_leaf_cert_crl"}),
    _TLS + "SubjectAltNameMatcher": frozenset({"san_type", "matcher"}),
    "envoy.type.matcher.v3.StringMatcher": frozenset({
        "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"}),
    "envoy.type.matcher.v3.RegexMatcher": frozenset({"regex", "google_re2"}),
    "envoy.type.matcher.v3.RegexMatcher.GoogleRE2": frozenset({"max_program_size"}),
    "envoy.config.core.v3.DataSource": frozenset({
        "filename", "inline_bytes", "inline_string", "environment_variable"}),
}
for _message, _fields in IMPLEMENTED.items():  # envoi.config.implemented's registry too
    implements(_message, *_fields)

_LEAVES = frozenset({"google.protobuf.BoolValue", "google.protobuf.UInt32Value",
                     "google.protobuf.Duration"})

#: Envoy's defaults (BoringSSL's equal-preference brackets flattened).
DEFAULT_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                   "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
                   "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")
_VERSIONS = {1: ssl.TLSVersion.TLSv1, 2: ssl.TLSVersion.TLSv1_1, 3: ssl.TLSVersion.TLSv1_2,
             4: ssl.TLSVersion.TLSv1_3}


def check_implemented(msg: Any, path: str) -> list[ConfigIssue]:
    """Every set field under ``msg`` that :data:`IMPLEMENTED` does not list."""
    issues: list[ConfigIssue] = []
    name = msg.DESCRIPTOR.full_name
    if name in _LEAVES:
        return issues
    allowed = IMPLEMENTED.get(name, frozenset())
    for fd, value in msg.ListFields():
        fpath = f"{path}.{fd.name}"
        if fd.name not in allowed:
            issues.append(ConfigIssue(fpath, "not implemented by envoi"))
            continue
        if fd.message_type is None or fd.name == "typed_config":
            continue
        if fd.is_repeated:
            for i, item in enumerate(value):
                issues += check_implemented(item, f"{fpath}[{i}]")
        else:
            issues += check_implemented(value, fpath)
    return issues


# -- data sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A DataSource's bytes and, when it named one, its file (ssl loads certificates from
    files; inline data goes through a private temporary file)."""

    data: bytes
    filename: str | None

    @property
    def display(self) -> str:
        return self.filename or "<inline>"


def read_source(ds: Any, path: str) -> Source:
    kind = ds.WhichOneof("specifier")
    if kind == "filename":
        try:
            with open(ds.filename, "rb") as fh:
                return Source(fh.read(), ds.filename)
        except OSError as exc:
            raise ConfigError([ConfigIssue(path + ".filename",
                                           f"cannot read {ds.filename!r}: "
                                           f"{exc.strerror or exc}")]) from None
    if kind == "inline_string":
        return Source(ds.inline_string.encode(), None)
    if kind == "inline_bytes":
        return Source(bytes(ds.inline_bytes), None)
    if kind == "environment_variable":
        value = os.environ.get(ds.environment_variable)
        if value is None:
            raise ConfigError([ConfigIssue(path + ".environment_variable",
                                           f"environment variable {ds.environment_variable!r} "
                                           "is not set")])
        return Source(value.encode(), None)
    raise ConfigError([ConfigIssue(path, "a filename, inline_string, inline_bytes or "
                                         "environment_variable is required")])


@contextlib.contextmanager
def _as_file(src: Source) -> Iterator[str]:
    if src.filename is not None:
        yield src.filename
        return
    fd, name = tempfile.mkstemp(prefix="envoi-tls-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.data)
        yield name
    finally:
        os.unlink(name)


# -- peer checks made after the handshake ------------------------------------------------------


def _string_matcher(m: Any, path: str) -> Callable[[str], bool]:
    kind = m.WhichOneof("match_pattern")
    fold = m.ignore_case
    if kind == "safe_regex":
        try:
            rx = re.compile(m.safe_regex.regex)
        except re.error as exc:
            raise ConfigError([ConfigIssue(path + ".safe_regex.regex", str(exc))]) from None
        return lambda s: rx.fullmatch(s) is not None
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise ConfigError([ConfigIssue(path, f"string matcher {kind} is not implemented")])
    want = str(getattr(m, kind))
    if fold:
        want = want.lower()

    def match(s: str) -> bool:
        s = s.lower() if fold else s
        if kind == "exact":
            return s == want
        if kind == "prefix":
            return s.startswith(want)
        if kind == "suffix":
            return s.endswith(want)
        return want in s

    return match


@dataclass(frozen=True)
class SanMatcher:
    san_type: str  # DNS, EMAIL, URI, IP_ADDRESS
    match: Callable[[str], bool]
    exact_dns: str | None = None  # DNS + exact: the SAN may be a wildcard (RFC 6125)

    def matches(self, sans: list[tuple[str, str]]) -> bool:
        for kind, value in sans:
            if kind != self.san_type:
                continue
            if self.exact_dns is not None:
                if dns_name_matches(value, self.exact_dns):
                    return True
            elif self.match(value):
                return True
        return False


@dataclass(frozen=True)
class PeerChecks:
    """``match_typed_subject_alt_names``, ``verify_certificate_hash``/``_spki``."""

    san_matchers: tuple[SanMatcher, ...] = ()
    hashes: frozenset[bytes] = frozenset()
    spkis: frozenset[bytes] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.san_matchers or self.hashes or self.spkis)

    def failure(self, peer_der: bytes | None) -> str | None:
        """The stat a peer certificate fails, or None when it passes (or there is none: a
        missing certificate is decided by the handshake)."""
        if peer_der is None:
            return None
        if (self.hashes or self.spkis) and not (
                sha256_fingerprint(peer_der) in self.hashes
                or (self.spkis and spki_sha256(peer_der) in self.spkis)):
            return "fail_verify_cert_hash"
        if self.san_matchers:
            sans = peer_sans(peer_der)
            if not any(m.matches(sans) for m in self.san_matchers):
                return "fail_verify_san"
        return None


_SAN_TYPES = {1: "DNS", 2: "EMAIL", 3: "URI", 4: "IP_ADDRESS"}


def _peer_checks(vc: Any, path: str) -> PeerChecks:
    issues: list[ConfigIssue] = []
    matchers = []
    for i, m in enumerate(vc.match_typed_subject_alt_names):
        mpath = f"{path}.match_typed_subject_alt_names[{i}]"
        san_type = _SAN_TYPES.get(m.san_type)
        if san_type is None:
            issues.append(ConfigIssue(mpath + ".san_type", "only DNS, EMAIL, URI and IP_ADDRESS "
                                      "subject alt names are implemented"))
            continue
        try:
            fn = _string_matcher(m.matcher, mpath + ".matcher")
        except ConfigError as exc:
            issues += exc.errors
            continue
        exact = (m.matcher.exact.lower() if san_type == "DNS" and
                 m.matcher.WhichOneof("match_pattern") == "exact" else None)
        matchers.append(SanMatcher(san_type, fn, exact))
    hashes = set()
    for i, h in enumerate(vc.verify_certificate_hash):
        try:
            raw = bytes.fromhex(h.replace(":", ""))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            issues.append(ConfigIssue(f"{path}.verify_certificate_hash[{i}]",
                                      f"invalid hex-encoded SHA-256 {h}"))
        hashes.add(raw)
    spkis = set()
    for i, s in enumerate(vc.verify_certificate_spki):
        try:
            raw = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            issues.append(ConfigIssue(f"{path}.verify_certificate_spki[{i}]",
                                      f"invalid base64-encoded SHA-256 {s}"))
        spkis.add(raw)
    if issues:
        raise ConfigError(issues)
    return PeerChecks(tuple(matchers), frozenset(hashes), frozenset(spkis))


# -- the contexts -------------------------------------------------------------------------------


@dataclass
class TlsContextBase:
    """What a server and a client context share: the ``ssl.SSLContext``, the checks made after
    the handshake and the certificates (for ``/certs``)."""

    ssl_context: ssl.SSLContext
    peer_checks: PeerChecks
    #: The group every ECDHE handshake uses when the config allows only one, else None.
    curve: str | None
    cert_chain: list[CertInfo] = field(default_factory=list)
    ca_certs: list[CertInfo] = field(default_factory=list)

    def check_peer(self, ssl_object: Any) -> str | None:
        if not self.peer_checks:
            return None
        return self.peer_checks.failure(ssl_object.getpeercert(binary_form=True))


@dataclass
class ServerTlsContext(TlsContextBase):
    require_client_certificate: bool = False
    alpn: tuple[str, ...] = ()


@dataclass
class ClientTlsContext(TlsContextBase):
    sni: str = ""
    auto_host_sni: bool = False
    alpn: tuple[str, ...] = ()
    config: Any = None  # the UpstreamTlsContext, to build ALPN-fallback variants
    path: str = ""
    _fallbacks: dict[tuple[str, ...], ssl.SSLContext] = field(default_factory=dict)

    def context_for(self, alpn_fallback: tuple[str, ...]) -> ssl.SSLContext:
        """The SSLContext for a connection whose user speaks ``alpn_fallback`` (the HTTP/1
        pool: ``http/1.1``): Envoy offers it when the config sets no ``alpn_protocols``.
        ssl sets ALPN per context, so each fallback gets its own, built once."""
        if self.alpn or not alpn_fallback:
            return self.ssl_context
        ctx = self._fallbacks.get(alpn_fallback)
        if ctx is None:
            ctx = build_client_context(self.config, self.path).ssl_context
            ctx.set_alpn_protocols(list(alpn_fallback))
            self._fallbacks[alpn_fallback] = ctx
        return ctx

    def server_hostname(self, host_name: str) -> str | None:
        """The SNI to send to a host (``host_name`` is the endpoint's ``hostname``)."""
        if self.auto_host_sni and host_name:
            return host_name
        return self.sni or None


def _tls_params(ctx: ssl.SSLContext, params: Any, path: str, *, server: bool) -> str | None:
    """Apply ``tls_params``; return the single curve when one is set."""
    issues: list[ConfigIssue] = []
    ctx.minimum_version = _VERSIONS.get(params.tls_minimum_protocol_version,
                                        ssl.TLSVersion.TLSv1_2)
    default_max = ssl.TLSVersion.TLSv1_3 if server else ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = _VERSIONS.get(params.tls_maximum_protocol_version, default_max)
    if ctx.minimum_version > ctx.maximum_version:
        issues.append(ConfigIssue(path + ".tls_minimum_protocol_version",
                                  "the minimum TLS version is above the maximum"))
    ciphers = ":".join(params.cipher_suites) if params.cipher_suites else DEFAULT_CIPHERS
    ciphers = ciphers.replace("[", "").replace("]", "").replace("|", ":")
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        issues.append(ConfigIssue(path + ".cipher_suites",
                                  f"no cipher suite of '{ciphers}' is supported"))
    curve = None
    curves = list(params.ecdh_curves)
    if len(curves) > 1:
        issues.append(ConfigIssue(path + ".ecdh_curves",
                                  "Python's ssl module sets one group only; name one, or none "
                                  "for OpenSSL's default list"))
    elif curves:
        name = CURVE_NAMES.get(curves[0])
        if name is None:
            issues.append(ConfigIssue(path + ".ecdh_curves[0]", f"unknown curve {curves[0]}; "
                                      f"one of {', '.join(CURVE_NAMES)}"))
        else:
            try:
                ctx.set_ecdh_curve(name)
                curve = curves[0]
            except (ValueError, ssl.SSLError) as exc:
                issues.append(ConfigIssue(path + ".ecdh_curves[0]", str(exc)))
    if issues:
        raise ConfigError(issues)
    return curve


def _load_certificates(ctx: ssl.SSLContext, certs: Any, path: str) -> list[CertInfo]:
    issues: list[ConfigIssue] = []
    infos: list[CertInfo] = []
    for i, tc in enumerate(certs):
        cpath = f"{path}[{i}]"
        try:
            chain = read_source(tc.certificate_chain, cpath + ".certificate_chain")
            key = read_source(tc.private_key, cpath + ".private_key")
            password = (read_source(tc.password, cpath + ".password").data
                        if tc.HasField("password") else None)
            found = load_certificates(chain.data, chain.display, cpath + ".certificate_chain")
            if not found:
                raise ConfigError([ConfigIssue(cpath + ".certificate_chain",
                                               f"no certificate in {chain.display}")])
            infos.append(found[0])
            with _as_file(chain) as cfile, _as_file(key) as kfile:
                ctx.load_cert_chain(cfile, kfile, password)
        except ConfigError as exc:
            issues += exc.errors
        except (ssl.SSLError, OSError, ValueError) as exc:
            issues.append(ConfigIssue(cpath, f"cannot load the certificate and private key: "
                                             f"{exc}"))
    if issues:
        raise ConfigError(issues)
    return infos


def _validation(ctx: ssl.SSLContext, vc: Any, path: str) -> tuple[list[CertInfo], PeerChecks]:
    checks = _peer_checks(vc, path)
    if not vc.HasField("trusted_ca"):
        if checks.san_matchers:
            raise ConfigError([ConfigIssue(path + ".match_typed_subject_alt_names",
                                           "SAN-based verification of peer certificates without "
                                           "trusted CA is insecure and not allowed")])
        if vc.HasField("crl"):
            raise ConfigError([ConfigIssue(path + ".crl", "a CRL needs a trusted_ca")])
        return [], checks
    src = read_source(vc.trusted_ca, path + ".trusted_ca")
    cas = load_certificates(src.data, src.display, path + ".trusted_ca")
    if not cas:
        raise ConfigError([ConfigIssue(path + ".trusted_ca",
                                       f"no certificate in {src.display}")])
    try:
        ctx.load_verify_locations(cadata=src.data.decode("ascii", "replace"))
        if vc.HasField("crl"):
            crl = read_source(vc.crl, path + ".crl")
            with _as_file(crl) as name:
                ctx.load_verify_locations(cafile=name)
            ctx.verify_flags |= (ssl.VERIFY_CRL_CHECK_LEAF if vc.only_verify_leaf_cert_crl
                                 else ssl.VERIFY_CRL_CHECK_CHAIN)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError([ConfigIssue(path, f"cannot load the validation context: {exc}")]
                          ) from None
    return cas, checks


def _new_context(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def build_server_context(cfg: Any, path: str) -> ServerTlsContext:
    """A ``DownstreamTlsContext`` -> ServerTlsContext; ConfigError with every problem."""
    issues = check_implemented(cfg, path)
    common = cfg.common_tls_context
    cpath = path + ".common_tls_context"
    if not common.tls_certificates:
        issues.append(ConfigIssue(cpath + ".tls_certificates",
                                  "No TLS certificates found for server context"))
    if issues:
        raise ConfigError(issues)
    ctx = _new_context(ssl.PROTOCOL_TLS_SERVER)
    curve = _tls_params(ctx, common.tls_params, cpath + ".tls_params", server=True)
    chain = _load_certificates(ctx, common.tls_certificates, cpath + ".tls_certificates")
    if len(common.tls_certificates) > 1:
        names = {c.dns_names for c in chain}
        key_types = [c.key_type for c in chain]
        if len(names) > 1 or len(set(key_types)) < len(key_types):
            # One SSLContext holds one certificate per key type; choosing among several by
            # SNI would need one context each. Refused rather than half done.
            raise ConfigError([ConfigIssue(cpath + ".tls_certificates",
                                           "several certificates are implemented only for the "
                                           "same names with different key types (RSA + ECDSA); "
                                           "choosing one by SNI is not")])
    require = cfg.require_client_certificate.value if cfg.HasField(
        "require_client_certificate") else False
    cas: list[CertInfo] = []
    checks = PeerChecks()
    if common.HasField("validation_context"):
        vpath = cpath + ".validation_context"
        cas, checks = _validation(ctx, common.validation_context, vpath)
        if cas:
            ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
        elif checks:
            raise ConfigError([ConfigIssue(vpath, "certificate hash checks on client "
                                           "certificates need a trusted_ca (Python's ssl cannot "
                                           "ask for a client certificate without verifying it)")])
    if require and not cas:
        raise ConfigError([ConfigIssue(path + ".require_client_certificate",
                                       "require_client_certificate needs "
                                       "common_tls_context.validation_context.trusted_ca")])
    alpn = tuple(common.alpn_protocols)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cfg.disable_stateless_session_resumption:
        # No tickets: TLS 1.2 falls back to session IDs (Envoy's stateful resumption, on by
        # default); TLS 1.3 issues none, so it does not resume - as with BoringSSL, whose TLS 1.3
        # resumption is ticket-only (OpenSSL would otherwise send stateful tickets).
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    if cfg.prefer_client_ciphers:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # The SNI is shown only to this callback: keep it for connection.requested_server_name.
    ctx.sslobject_class = ServerSSLObject
    ctx.sni_callback = record_sni
    return ServerTlsContext(ctx, checks, curve, chain, cas, require, alpn)


def build_client_context(cfg: Any, path: str) -> ClientTlsContext:
    """An ``UpstreamTlsContext`` -> ClientTlsContext; ConfigError with every problem."""
    issues = check_implemented(cfg, path)
    if cfg.allow_renegotiation:
        issues.append(ConfigIssue(path + ".allow_renegotiation",
                                  "renegotiation is not supported (envoi refuses it, as "
                                  "Envoy does by default)"))
    if cfg.HasField("max_session_keys") and cfg.max_session_keys.value != 0:
        issues.append(ConfigIssue(path + ".max_session_keys",
                                  "upstream TLS session resumption is not implemented; "
                                  "0 (or unset) is accepted"))
    if issues:
        raise ConfigError(issues)
    common = cfg.common_tls_context
    cpath = path + ".common_tls_context"
    ctx = _new_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # Envoy verifies names only through SAN matchers
    ctx.verify_mode = ssl.CERT_NONE
    curve = _tls_params(ctx, common.tls_params, cpath + ".tls_params", server=False)
    chain = _load_certificates(ctx, common.tls_certificates, cpath + ".tls_certificates")
    if len(common.tls_certificates) > 1:
        raise ConfigError([ConfigIssue(cpath + ".tls_certificates",
                                       "Multiple TLS certificates are not supported for "
                                       "client contexts")])
    cas: list[CertInfo] = []
    checks = PeerChecks()
    if common.HasField("validation_context"):
        cas, checks = _validation(ctx, common.validation_context,
                                  cpath + ".validation_context")
        if cas:
            ctx.verify_mode = ssl.CERT_REQUIRED
    alpn = tuple(common.alpn_protocols)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ClientTlsContext(ctx, checks, curve, chain, cas, cfg.sni, cfg.auto_host_sni, alpn,
                            cfg, path)


def unpack_transport_socket(ts: Any, path: str, want: str) -> Any | None:
    """A ``TransportSocket`` -> its TLS context message (``want`` is the Downstream or Upstream
    type), or None for ``raw_buffer`` (plaintext); ConfigError for anything else."""
    from envoi.config import unpack_typed_config

    issues = check_implemented(ts, path)
    if issues:
        raise ConfigError(issues)
    if not ts.HasField("typed_config"):
        if ts.name == RAW_BUFFER_TRANSPORT_SOCKET:
            return None
        raise ConfigError([ConfigIssue(path, f"transport socket {ts.name or '(unnamed)'} "
                                       f"needs a typed_config ({want})" if ts.name ==
                                       TLS_TRANSPORT_SOCKET else
                                       f"transport socket {ts.name!r} is not implemented; "
                                       f"envoi has {TLS_TRANSPORT_SOCKET} and "
                                       f"{RAW_BUFFER_TRANSPORT_SOCKET}")])
    cfg = unpack_typed_config(ts.typed_config, path + ".typed_config")
    name = getattr(getattr(cfg, "DESCRIPTOR", None), "full_name", "")
    if name == RAW_BUFFER_TYPE:
        return None
    if name != want:
        raise ConfigError([ConfigIssue(path + ".typed_config",
                                       f"transport socket type {name or 'unknown'} is not "
                                       f"implemented here; expected {want}")])
    return cfg
