"""One evaluation of a KeptnMetric's query: provider clients, windows, reduction to a value.

Shared by the evaluator, `keptn-metrics query` and the lifecycle controller, so the CLI
answers exactly what the server would.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from metrics_server.aggregation import aggregate
from metrics_server.model import KeptnMetricsProvider, MetricRange, ObjectKey, Secret
from metrics_server.redact import REGISTRY
from metrics_server.store.base import Store
from providers import Backend, BackendConfig, BackendError, QueryResult, Sample, Window, create_backend
from providers.base import finite
from providers.egress import DEFAULT_POLICY, EgressPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchOutcome:
    value: float
    raw: bytes
    samples: tuple[Sample, ...]
    fetched_at: float  # wall-clock time the answer arrived


def window_for(mrange: MetricRange | None, end: float | None = None) -> Window:
    """Instant when there is no range; otherwise [end - interval, end] with the optional step."""
    if mrange is None:
        return Window(end=end)
    return Window(range_seconds=mrange.interval_seconds, step_seconds=mrange.step_seconds, end=end)


def reduce_samples(result: QueryResult, mrange: MetricRange | None) -> float:
    """The metric's value: the aggregation over all samples, else the newest sample.

    Upstream returns the *oldest* sample of a range without step; the newest is the one
    that describes "now", so that is what we return (documented in the README).
    """
    if not result.samples:
        raise BackendError("the query returned no data")
    values = [finite(s.value) for s in result.samples]
    if mrange is not None and mrange.aggregation:
        return aggregate(mrange.aggregation, values)
    return finite(result.latest().value)


def provider_config(
    provider: KeptnMetricsProvider,
    secret: Secret | None,
    *,
    timeout: float = 10.0,
    max_connections: int = 100,
    egress: EgressPolicy = DEFAULT_POLICY,
) -> BackendConfig:
    ref = provider.secret_key_ref
    return BackendConfig(
        type=provider.type,
        target_server=provider.target_server,
        secret=dict(secret.data) if secret else {},
        secret_key=ref.key if ref else "",
        insecure_skip_tls_verify=provider.insecure_skip_tls_verify,
        timeout=timeout,
        name=str(provider.key),
        max_connections=max_connections,
        egress=egress,
    )


async def resolve_secret(store: Store, provider: KeptnMetricsProvider) -> Secret | None:
    """The provider's Secret, from the provider's own namespace only."""
    ref = provider.secret_key_ref
    if ref is None:
        return None
    secret = await store.get_secret(ObjectKey(provider.meta.namespace, ref.name))
    if secret is None:
        if ref.optional:
            return None
        raise BackendError(
            f"Secret {provider.meta.namespace}/{ref.name} referenced by provider {provider.key} not found"
        )
    if ref.key and ref.key not in secret.data and not ref.optional:
        raise BackendError(f"Secret {provider.meta.namespace}/{ref.name} has no key {ref.key!r}")
    return secret


@dataclass
class _Client:
    provider: KeptnMetricsProvider
    secret: Secret | None
    config: BackendConfig
    client: Backend


class BackendPool:
    """One client (and connection pool) per KeptnMetricsProvider, rebuilt when it or its Secret changes."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = 10.0,
        max_connections: int = 100,
        egress: EgressPolicy = DEFAULT_POLICY,
    ) -> None:
        self._store = store
        self._egress = egress
        self._timeout = timeout
        self._max_connections = max_connections
        self._clients: dict[ObjectKey, _Client] = {}

    async def get(self, provider: KeptnMetricsProvider) -> tuple[Backend, BackendConfig]:
        secret = await resolve_secret(self._store, provider)
        current = self._clients.get(provider.key)
        if current is not None and current.provider is provider and current.secret is secret:
            return current.client, current.config
        if current is not None and current.provider == provider and current.secret == secret:
            current.provider, current.secret = provider, secret
            return current.client, current.config
        config = provider_config(
            provider,
            secret,
            timeout=self._timeout,
            max_connections=self._max_connections,
            egress=self._egress,
        )
        client = create_backend(config)
        self._clients[provider.key] = _Client(provider, secret, config, client)
        REGISTRY.put(config.name, client.redactor)  # logs of any library are redacted too
        if current is not None:
            await self._close(current)
        return client, config

    async def invalidate(self, key: ObjectKey) -> None:
        current = self._clients.pop(key, None)
        if current is not None:
            REGISTRY.drop(current.config.name)
            await self._close(current)

    async def close(self) -> None:
        for key in list(self._clients):
            await self.invalidate(key)

    @staticmethod
    async def _close(entry: _Client) -> None:
        try:
            await entry.client.close()
        except Exception:  # closing must never break the caller
            log.warning("closing provider %s failed", entry.config.name, exc_info=True)


async def query_once(
    client: Backend,
    config: BackendConfig,
    query: str,
    mrange: MetricRange | None,
    *,
    end: float | None = None,
) -> tuple[QueryResult, float]:
    """Run the query; errors come back as BackendError with secrets redacted, and so does
    the raw answer (it becomes `status.rawValue`, readable by anyone who can read the metric)."""
    redactor = client.redactor
    try:
        result = await client.query(query, window_for(mrange, end))
    except BackendError as exc:
        raise BackendError(redactor(exc.message), auth=exc.auth, retryable=exc.retryable) from None
    raw = redactor.bytes(result.raw)
    if raw is not result.raw:
        result = dataclasses.replace(result, raw=raw)
    return result, time.time()


def outcome_of(result: QueryResult, fetched_at: float, mrange: MetricRange | None) -> FetchOutcome:
    """Reduce a shared query result with one metric's own range/aggregation."""
    return FetchOutcome(
        value=reduce_samples(result, mrange), raw=result.raw, samples=result.samples, fetched_at=fetched_at
    )


async def fetch_once(
    client: Backend,
    config: BackendConfig,
    query: str,
    mrange: MetricRange | None,
    *,
    end: float | None = None,
) -> FetchOutcome:
    """One complete evaluation, as `keptn-metrics query` and the controller use it."""
    result, fetched_at = await query_once(client, config, query, mrange, end=end)
    return outcome_of(result, fetched_at, mrange)  # its errors are ours, never a backend's text
