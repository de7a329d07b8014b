"""Our own request metrics (prometheus_client, default REGISTRY)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _get_or_create(factory: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(name, *args, **kwargs)
    except ValueError:  # already registered (module reloaded in tests)
        collector = REGISTRY._names_to_collectors.get(name)
        if collector is None:
            collector = REGISTRY._names_to_collectors[name + "_total"]
        return collector


REQUESTS = _get_or_create(
    Counter,
    "keptn_metrics_api_requests",
    "Requests to the metrics APIs by route and HTTP code",
    ["route", "code"],
)
DURATION = _get_or_create(
    Histogram,
    "keptn_metrics_api_request_duration_seconds",
    "Time to answer requests to the metrics APIs, by route",
    ["route"],
    buckets=_BUCKETS,
)

_counters: dict[tuple[str, int], Any] = {}
_histograms: dict[str, Any] = {}


def observe(route: str, code: int, seconds: float) -> None:
    c = _counters.get((route, code))
    if c is None:
        c = _counters[(route, code)] = REQUESTS.labels(route=route, code=str(code))
    h = _histograms.get(route)
    if h is None:
        h = _histograms[route] = DURATION.labels(route=route)
    c.inc()
    h.observe(seconds)
