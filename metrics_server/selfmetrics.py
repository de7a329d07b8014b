"""Our own Prometheus metrics.

Process-wide counters and histograms live in the default registry (explicit, module-level
metric objects, as prometheus_client intends). Per-KeptnMetric gauges are *collected* from
the live MetricStates at scrape time, so a deleted metric's series disappear at once and
namespaces never collide (labels are namespace and name, never "ns-name"): the
`keptn_metric_value{namespace,name}` family, and upstream Keptn's one gauge per KeptnMetric
named after it (see `upstream_gauge_name`).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Iterator

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


#: client_golang's (legacy) metric name rule, which upstream's prometheus/common v0.47 enforces
_VALID_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: sample names the text format derives from a family name
_SAMPLE_SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info")


def upstream_gauge_name(name: str) -> str | None:
    """The gauge name upstream Keptn gives a KeptnMetric (metrics-operator's
    `normalizeMetricName`): runs of characters that are neither a Unicode letter nor a
    decimal digit become one `_`, leading and trailing runs are dropped (`my-app.rps` ->
    `my_app_rps`). None when that is no valid Prometheus name (it starts with a digit):
    upstream's registration fails then and the gauge is never exposed."""
    words, word = [], []
    for ch in name:
        if ch.isalpha() or unicodedata.category(ch) == "Nd":
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    normalized = "_".join(words)
    return normalized if _VALID_NAME.fullmatch(normalized) else None


class UpstreamGaugesCollector(Collector):
    """Upstream's gauge per KeptnMetric, as in Keptn's "expose-keptn-metric" example
    (`# HELP <name> <name>`), without upstream's two bugs: series carry `namespace` and
    `name` labels, so equal names in two namespaces never collide, and a deleted
    KeptnMetric's series disappear (upstream keeps its gauges forever). A family with no
    value yet has no sample (upstream reports 0). Names taken by our own families are skipped."""

    def __init__(self, states: MetricStates, reserved: Iterable[str]) -> None:
        self._states = states
        self._reserved = frozenset(reserved)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, list[tuple[str, str, float | None]]] = {}
        for state in self._states.values():
            gauge = upstream_gauge_name(state.key.name)
            if gauge is not None and gauge not in self._reserved:
                families.setdefault(gauge, []).append((state.key.namespace, state.key.name, state.value))
        for gauge in sorted(families):
            members = sorted(families[gauge], key=lambda m: (m[0], m[1]))
            help_text = ", ".join(sorted({name for _, name, _ in members}))  # upstream: the name
            family = GaugeMetricFamily(gauge, help_text, labels=["namespace", "name"])
            for namespace, name, value in members:
                if value is not None:
                    family.add_metric([namespace, name], value)
            yield family


class _Families:
    """Already collected families, in the shape `generate_latest` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _sample_names(families: Iterable[Metric]) -> set[str]:
    return {f.name + suffix for f in families for suffix in _SAMPLE_SUFFIXES} | {
        s.name for f in families for s in f.samples
    }


def exposition(states: MetricStates) -> bytes:
    """The text exposition every `/metrics` serves: process-wide metrics and per-KeptnMetric gauges."""
    own = list(REGISTRY.collect()) + list(StatesCollector(states).collect())
    upstream = CollectorRegistry(auto_describe=False)
    upstream.register(UpstreamGaugesCollector(states, _sample_names(own)))
    return generate_latest(_Families(own)) + generate_latest(upstream)
