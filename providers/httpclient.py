"""Shared aiohttp plumbing for HTTP backends: TLS options, pooled sessions, error mapping.

Secret keys understood by every HTTP provider (additive to upstream, all optional):
`ca.crt` (PEM bundle to trust), `tls.crt`/`tls.key` (client certificate).
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from yarl import URL

from metrics_server.redact import NO_SECRETS, REGISTRY, Redactor
from providers.base import Backend, BackendConfig, BackendError, Window
from providers.egress import PolicyResolver, egress_reason, is_egress_denial

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


def ssl_context(config: BackendConfig) -> ssl.SSLContext | bool:
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
            # the system CAs stay trusted too: a provider may also call public endpoints (DQL's SSO)
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cadata=ca)
        except ssl.SSLError:
            raise BackendError("Secret key ca.crt is not a valid PEM certificate bundle") from None
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
                raise BackendError(
                    "Secret keys tls.crt/tls.key are not a valid certificate and key"
                ) from None
    return ctx


def new_session(config: BackendConfig, headers: Mapping[str, str] | None = None) -> aiohttp.ClientSession:
    """A pooled session for one KeptnMetricsProvider; closed when the provider is rebuilt."""
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        ssl=ssl_context(config),
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        resolver=PolicyResolver(config.egress),
        socket_factory=config.egress.socket_factory,  # checked at connect time: no DNS rebinding
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(headers or {}),
        timeout=aiohttp.ClientTimeout(total=config.timeout),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        trust_env=False,
    )


EXCERPT_CHARS = 300


def describe_status(status: int, body: bytes, redactor: Redactor = NO_SECRETS) -> str:
    """A short, single-line excerpt of an error body, redacted *before* it is cut."""
    text = redactor.excerpt(body[: 64 * 1024].decode("utf-8", errors="replace"), EXCERPT_CHARS)
    return f"HTTP {status}" + (f": {text}" if text else "")


def http_error(
    provider: str,
    url: str,
    status: int,
    body: bytes,
    detail: str | None = None,
    redactor: Redactor = NO_SECRETS,
) -> BackendError:
    """Map an HTTP failure to a one-line BackendError with auth/retry hints."""
    if detail is not None:
        what = f"HTTP {status}: {redactor(detail)}"
    else:
        what = describe_status(status, body, redactor)
    return BackendError(
        f"{provider} at {safe_url(url)} answered {what}",
        auth=status in (401, 403),
        retryable=status == 429 or status >= 500,
    )


def transport_error(provider: str, url: str, exc: BaseException) -> BackendError:
    """Timeouts and connection failures, without leaking URLs' credentials."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return BackendError(f"{provider} at {safe_url(url)} did not answer in time", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return BackendError(f"{provider} at {safe_url(url)}: TLS verification failed ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError) and is_egress_denial(exc.os_error):
        return BackendError(f"{provider} at {safe_url(url)}: {egress_reason(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or exc
        return BackendError(f"{provider} at {safe_url(url)} is unreachable ({reason})", retryable=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return BackendError(f"{provider}: invalid target URL {safe_url(url)}")
    return BackendError(f"{provider} at {safe_url(url)}: {type(exc).__name__}", retryable=True)


def parse_json(provider: str, url: str, body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BackendError(f"{provider} at {safe_url(url)} answered malformed JSON") from None


#: Answers at least this large are decoded in a worker thread: orjson takes ~1 ms per MB, and
#: a 16 MB answer must not stall the loop that serves the API.
LARGE_JSON_BYTES = 256 * 1024


async def parse_json_off_loop(provider: str, url: str, body: bytes) -> Any:
    if len(body) < LARGE_JSON_BYTES:
        return parse_json(provider, url, body)
    return await asyncio.to_thread(parse_json, provider, url, body)


async def read_body(resp: aiohttp.ClientResponse) -> bytes:
    """Read at most MAX_BODY_BYTES: a backend cannot make us buffer gigabytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BackendError(f"answer from {safe_url(str(resp.url))} exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def origin(url: URL) -> tuple[str, str, int | None]:
    """(scheme, host, port): where credentials may go (RFC 6454)."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


async def request(
    session: aiohttp.ClientSession,
    provider: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """One HTTP exchange; transport failures become BackendError, status is returned.

    Redirects are followed only within the origin of the first request: every session
    carries the provider's credentials (headers, basic auth, client certificate), and a
    backend, or whoever controls its answers, must not be able to send them elsewhere.
    """
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.request(method, current, allow_redirects=False, **kwargs) as resp:
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECTS or not location:
                    return resp.status, await read_body(resp)
                target = resp.url.join(URL(location))
                if origin(target) != origin(resp.url):
                    raise BackendError(
                        f"{provider} at {safe_url(url)} redirected to another origin "
                        f"({safe_url(str(target.origin()))}); not followed, because the provider's "
                        "credentials are never sent to another origin (set targetServer to the final address)"
                    )
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method = "GET"  # what browsers and aiohttp do; the body is not re-sent
                kwargs = {k: v for k, v in kwargs.items() if k not in ("data", "json")}
            kwargs.pop("params", None)  # the Location is the complete next URL
            current = str(target)
        raise BackendError(f"{provider} at {safe_url(url)}: more than {MAX_REDIRECTS} redirects")
    except BackendError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise transport_error(provider, url, exc) from None


# --- small generic helpers shared by the HTTP providers (dynatrace, dql, datadog, elastic, http) ---

def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (in every form) masked, on one line."""
    return " ".join(Redactor(secrets)(text).split())


def window_bounds(
    window: Window, now: float | None = None, default_range: float = 0.0
) -> tuple[float, float]:
    """(start, end) Unix seconds of `window`; an instant spans `default_range` seconds."""
    end = window.end if window.end is not None else (time.time() if now is None else now)
    span = window.range_seconds if window.range_seconds is not None else default_range
    return end - span, end


def iso_time(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC time, sub-second digits kept: 2024-01-02T15:04:05.25Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def duration_text(seconds: float) -> str:
    """Seconds as the largest whole Go/Dynatrace-style unit: 300 -> '5m', 90 -> '90s', 7200 -> '2h'."""
    whole = round(seconds)
    if whole <= 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


_PLAIN_HEADERS = frozenset({"accept", "content-type", "user-agent", "accept-encoding"})


def _header_forms(values: Iterable[str]) -> list[str]:
    """A header value and, for `Scheme token` values, the token alone."""
    out: list[str] = []
    for value in values:
        out.append(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.isalpha():
            out.append(token.strip())
    return [v for v in out if v]


class HTTPBackend(Backend):
    """Base for providers over one aiohttp session: lazy session, redaction, error mapping.

    Subclasses set `label` (the backend's name in messages) and may override
    `default_headers()`. Every error they raise goes through `error()`/`status_error()`,
    which scrub all Secret values and any credential the provider learns at run time.
    """

    label = "backend"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        self._redactor: Redactor | None = None

    def default_headers(self) -> dict[str, str]:
        return {}

    @property
    def redactor(self) -> Redactor:
        """The Secret's values plus every credential header value we send (Basic, Bearer, custom)."""
        if self._redactor is None:
            sent = [v for k, v in self.default_headers().items() if k.lower() not in _PLAIN_HEADERS]
            self._redactor = self.config.redactor.extended(forms=_header_forms(sent))
        return self._redactor

    def remember_secret(self, value: str) -> None:
        """A credential obtained at run time (e.g. an OAuth token) that must never be shown."""
        if value and value not in self.redactor.values:
            self._redactor = self.redactor.extended([value])
            REGISTRY.put(self.config.name or str(id(self)), self._redactor)

    def scrub(self, text: str) -> str:
        return " ".join(self.redactor(text).split())

    def error(self, message: str, *, auth: bool = False, retryable: bool = False) -> BackendError:
        return BackendError(self.scrub(message), auth=auth, retryable=retryable)

    def status_error(self, url: str, status: int, body: bytes, detail: str | None = None) -> BackendError:
        exc = http_error(self.label, url, status, body, detail, self.redactor)
        return BackendError(self.scrub(exc.message), auth=exc.auth, retryable=exc.retryable)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(self.config, self.default_headers())
        return self._session

    async def fetch(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        try:
            return await request(self.session(), self.label, method, url, **kwargs)
        except BackendError as exc:
            raise BackendError(self.scrub(exc.message), auth=exc.auth, retryable=exc.retryable) from None

    def json(self, url: str, body: bytes) -> Any:
        return parse_json(self.label, url, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
