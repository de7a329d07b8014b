"""The one interface every metrics backend implements.

Names: a *KeptnMetricsProvider* is the Kubernetes resource (type, targetServer, Secret); a
*backend* is this package's client for one of them (`Backend`, built from a `BackendConfig`,
failing with `BackendError`). A backend turns (query, window) into samples of a single
series. It never aggregates or formats: the evaluator does that, identically for every
type. Backends are built once per KeptnMetricsProvider (and its Secret) and reused, so they
own their connection pools.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from metrics_server.redact import Redactor, credential_values
from providers.egress import DEFAULT_POLICY, EgressPolicy


@dataclass(frozen=True)
class Window:
    """What to ask for: an instant (no range), a range, or a range sampled every step.

    `end` is a Unix timestamp (None means "now", which the provider reads itself).
    """

    range_seconds: float | None = None
    step_seconds: float | None = None
    end: float | None = None

    @property
    def is_instant(self) -> bool:
        return self.range_seconds is None


@dataclass(frozen=True, order=True)
class Sample:
    timestamp: float
    value: float


@dataclass(frozen=True)
class QueryResult:
    """Samples of one series, oldest first, and the backend's answer for `rawValue`."""

    samples: tuple[Sample, ...]
    raw: bytes = b""

    def latest(self) -> Sample:
        if not self.samples:
            raise BackendError("the query returned no data")
        return max(self.samples, key=lambda s: s.timestamp)


class BackendError(Exception):
    """A fetch failure with a message that is safe to show (never a credential).

    `auth` marks 401/403-style failures so the caller can re-read the Secret;
    `retryable` marks failures a later attempt may not see (timeouts, 5xx, 429).
    """

    def __init__(self, message: str, *, auth: bool = False, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.auth = auth
        self.retryable = retryable


@dataclass(frozen=True)
class BackendConfig:
    """Everything a provider needs, resolved from a KeptnMetricsProvider and its Secret."""

    type: str
    target_server: str
    secret: Mapping[str, bytes] = field(default_factory=dict)
    secret_key: str = ""
    insecure_skip_tls_verify: bool = False
    timeout: float = 10.0
    name: str = ""  # "namespace/name" of the KeptnMetricsProvider, for messages
    max_connections: int = 100
    egress: EgressPolicy = DEFAULT_POLICY  # which addresses connections may reach (SSRF protection)

    def secret_text(self, key: str) -> str | None:
        raw = self.secret.get(key)
        return None if raw is None else raw.decode("utf-8", errors="replace").strip()

    def secret_values(self) -> list[str]:
        """Every secret value, so callers can scrub them from any text they show."""
        return credential_values(raw.decode("utf-8", errors="replace") for raw in self.secret.values())

    @cached_property
    def redactor(self) -> Redactor:
        """The Secret's values in every form (plain, base64, Basic pairs, JSON, URL-encoded)."""
        return Redactor(self.secret_values())


class Backend(ABC):
    """A backend client. Subclasses implement `query`; providers/registry.py maps types to modules."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @abstractmethod
    async def query(self, query: str, window: Window) -> QueryResult:
        """Run one query; raise BackendError with a one-line, credential-free message."""

    @property
    def redactor(self) -> Redactor:
        """Everything this provider sends as a credential; subclasses add what they derive at run time."""
        return self.config.redactor

    async def close(self) -> None:  # noqa: B027 - optional hook, most providers hold a session
        """Release connections; called when the KeptnMetricsProvider or its Secret changes."""


def finite(value: float, what: str = "value") -> float:
    """Reject NaN and infinities: they are errors, never values (upstream keeps a stale one)."""
    if math.isnan(value) or math.isinf(value):
        raise BackendError(f"the query returned a non-finite {what} ({value})")
    return value


def parse_number(text: object, what: str = "value") -> float:
    """Parse a backend's numeric string or number strictly; NaN/Inf are errors."""
    if isinstance(text, bool):
        raise BackendError(f"{what} is a boolean, not a number")
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BackendError(f"{what} {str(text)[:64]!r} is not a number") from None
    return finite(value, what)
