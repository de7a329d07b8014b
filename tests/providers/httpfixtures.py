"""Loopback HTTP(S) servers and configs shared by the HTTP provider tests.

Import the fixtures you use: `from tests.providers.httpfixtures import ca, tls_server_context`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import pytest
import trustme

from providers.base import ProviderConfig, ProviderError


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def make_config(
    type_: str,
    target: str,
    secret: Mapping[str, str] | None = None,
    *,
    key: str = "",
    timeout: float = 2.0,
    insecure: bool = False,
) -> ProviderConfig:
    return ProviderConfig(
        type=type_,
        target_server=target,
        secret={k: v.encode() for k, v in (secret or {}).items()},
        secret_key=key,
        insecure_skip_tls_verify=insecure,
        timeout=timeout,
        name=f"test/{type_}",
    )


def assert_clean(exc: ProviderError, *secrets: str) -> None:
    """A provider error is one line and never shows a credential."""
    message = str(exc)
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message, f"credential leaked into: {message}"
