"""Our own request metrics, exposed through prometheus_client's default REGISTRY.

`keptn_metrics_api_requests_total{route,code}` and
`keptn_metrics_api_request_duration_seconds{route}` (histogram). Counting goes into plain
dicts (the server is one event loop) and a collector renders them at scrape time: about
ten times cheaper per request than prometheus_client's locked children.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_counts: dict[tuple[str, int], int] = {}
#: route -> [per-bucket counts (last = +Inf), sum of seconds]
_hist: dict[str, list[Any]] = {}


def observe(route: str, code: int, seconds: float) -> None:
    key = (route, code)
    _counts[key] = _counts.get(key, 0) + 1
    h = _hist.get(route)
    if h is None:
        h = _hist[route] = [[0] * (len(BUCKETS) + 1), 0.0]
    h[0][bisect_left(BUCKETS, seconds)] += 1
    h[1] += seconds


class ApiCollector:
    def collect(self) -> Iterator[Any]:
        c = CounterMetricFamily(
            "keptn_metrics_api_requests",
            "Requests to the metrics APIs by route and HTTP code",
            labels=["route", "code"],
        )
        for (route, code), n in sorted(_counts.items()):
            c.add_metric([route, str(code)], n)
        yield c
        h = HistogramMetricFamily(
            "keptn_metrics_api_request_duration_seconds",
            "Time to answer requests to the metrics APIs, by route",
            labels=["route"],
        )
        for route, (counts, total) in sorted(_hist.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            h.add_metric([route], buckets, total)
        yield h

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected on demand only


COLLECTOR = ApiCollector()
if not getattr(REGISTRY, "_keptn_api_collector", False):
    REGISTRY.register(COLLECTOR)
    REGISTRY._keptn_api_collector = True  # type: ignore[attr-defined]
