"""Helpers shared by the providers built on a vendor SDK (cloudwatch, azure, google)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable

from metrics_server.redact import Redactor


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
