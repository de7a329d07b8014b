"""Fetching an Analysis' values: render each objective's AnalysisValueTemplate with the
Analysis' args and ask its provider for the timeframe, all objectives in parallel.

How a value is reduced (documented in docs/lifecycle.md): the provider is asked for the
range [from, to] (`Window(range_seconds=to - from, end=to)`; the Prometheus family sends a
`query_range` whose step is the whole timeframe) and the value is the newest sample, i.e.
the query evaluated at the end of the timeframe. Write queries that aggregate over the
window themselves (`max_over_time(...[5m])`, `rate(...[5m])`). Upstream takes the *first*
sample of a one-minute-step range, i.e. the value at the start of the timeframe.
Instant-only providers (`openmetrics`) answer with the current value, which is only valid
for a timeframe that ends now (`recent`, or `to` within INSTANT_TOLERANCE seconds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from metrics_server.controller.model import (
    Analysis,
    AnalysisDefinition,
    AnalysisObjective,
    AnalysisValueTemplate,
)
from metrics_server.controller.scoring import ObjectiveValue
from metrics_server.controller.template import TemplateError, render
from metrics_server.fetch import BackendPool, fetch_once
from metrics_server.model import KeptnMetricsProvider, MetricRange, ObjectKey
from metrics_server.state import format_value, rfc3339
from metrics_server.tenancy import may_use_provider, provider_denied_message
from providers import BackendError

INSTANT_ONLY_TYPES = frozenset({"openmetrics"})
INSTANT_TOLERANCE = 300.0

TemplateLookup = Callable[[ObjectKey], AnalysisValueTemplate | None]
ProviderLookup = Callable[[ObjectKey], KeptnMetricsProvider | None]


def go_time_string(ts: float) -> str:
    """Go's time.Time.String() for a UTC time, as upstream's gauge labels `from`/`to` carry it."""
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


class AnalysisConfigError(Exception):
    """A reference that does not resolve or a template that does not render: retrying won't help
    until someone changes a resource, but it is reported per objective like upstream."""


@dataclass(frozen=True)
class PreparedQuery:
    objective: AnalysisObjective
    template: AnalysisValueTemplate
    provider: KeptnMetricsProvider
    query: str


def prepare(
    analysis: Analysis,
    definition: AnalysisDefinition,
    objective: AnalysisObjective,
    templates: TemplateLookup,
    providers: ProviderLookup,
    server_namespace: str,
) -> PreparedQuery:
    """Resolve template and provider, render the query. Raises AnalysisConfigError."""
    tkey = objective.template_ref.key(definition.meta.namespace)
    template = templates(tkey)
    if template is None:
        raise AnalysisConfigError(
            f'analysisvaluetemplates.metrics.keptn.sh "{tkey.name}" not found in {tkey.namespace}'
        )
    try:
        query = render(template.query, analysis.args)
    except TemplateError as exc:
        raise AnalysisConfigError(f"AnalysisValueTemplate {tkey}: {exc}") from None
    pref = template.provider
    candidates = [pref.key(template.meta.namespace)]
    if not pref.namespace and server_namespace != template.meta.namespace:
        candidates.append(ObjectKey(server_namespace, pref.name))
    for pkey in candidates:
        provider = providers(pkey)
        if provider is not None:
            # the Analysis's namespace sees the values: it is the consumer of the credentials
            if not may_use_provider(provider.meta, analysis.meta.namespace, server_namespace):
                raise AnalysisConfigError(provider_denied_message(provider.meta, analysis.meta.namespace))
            return PreparedQuery(objective, template, provider, query)
    raise AnalysisConfigError(
        f'keptnmetricsproviders.metrics.keptn.sh "{pref.name}" not found '
        f"(looked in {', '.join(k.namespace for k in candidates)})"
    )


async def fetch_value(
    pool: BackendPool, prepared: PreparedQuery, start: float, end: float, now: float
) -> float:
    """One value for one objective over [start, end]; raises BackendError."""
    client, config = await pool.get(prepared.provider)
    if prepared.provider.type in INSTANT_ONLY_TYPES:
        if now - end > INSTANT_TOLERANCE:
            raise BackendError(
                f"provider type {prepared.provider.type} reads only the current value; it cannot "
                f"answer for a timeframe that ended at {rfc3339(end)} (use timeframe.recent)"
            )
        outcome = await fetch_once(client, config, prepared.query, None)
    else:
        span = MetricRange(interval=f"{max(end - start, 1.0):.3f}s")
        outcome = await fetch_once(client, config, prepared.query, span, end=end)
    return outcome.value


async def collect_values(
    analysis: Analysis,
    definition: AnalysisDefinition,
    *,
    templates: TemplateLookup,
    providers: ProviderLookup,
    pool: BackendPool,
    start: float,
    end: float,
    now: float,
    server_namespace: str,
    done: Mapping[str, ObjectiveValue] | None = None,
) -> dict[str, ObjectiveValue]:
    """Values for every objective, keyed like upstream's `storedValues`. Objectives already in
    `done` without an error are not fetched again. Errors are returned, never raised."""
    done = done or {}
    out: dict[str, ObjectiveValue] = {}
    todo: list[tuple[str, PreparedQuery]] = []
    for objective in definition.objectives:
        key = objective.stored_key
        prior = done.get(key)
        if prior is not None and prior.value is not None and not prior.error:
            out[key] = prior
            continue
        try:
            todo.append(
                (key, prepare(analysis, definition, objective, templates, providers, server_namespace))
            )
        except AnalysisConfigError as exc:
            out[key] = ObjectiveValue(None, "", str(exc))

    async def one(prepared: PreparedQuery) -> ObjectiveValue:
        try:
            value = await fetch_value(pool, prepared, start, end, now)
        except BackendError as exc:
            return ObjectiveValue(None, prepared.query, exc.message)
        return ObjectiveValue(value, prepared.query)

    results = await asyncio.gather(*(one(p) for _k, p in todo))
    for (key, _p), result in zip(todo, results, strict=True):
        out[key] = result
    return out


def stored_values(
    definition: AnalysisDefinition, values: Mapping[str, ObjectiveValue]
) -> dict[str, dict[str, object]]:
    """`status.storedValues` in upstream's shape: {key: {objectiveReference, query, value, errMsg}}."""
    out: dict[str, dict[str, object]] = {}
    for objective in definition.objectives:
        got = values.get(objective.stored_key)
        if got is None:
            continue
        item: dict[str, object] = {
            "objectiveReference": objective.template_ref.to_json(),
            "query": got.query,
            "value": format_value(got.value) if got.value is not None else "",
        }
        if got.error:
            item["errMsg"] = got.error
        out[objective.stored_key] = item
    return out


def values_from_status(status: Mapping[str, object]) -> dict[str, ObjectiveValue]:
    """Read back `status.storedValues` (values fetched by an earlier attempt)."""
    out: dict[str, ObjectiveValue] = {}
    stored = status.get("storedValues")
    if not isinstance(stored, Mapping):
        return out
    for key, item in stored.items():
        if not isinstance(item, Mapping):
            continue
        err = str(item.get("errMsg") or "")
        text = str(item.get("value") or "")
        value: float | None = None
        if text and not err:
            try:
                value = float(text)
            except ValueError:
                value = None
        out[str(key)] = ObjectiveValue(
            value, str(item.get("query") or ""), err or ("" if value is not None else "no value")
        )
    return out
