"""Mutually authenticated TLS between replicas, pinned to the shared serving CA.

Each replica issues itself a short-lived certificate from the CA in Secret
`keptn-metrics-serving-ca` (apiservice/shared_ca.py) with both serverAuth and clientAuth
usages. Both ends require the other's certificate and verify it against that CA only: only
holders of the Secret (our ServiceAccount) can mint one. Pods are reached by IP, so host
names are not checked; the CA pin and the peer common name are the identity.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEER_COMMON_NAME = "keptn-metrics-peer"


def issue_peer_cert(ca_pem: bytes, ca_key_pem: bytes, days: int = 30) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for this replica, signed by the shared CA."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the shared CA key must be an EC key")
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PEER_COMMON_NAME)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem), key_pem


@dataclass(frozen=True)
class PeerTls:
    server: ssl.SSLContext
    client: ssl.SSLContext


def peer_contexts(ca_pem: bytes, ca_key_pem: bytes) -> PeerTls:
    """Server and client SSL contexts that require and verify a peer certificate from the CA."""
    cert_pem, key_pem = issue_peer_cert(ca_pem, ca_key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca_pem.decode())
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
    client.check_hostname = False  # pods are reached by IP; the CA pin is the identity
    client.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory(prefix="keptn-peer-") as d:  # ssl loads key pairs from files only
        cert_file, key_file = os.path.join(d, "peer.crt"), os.path.join(d, "peer.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(cert_file, "wb") as f:
            f.write(cert_pem)
        for ctx in (server, client):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert_file, key_file)
    return PeerTls(server, client)


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The verified peer certificate's common name ("" if there is none)."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    subject: Any = (cert or {}).get("subject", ())
    for rdn in subject:
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return ""
