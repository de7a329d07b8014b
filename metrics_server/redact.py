"""Scrub credentials from any text we show (errMsg, events, logs)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_AUTH_HEADER = re.compile(
    r"(?i)\b(authorization|api-token|bearer|apikey|x-api-key|dd-api-key|dd-application-key)([\s:=]+)\S+"
)

MASK = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secret values, URL userinfo and credential-looking header values."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    return _AUTH_HEADER.sub(rf"\1\2{MASK}", text)
