"""Our own Prometheus metrics.

Process-wide counters and histograms live in the default registry (explicit, module-level
metric objects, as prometheus_client intends). Per-KeptnMetric gauges are rendered from
the live MetricStates at scrape time, so a deleted metric's series disappear at once and
namespaces never collide (labels are namespace and name, never "ns-name"): the
`keptn_metric_value{namespace,name}` family, and upstream Keptn's one gauge per KeptnMetric
named after it (see `upstream_gauge_name`).
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from metrics_server.state import MetricStates, staleness_bound

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
SCHEDULE_LAG_INTERVALS = Histogram(
    "keptn_metrics_schedule_lag_intervals",
    "Schedule lag in units of the metric's fetchIntervalSeconds (above 1: a whole interval late).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
STATUS_WRITE_REQUESTS = Counter(
    "keptn_metrics_status_write_requests",
    "Requests the status writer sent (kind: status patch or event), by result.",
    ["kind", "result"],
)
STATUS_WRITE_QUEUE = Gauge(
    "keptn_metrics_status_write_queue", "Status writes and Events waiting for the write budget."
)
STATUS_WRITE_BUDGET = Gauge(
    "keptn_metrics_status_write_budget_qps",
    "Requests per second the status writer may send (--status-write-qps).",
)
LEASE_HELD = Gauge(
    "keptn_metrics_lease_held",
    "1 while this replica holds the Lease, 0 while it campaigns for it (one series per Lease).",
    ["lease"],
)
CERTIFICATE_EXPIRY = Gauge(
    "keptn_metrics_certificate_expiry_timestamp_seconds",
    "When a certificate the secure port relies on expires (Unix time; the earliest of a CA bundle).",
    ["certificate"],
)


def observe_schedule_lag(lag: float, interval: float) -> None:
    SCHEDULE_LAG.observe(lag)
    if interval > 0:
        SCHEDULE_LAG_INTERVALS.observe(lag / interval)


def gauge_from(gauge: Gauge, owner: Any, read: Callable[[Any], float]) -> None:
    """Let `gauge` read `read(owner)` at scrape time, without keeping `owner` alive (0 once it is gone)."""
    ref = weakref.ref(owner)

    def current() -> float:
        obj = ref()
        return 0.0 if obj is None else float(read(obj))

    gauge.set_function(current)


def report_lease_held(lease: str, held: bool | None) -> None:
    """Every Lease this replica campaigns for (the leader Lease, fetch shards): True while it
    holds it, False while it campaigns, None once it stops campaigning (the series goes).
    KeptnMetricsNoLeader fires for a Lease every campaigner reports False for."""
    if held is None:
        try:
            LEASE_HELD.remove(lease)
        except KeyError:
            pass
    else:
        LEASE_HELD.labels(lease).set(1.0 if held else 0.0)


def report_certificate_expiry(certificate: str, not_after: float | None) -> None:
    """Record (or, with None, forget) when a certificate expires."""
    if not_after is None:
        try:
            CERTIFICATE_EXPIRY.remove(certificate)
        except KeyError:
            pass
    else:
        CERTIFICATE_EXPIRY.labels(certificate).set(not_after)


PER_METRIC_FAMILIES = (
    ("keptn_metric_value", "Last good value of a KeptnMetric."),
    ("keptn_metric_value_age_seconds", "Seconds since the KeptnMetric's value was fetched."),
    ("keptn_metric_error", "1 while the KeptnMetric's last fetch failed."),
    (
        "keptn_metric_staleness_bound_seconds",
        "Age past which the KeptnMetric's value is no longer served (503).",
    ),
)


def _label_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return text


def per_metric_exposition(states: MetricStates, now: float | None = None) -> bytes:
    """Value, age, error and staleness bound of every KeptnMetric, in the text format.

    Rendered directly rather than through prometheus_client's metric families: the same text
    (labels sorted, Go float formatting) at about a sixth of the cost, which matters because a
    scrape of 10,000 metrics holds the event loop (benchmarks/exposition.py)."""
    now = time.time() if now is None else now
    max_staleness = states.max_staleness
    columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    value, age, error, bound = columns
    for state in states.values():
        labels = f'{{name="{_label_value(state.key.name)}",namespace="{_label_value(state.key.namespace)}"}} '
        if state.value is not None:
            value.append(labels + floatToGoString(state.value))
        current_age = state.age(now)
        if current_age is not None:
            age.append(labels + floatToGoString(current_age))
        error.append(labels + ("1.0" if state.error else "0.0"))
        bound.append(labels + floatToGoString(staleness_bound(state, max_staleness)))
    out: list[str] = []
    for (name, help_text), samples in zip(PER_METRIC_FAMILIES, columns, strict=True):
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out.extend(f"{name}{sample}\n" for sample in samples)
    return "".join(out).encode()


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


@functools.lru_cache(maxsize=65536)
def _upstream_gauge_name_cached(name: str) -> str | None:
    return upstream_gauge_name(name)


def upstream_gauges_exposition(states: MetricStates, reserved: Iterable[str]) -> bytes:
    """Upstream's gauge per KeptnMetric, as in Keptn's "expose-keptn-metric" example
    (`# HELP <name> <name>`), without upstream's two bugs: series carry `namespace` and
    `name` labels, so equal names in two namespaces never collide, and a deleted
    KeptnMetric's series disappear (upstream keeps its gauges forever). A family with no
    value yet has no sample (upstream reports 0). Names taken by our own families are skipped.

    Rendered directly, byte for byte what prometheus_client renders for these families (one
    family per KeptnMetric name is the expensive part of a scrape through metric families)."""
    taken = frozenset(reserved)
    families: dict[str, list[tuple[str, str, float | None]]] = {}
    for state in states.values():
        gauge = _upstream_gauge_name_cached(state.key.name)
        if gauge is not None and gauge not in taken:
            families.setdefault(gauge, []).append((state.key.namespace, state.key.name, state.value))
    out: list[str] = []
    for gauge in sorted(families):
        members = sorted(families[gauge], key=lambda m: (m[0], m[1]))
        help_text = ", ".join(sorted({name for _, name, _ in members}))  # upstream: the name
        out.append(f"# HELP {gauge} {_help(help_text)}\n# TYPE {gauge} gauge\n")
        for namespace, name, value in members:
            if value is not None:
                out.append(
                    f'{gauge}{{name="{_label_value(name)}",namespace="{_label_value(namespace)}"}} '
                    f"{floatToGoString(value)}\n"
                )
    return "".join(out).encode()


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


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
    own = list(REGISTRY.collect())
    reserved = _sample_names(own) | {
        name + suffix for name, _ in PER_METRIC_FAMILIES for suffix in _SAMPLE_SUFFIXES
    }
    return (
        generate_latest(_Families(own))
        + per_metric_exposition(states)
        + upstream_gauges_exposition(states, reserved)
    )
