"""Upstream Keptn's per-KeptnMetric gauges on /metrics (issue 9, item 4), without its bugs.

Upstream (metrics-operator/pkg/metrics/server.go) registers one gauge per KeptnMetric, named
by `normalizeMetricName` and with the KeptnMetric's name as HELP; Keptn's
"expose-keptn-metric" test greps `# HELP <name> <name>`. Upstream's gauges have no labels
(two namespaces collide) and are never unregistered; ours carry `namespace` and `name`
and leave with the KeptnMetric.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics_server.http_server import MetricsPortApp
from metrics_server.model import ObjectKey, parse_metric
from metrics_server.selfmetrics import exposition, upstream_gauge_name
from metrics_server.state import MetricStates
from metrics_server.store.base import IndexedStore


def add(store: IndexedStore, states: MetricStates, ns: str, name: str, value: float | None) -> None:
    metric = parse_metric(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10},
        }
    )
    store.apply(metric)
    state = states.ensure(metric.key, 10)
    if value is not None:
        state.value, state.value_text, state.last_success = value, repr(value), time.time()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize(
    ("name", "gauge"),
    [
        ("podtatometric", "podtatometric"),  # the expose-keptn-metric example's form
        ("my-metric", "my_metric"),
        ("my.app--rps", "my_app_rps"),
        ("a-b.c-d", "a_b_c_d"),
        ("cpu9", "cpu9"),
        ("x_y", "x_y"),  # `_` is neither letter nor digit for upstream: one run, kept as `_`
        ("-lead-and-trail-", "lead_and_trail"),
        ("x__y", "x_y"),
    ],
)
def test_names_are_normalized_as_upstream(name: str, gauge: str) -> None:
    assert upstream_gauge_name(name) == gauge


def test_names_upstream_cannot_register_are_skipped() -> None:
    # prometheus/common v0.47 (upstream's) rejects a leading digit: the gauge never appears there
    assert upstream_gauge_name("5xx-rate") is None
    assert upstream_gauge_name("---") is None
    # Unicode letters stay letters (unicode.IsLetter), but the legacy name rule is ASCII
    assert upstream_gauge_name("déjà-vu") is None


def test_one_gauge_per_keptnmetric_with_upstreams_help_line() -> None:
    store, states = IndexedStore(), MetricStates()
    add(store, states, "podtato", "podtatometric", 3.5)
    add(store, states, "podtato", "http-requests", 120)
    text = exposition(states).decode()
    lines = text.splitlines()
    assert "# HELP podtatometric podtatometric" in lines
    assert "# TYPE podtatometric gauge" in lines
    assert 'podtatometric{name="podtatometric",namespace="podtato"} 3.5' in lines
    assert "# HELP http_requests http-requests" in lines
    assert 'http_requests{name="http-requests",namespace="podtato"} 120.0' in lines
    # the (namespace, name) family stays
    assert 'keptn_metric_value{name="podtatometric",namespace="podtato"} 3.5' in lines
    parsed = families(text)  # Prometheus' own text parser accepts the whole exposition
    assert parsed["podtatometric"].type == "gauge"


def test_two_namespaces_never_collide() -> None:
    store, states = IndexedStore(), MetricStates()
    add(store, states, "team-a", "req-rate", 1)
    add(store, states, "team-b", "req-rate", 2)
    add(store, states, "team-b", "req.rate", 9)  # another name that normalizes alike
    text = exposition(states).decode()
    gauge = families(text)["req_rate"]
    assert sorted((s.labels["namespace"], s.labels["name"], s.value) for s in gauge.samples) == [
        ("team-a", "req-rate", 1.0),
        ("team-b", "req-rate", 2.0),
        ("team-b", "req.rate", 9.0),
    ]
    assert text.count("# HELP req_rate ") == 1 and "# HELP req_rate req-rate, req.rate" in text


def test_a_metric_without_value_shows_its_help_but_no_sample() -> None:
    store, states = IndexedStore(), MetricStates()
    add(store, states, "podtato", "pending", None)
    text = exposition(states).decode()
    assert "# HELP pending pending" in text.splitlines()
    assert families(text)["pending"].samples == []


def test_our_own_family_names_are_never_shadowed() -> None:
    store, states = IndexedStore(), MetricStates()
    add(store, states, "evil", "keptn-metric-value", 666)
    add(store, states, "evil", "keptn-metrics-fetch-errors-total", 666)
    add(store, states, "evil", "process-cpu-seconds-total", 666)
    text = exposition(states).decode()
    assert text.count("# TYPE keptn_metric_value gauge") == 1
    assert "keptn_metric_value 666" not in text and 'keptn_metric_value{name="keptn-metric-value"' in text
    assert "# HELP keptn_metrics_fetch_errors_total keptn-metrics" not in text
    assert "# HELP process_cpu_seconds_total process-cpu" not in text
    families(text)  # still one valid exposition


async def test_gauge_leaves_with_the_keptnmetric_on_the_metrics_port(aiohttp_client: Any) -> None:
    store, states = IndexedStore(), MetricStates()
    add(store, states, "podtato", "podtatometric", 4)
    client = await aiohttp_client(MetricsPortApp(store, states).build())
    text = await (await client.get("/metrics")).text()
    assert "# HELP podtatometric podtatometric" in text.splitlines()
    states.remove(ObjectKey("podtato", "podtatometric"))
    text = await (await client.get("/metrics")).text()
    assert "podtatometric" not in text
