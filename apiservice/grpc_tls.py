"""TLS for the KEDA gRPC scaler: the API's own serving certificate, re-read when it changes.

KEDA's `external` trigger speaks TLS (trigger metadata or TriggerAuthentication `caCert`,
`tlsClientCert`, `tlsClientKey`), so the scaler serves TLS by default with the same
certificate as the metrics APIs; `--keda-grpc-client-ca-file` additionally requires a client
certificate issued by that CA. gRPC's dynamic credentials ask `_fetch` at each handshake,
so a rotated certificate (cert-manager, the self-signed pair) is picked up without a restart.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?\r?\n-----END \1-----", re.DOTALL)


def pem_blocks(data: bytes, kind: str) -> bytes:
    """The PEM blocks of `data` whose type ends with `kind` (CERTIFICATE, PRIVATE KEY), joined."""
    wanted = kind.encode()
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1).endswith(wanted)]
    return b"\n".join(blocks) + (b"\n" if blocks else b"")


class GrpcServingCredentials:
    """Server credentials built from a certificate/key file pair (they may be the same file)."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._stamps = self._mtimes()
        self.reloads = 0

    def _mtimes(self) -> tuple[float, ...]:
        files = [self.cert_file, self.key_file, *([self.client_ca_file] if self.client_ca_file else [])]
        out = []
        for f in files:
            try:
                out.append(os.stat(f).st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        chain = pem_blocks(Path(self.cert_file).read_bytes(), "CERTIFICATE")
        key = pem_blocks(Path(self.key_file).read_bytes(), "PRIVATE KEY")
        if not chain or not key:
            raise ValueError(f"no certificate or key in {self.cert_file} / {self.key_file}")
        roots = None
        if self.client_ca_file:
            roots = pem_blocks(Path(self.client_ca_file).read_bytes(), "CERTIFICATE")
            if not roots:
                raise ValueError(f"no CA certificate in {self.client_ca_file}")
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamps = self._mtimes()
        if stamps == self._stamps:
            return None  # unchanged: gRPC keeps the current configuration
        try:
            config = self._configuration()
        except (OSError, ValueError) as exc:  # half-written files: try again at the next handshake
            log.warning("gRPC serving certificate not reloaded: %s", exc)
            return None
        self._stamps = stamps
        self.reloads += 1
        log.info("gRPC serving certificate reloaded")
        return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,
            require_client_authentication=bool(self.client_ca_file),
        )
