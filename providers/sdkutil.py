"""Helpers shared by the providers built on a vendor SDK (cloudwatch, azure, google)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterable
from urllib.parse import urlsplit

from metrics_server.redact import Redactor
from providers.base import BackendConfig, BackendError
from providers.egress import EgressDenied


def scrub(text: str, secrets: Iterable[str] | Redactor) -> str:
    """An SDK's message on one line, at most 300 characters, redacted before it is cut."""
    redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
    return redactor.excerpt(str(text), 300)


def whole_seconds(value: float) -> str:
    """A duration as the SDKs' `Ns` text, rounded, at least 1s: 90.4 -> '90s', 0.2 -> '1s'."""
    return f"{max(1, round(value))}s"


class CAFile:
    """The Secret's `ca.crt` as a file, for SDKs that only take a path: written once, removed on close."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path: str | None = None

    def get(self, pem: bytes) -> str:
        if self.path is None:
            fd, path = tempfile.mkstemp(prefix=self.prefix, suffix=".pem")
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            self.path = path
        return self.path

    def remove(self) -> None:
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


async def check_endpoint(config: BackendConfig, target: str | None, label: str) -> None:
    """Refuse a tenant-chosen SDK endpoint the egress policy denies (see providers/egress.py).

    The SDKs open their own connections, so this resolves the endpoint's host just before the
    query and checks every address; it cannot see a DNS answer that changes between this check
    and the SDK's own lookup (cloudwatch is also checked at connect time, see its connector).
    """
    if not target:
        return
    host = urlsplit(target if "://" in target else f"//{target}").hostname or ""
    if not host:
        return
    try:
        config.egress.check(host)
        if config.egress.denied_address(host) is None and not _is_ip(host):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            for info in infos:
                config.egress.check(str(info[4][0]))
    except EgressDenied as exc:
        raise BackendError(f"{label}: {exc}") from None
    except OSError:
        return  # unresolvable: the SDK reports it in its own words


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
