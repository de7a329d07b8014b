"""Our own Prometheus metrics.

Process-wide counters and histograms live in the default registry (explicit, module-level
metric objects, as prometheus_client intends). Per-KeptnMetric gauges are *collected* from
the live MetricStates at scrape time, so a deleted metric's series disappear at once and
namespaces never collide (labels are namespace and name, never "ns-name").
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metrics_server.state import MetricStates

FETCH_DURATION = Histogram(
    "keptn_metrics_fetch_duration_seconds",
    "Duration of provider queries.",
    ["provider_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FETCH_ERRORS = Counter("keptn_metrics_fetch_errors", "Failed provider queries.", ["provider_type"])
SCHEDULE_LAG = Histogram(
    "keptn_metrics_schedule_lag_seconds",
    "How late a fetch started compared to its due time.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class StatesCollector(Collector):
    """Per-KeptnMetric value, age and error gauges, read from MetricStates at scrape time."""

    def __init__(self, states: MetricStates) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        labels = ["namespace", "name"]
        value = GaugeMetricFamily("keptn_metric_value", "Last good value of a KeptnMetric.", labels=labels)
        age = GaugeMetricFamily(
            "keptn_metric_value_age_seconds",
            "Seconds since the KeptnMetric's value was fetched.",
            labels=labels,
        )
        error = GaugeMetricFamily(
            "keptn_metric_error", "1 while the KeptnMetric's last fetch failed.", labels=labels
        )
        for state in self._states.values():
            key = [state.key.namespace, state.key.name]
            if state.value is not None:
                value.add_metric(key, state.value)
            current_age = state.age(now)
            if current_age is not None:
                age.add_metric(key, current_age)
            error.add_metric(key, 1.0 if state.error else 0.0)
        yield value
        yield age
        yield error


def exposition(states: MetricStates) -> bytes:
    """The text exposition every `/metrics` serves: process-wide metrics and per-KeptnMetric gauges."""
    per_metric = CollectorRegistry(auto_describe=False)
    per_metric.register(StatesCollector(states))
    return generate_latest(REGISTRY) + generate_latest(per_metric)
