"""Shared aiohttp plumbing for HTTP backends: TLS options, pooled sessions, error mapping.

Secret keys understood by every HTTP provider (additive to upstream, all optional):
`ca.crt` (PEM bundle to trust), `tls.crt`/`tls.key` (client certificate).
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from providers.base import ProviderConfig, ProviderError

MAX_BODY_BYTES = 16 * 1024 * 1024


def safe_url(url: str) -> str:
    """The URL without userinfo and query string, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def ssl_context(config: ProviderConfig) -> ssl.SSLContext | bool:
    """TLS settings from `insecureSkipTlsVerify` and the optional CA/client cert in the Secret."""
    ca = config.secret_text("ca.crt")
    cert = config.secret.get("tls.crt")
    key = config.secret.get("tls.key")
    if config.insecure_skip_tls_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca:
        try:
            ctx = ssl.create_default_context(cadata=ca)
        except ssl.SSLError:
            raise ProviderError("Secret key ca.crt is not a valid PEM certificate bundle") from None
    elif cert and key:
        ctx = ssl.create_default_context()
    else:
        return True
    if cert and key:
        # ssl can only load client certificates from files; they live only for this call.
        with tempfile.NamedTemporaryFile() as cf, tempfile.NamedTemporaryFile() as kf:
            cf.write(cert)
            cf.flush()
            kf.write(key)
            kf.flush()
            try:
                ctx.load_cert_chain(cf.name, kf.name)
            except ssl.SSLError:
                raise ProviderError("Secret keys tls.crt/tls.key are not a valid certificate and key") from None
    return ctx


def new_session(config: ProviderConfig, headers: Mapping[str, str] | None = None) -> aiohttp.ClientSession:
    """A pooled session for one KeptnMetricsProvider; closed when the provider is rebuilt."""
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        ssl=ssl_context(config),
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(headers or {}),
        timeout=aiohttp.ClientTimeout(total=config.timeout),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        trust_env=False,
    )


def describe_status(status: int, body: bytes) -> str:
    """A short, single-line excerpt of an error body (providers redact secrets themselves)."""
    text = body[:300].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return f"HTTP {status}" + (f": {text}" if text else "")


def http_error(provider: str, url: str, status: int, body: bytes, detail: str | None = None) -> ProviderError:
    """Map an HTTP failure to a one-line ProviderError with auth/retry hints."""
    what = detail if detail is not None else describe_status(status, body)
    if detail is not None:
        what = f"HTTP {status}: {detail}"
    return ProviderError(
        f"{provider} at {safe_url(url)} answered {what}",
        auth=status in (401, 403),
        retryable=status == 429 or status >= 500,
    )


def transport_error(provider: str, url: str, exc: BaseException) -> ProviderError:
    """Timeouts and connection failures, without leaking URLs' credentials."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return ProviderError(f"{provider} at {safe_url(url)} did not answer in time", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ProviderError(f"{provider} at {safe_url(url)}: TLS verification failed ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderError(f"{provider} at {safe_url(url)} is unreachable ({exc.os_error.strerror or exc})", retryable=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return ProviderError(f"{provider}: invalid target URL {safe_url(url)}")
    return ProviderError(f"{provider} at {safe_url(url)}: {type(exc).__name__}", retryable=True)


def parse_json(provider: str, url: str, body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProviderError(f"{provider} at {safe_url(url)} answered malformed JSON") from None


async def read_body(resp: aiohttp.ClientResponse) -> bytes:
    """Read at most MAX_BODY_BYTES: a backend cannot make us buffer gigabytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProviderError(f"answer from {safe_url(str(resp.url))} exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def request(
    session: aiohttp.ClientSession,
    provider: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """One HTTP exchange; transport failures become ProviderError, status is returned."""
    try:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, await read_body(resp)
    except ProviderError:
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
        raise transport_error(provider, url, exc) from None
