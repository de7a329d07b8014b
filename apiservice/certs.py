"""TLS for the aggregated API: serving certificates (given or self-signed), client CAs, and
rotation without a restart.

aiohttp listens with one *base* SSLContext whose `sni_callback` swaps in the current
context on every handshake, so a new serving pair or new client CAs (changed files, or
a changed `extension-apiserver-authentication` ConfigMap) apply to the next connection.
Client certificates are optional at the TLS layer (CERT_OPTIONAL); OpenSSL verifies the
chain against the union of both CA bundles, and `CertificateAuthorities.classify` tells
which bundle issued it (Python 3.11 has no verified-chain API, so the leaf's issuer is
checked with `cryptography`'s `verify_directly_issued_by`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_FILE = "apiserver.crt"
KEY_FILE = "apiserver.key"


# -- self-signed generation -----------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _covers(cert: x509.Certificate, hosts: list[str], now: dt.datetime) -> bool:
    if cert.not_valid_after_utc - now < dt.timedelta(days=30):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(hosts) <= have


def generate_ca(now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed CA for serving certificates: (certificate PEM, private key PEM)."""
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"keptn-metrics-ca@{int(now.timestamp())}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), key_pem


def _issue_serving(
    ca_pem: bytes, ca_key_pem: bytes, hosts: list[str], now: dt.datetime
) -> tuple[bytes, bytes]:
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the serving CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + dt.timedelta(days=365), ca.not_valid_after_utc))
        .add_extension(_san(hosts or ["localhost"]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem), key_pem


def ensure_self_signed(
    cert_dir: str | os.PathLike[str], hosts: list[str], ca: tuple[bytes, bytes] | None = None
) -> tuple[Path, Path, bytes]:
    """A CA and a serving pair it signs in `cert_dir`, reused while valid; returns
    (cert path, key path, CA PEM). The CA PEM is what an APIService's caBundle needs.

    `ca` (certificate PEM, key PEM) is a CA shared by every replica (see shared_ca); without
    it a CA of our own is generated in `cert_dir`.
    """
    d = Path(cert_dir)
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_path, ca_key_path, cert_path, key_path = d / CA_FILE, d / CA_KEY_FILE, d / CERT_FILE, d / KEY_FILE
    if ca is not None:
        ca_path.write_bytes(ca[0])
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            current_ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            cert.verify_directly_issued_by(current_ca)
            if _covers(cert, hosts, now):
                return cert_path, key_path, ca_path.read_bytes()
        except (ValueError, TypeError, InvalidSignature):
            pass
    ca_pem, ca_key_pem = ca if ca is not None else generate_ca(now)
    cert_pem, key_pem = _issue_serving(ca_pem, ca_key_pem, hosts, now)
    if ca is None:  # a shared CA's key stays in its Secret, never on this pod's disk
        ca_key_path.write_bytes(ca_key_pem)
        os.chmod(ca_key_path, 0o600)
    key_path.write_bytes(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert_pem)
    ca_path.write_bytes(ca_pem)
    log.info("generated a serving certificate in %s for %s", d, ", ".join(hosts))
    return cert_path, key_path, ca_pem


# -- client certificate identities ---------------------------------------------------------
@dataclass(frozen=True)
class PeerCert:
    """Who presented a client certificate, and which CA bundle vouches for it."""

    issuer: str  # "requestheader", "client" or "" (none of ours)
    common_name: str
    organizations: tuple[str, ...]


def load_pem_bundle(data: bytes | str | None) -> list[x509.Certificate]:
    if not data:
        return []
    raw = data.encode() if isinstance(data, str) else data
    return list(x509.load_pem_x509_certificates(raw)) if b"BEGIN CERTIFICATE" in raw else []


class CertificateAuthorities:
    """The two client CA bundles (front-proxy and client-ca) and a small classification cache."""

    def __init__(self) -> None:
        self.requestheader: list[x509.Certificate] = []
        self.client: list[x509.Certificate] = []
        self.requestheader_pem = b""
        self.client_pem = b""
        self.generation = 0
        self._cache: dict[bytes, PeerCert] = {}

    def set(self, requestheader_pem: bytes, client_pem: bytes) -> bool:
        """Replace the bundles; True if anything changed."""
        if requestheader_pem == self.requestheader_pem and client_pem == self.client_pem:
            return False
        self.requestheader = load_pem_bundle(requestheader_pem)
        self.client = load_pem_bundle(client_pem)
        self.requestheader_pem, self.client_pem = requestheader_pem, client_pem
        self.generation += 1
        self._cache.clear()
        return True

    @property
    def verify_pem(self) -> bytes:
        parts = [p.strip() for p in (self.requestheader_pem, self.client_pem) if p and p.strip()]
        return b"\n".join(parts) + b"\n" if parts else b""

    def classify(self, der: bytes) -> PeerCert:
        hit = self._cache.get(der)
        if hit is not None:
            return hit
        cert = x509.load_der_x509_certificate(der)
        cn = ",".join(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        issuer = ""
        for kind, bundle in (("requestheader", self.requestheader), ("client", self.client)):
            if any(_issued_by(cert, ca) for ca in bundle):
                issuer = kind
                break
        result = PeerCert(issuer, cn, orgs)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[der] = result
        return result


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- contexts and rotation -----------------------------------------------------------------
def _mtime(path: str | None) -> float | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns + st.st_size


class TlsManager:
    """Owns the serving SSLContext; rebuilds it when certificates or CAs change."""

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        cas: CertificateAuthorities,
        *,
        requestheader_ca_file: str | None = None,
        client_ca_file: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.cas = cas
        self.requestheader_ca_file = requestheader_ca_file
        self.client_ca_file = client_ca_file
        self.on_change = on_change
        self._stamps: tuple[float | None, ...] = ()
        self._current: ssl.SSLContext | None = None
        self._base: ssl.SSLContext | None = None
        self.reloads = 0
        self.reload_files(force=True)

    def _files(self) -> tuple[str | None, ...]:
        return (self.cert_file, self.key_file, self.requestheader_ca_file, self.client_ca_file)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        pem = self.cas.verify_pem
        if pem:
            ctx.load_verify_locations(cadata=pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def reload_files(self, force: bool = False) -> bool:
        """Re-read changed files; True if the context was rebuilt. Bad new files keep the old context."""
        stamps = tuple(_mtime(p) for p in self._files())
        if not force and stamps == self._stamps:
            return False
        try:
            rh = Path(self.requestheader_ca_file).read_bytes() if self.requestheader_ca_file else None
            cl = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
            if rh is not None or cl is not None:
                self.cas.set(
                    rh if rh is not None else self.cas.requestheader_pem,
                    cl if cl is not None else self.cas.client_pem,
                )
            ctx = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if force and self._current is None:
                raise
            log.error("keeping the previous TLS configuration: reloading certificates failed: %s", exc)
            self._stamps = stamps
            return False
        self._stamps = stamps
        self._install(ctx)
        return True

    def set_cas(self, requestheader_pem: bytes | None, client_pem: bytes | None) -> bool:
        """CA bundles from the authentication ConfigMap (None keeps the current bundle)."""
        changed = self.cas.set(
            requestheader_pem if requestheader_pem is not None else self.cas.requestheader_pem,
            client_pem if client_pem is not None else self.cas.client_pem,
        )
        if changed:
            self._install(self._build())
        return changed

    def _install(self, ctx: ssl.SSLContext) -> None:
        self._current = ctx
        self.reloads += 1
        self._report_expiry()
        if self.on_change is not None:
            self.on_change()

    def _report_expiry(self) -> None:
        """Expiry of what the secure port presents and trusts, for /metrics (and its alert)."""
        from metrics_server.selfmetrics import report_certificate_expiry

        def earliest(certs: list[x509.Certificate]) -> float | None:
            return min((c.not_valid_after_utc.timestamp() for c in certs), default=None)

        try:
            serving = load_pem_bundle(Path(self.cert_file).read_bytes())
        except (OSError, ValueError):
            serving = []
        report_certificate_expiry("serving", earliest(serving[:1]))  # the leaf, not its chain
        report_certificate_expiry("client-ca", earliest(self.cas.client))
        report_certificate_expiry("requestheader-client-ca", earliest(self.cas.requestheader))

    @property
    def context(self) -> ssl.SSLContext:
        """The context to listen with; it hands every handshake to the current context."""
        if self._base is None:
            base = self._build()

            def swap(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
                if self._current is not None and sslobj.context is not self._current:
                    sslobj.context = self._current

            base.sni_callback = swap
            self._base = base
        return self._base

    async def watch(self, interval: float) -> None:
        """Poll the files every `interval` seconds (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if self.reload_files():
                    log.info("TLS certificates reloaded")
            except Exception:  # pragma: no cover - reload_files logs and keeps going
                log.exception("certificate reload failed")
