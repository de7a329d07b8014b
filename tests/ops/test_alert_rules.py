# ruff: noqa: E501  (the series tables read best one series per line)
"""Every alert of deploy/components/prometheus-rules, unit-tested with `promtool test rules`.

Each alert has series that make it fire (with the labels and annotations an on-call engineer
sees) and series that must not: promtool evaluates the real rule file, minute by minute.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.rules import ROOT, alert_names, alerts, rule_groups_file
from tests.prometheus_server import require_prometheus

pytestmark = pytest.mark.prometheus

T = 'job="keptn-metrics",namespace="keptn-system"'  # the target labels the ServiceMonitor gives
POD_A = f'{T},instance="10.0.0.1:9999",pod="keptn-metrics-a"'
POD_B = f'{T},instance="10.0.0.2:9999",pod="keptn-metrics-b"'
# per-KeptnMetric series carry their own namespace (honorLabels keeps it over the target's)
M_A = 'job="keptn-metrics",instance="10.0.0.1:9999",pod="keptn-metrics-a"'
M_B = 'job="keptn-metrics",instance="10.0.0.2:9999",pod="keptn-metrics-b"'
TARGET = {"job": "keptn-metrics", "namespace": "keptn-system"}
A = {**TARGET, "instance": "10.0.0.1:9999", "pod": "keptn-metrics-a"}


def runbook(alert: str) -> str:
    return f"https://github.com/keptn-metrics/keptn-metrics/blob/main/docs/operations.md#{alert.lower()}"


def fires(labels: dict[str, str], summary: str, description: str, alert: str) -> dict[str, Any]:
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": description, "runbook_url": runbook(alert)},
    }


def buckets(name: str, labels: str, counts_per_minute: dict[str, int], minutes: int = 40) -> list[Any]:
    """Cumulative histogram bucket series growing by `counts_per_minute[le]` each minute."""
    return [
        {"series": f'{name}{{{labels},le="{le}"}}', "values": f"0+{n}x{minutes}"}
        for le, n in counts_per_minute.items()
    ]


LAG_BUCKETS = ("0.01", "0.05", "0.1", "0.25", "0.5", "1", "2", "5", "10", "+Inf")

# alert -> list of (case name, input series, eval time, expected alerts)
CASES: dict[str, list[tuple[str, list[dict[str, str]], str, list[dict[str, Any]]]]] = {
    "KeptnMetricsDown": [
        (
            "every target down",
            [{"series": f"up{{{POD_A}}}", "values": "0x10"}, {"series": f"up{{{POD_B}}}", "values": "0x10"}],
            "6m",
            [
                fires(
                    {"severity": "critical"},
                    "No keptn-metrics replica is being scraped successfully.",
                    "Prometheus has not scraped any keptn-metrics target for 5 minutes; "
                    "HPA and KEDA get no KeptnMetric values.",
                    "KeptnMetricsDown",
                )
            ],
        ),
        (
            "no target at all (ServiceMonitor selects nothing)",
            [{"series": 'up{job="other"}', "values": "1x10"}],
            "6m",
            [
                fires(
                    {"severity": "critical"},
                    "No keptn-metrics replica is being scraped successfully.",
                    "Prometheus has not scraped any keptn-metrics target for 5 minutes; "
                    "HPA and KEDA get no KeptnMetric values.",
                    "KeptnMetricsDown",
                )
            ],
        ),
        (
            "one replica up is enough",
            [{"series": f"up{{{POD_A}}}", "values": "0x10"}, {"series": f"up{{{POD_B}}}", "values": "1x10"}],
            "10m",
            [],
        ),
        ("down for less than 5 minutes", [{"series": f"up{{{POD_A}}}", "values": "1x5 0x10"}], "9m", []),
    ],
    "KeptnMetricsFetchErrors": [
        (
            "10% of prometheus fetches fail, datadog is healthy",
            [
                {"series": f'keptn_metrics_fetch_errors_total{{{POD_A},provider_type="prometheus"}}',
                 "values": "0+6x40"},
                {"series": f'keptn_metrics_fetch_duration_seconds_count{{{POD_A},provider_type="prometheus"}}',
                 "values": "0+60x40"},
                {"series": f'keptn_metrics_fetch_errors_total{{{POD_A},provider_type="datadog"}}',
                 "values": "0x40"},
                {"series": f'keptn_metrics_fetch_duration_seconds_count{{{POD_A},provider_type="datadog"}}',
                 "values": "0+60x40"},
            ],
            "30m",
            [
                fires(
                    {**TARGET, "provider_type": "prometheus", "severity": "warning"},
                    "Fetches from prometheus providers fail.",
                    "10% of the queries to prometheus providers failed over the last 10 minutes.",
                    "KeptnMetricsFetchErrors",
                )
            ],
        ),
        (
            "2% of fetches fail: below the 5% threshold",
            [
                {"series": f'keptn_metrics_fetch_errors_total{{{POD_A},provider_type="prometheus"}}',
                 "values": "0+1x40"},
                {"series": f'keptn_metrics_fetch_duration_seconds_count{{{POD_A},provider_type="prometheus"}}',
                 "values": "0+50x40"},
            ],
            "30m",
            [],
        ),
        (
            "failing for less than 15 minutes",
            [
                {"series": f'keptn_metrics_fetch_errors_total{{{POD_A},provider_type="prometheus"}}',
                 "values": "0x20 0+30x10"},
                {"series": f'keptn_metrics_fetch_duration_seconds_count{{{POD_A},provider_type="prometheus"}}',
                 "values": "0+60x30"},
            ],
            "30m",
            [],
        ),
    ],
    "KeptnMetricsScheduleLag": [
        (
            "fetches start between one and two intervals late",
            buckets(
                "keptn_metrics_schedule_lag_intervals_bucket",
                POD_A,
                {le: (0 if float(le) < 2 else 100) for le in LAG_BUCKETS},
            ),
            "30m",
            [
                fires(
                    {**TARGET, "severity": "warning"},
                    "Fetches start more than one fetch interval late.",
                    "The 99th percentile of the schedule lag is 2.0 fetch intervals: "
                    "the server cannot keep up with its KeptnMetrics.",
                    "KeptnMetricsScheduleLag",
                )
            ],
        ),
        (
            "fetches start within a tenth of their interval",
            buckets(
                "keptn_metrics_schedule_lag_intervals_bucket",
                POD_A,
                {le: (0 if float(le) < 0.1 else 100) for le in LAG_BUCKETS},
            ),
            "30m",
            [],
        ),
        (
            "idle: no fetches at all",
            buckets("keptn_metrics_schedule_lag_intervals_bucket", POD_A, dict.fromkeys(LAG_BUCKETS, 0)),
            "30m",
            [],
        ),
    ],
    "KeptnMetricStale": [
        (
            "a value older than its bound on one replica",
            [
                {"series": f'keptn_metric_value_age_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "100+60x10"},
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "30x10"},
                {"series": f'keptn_metric_value_age_seconds{{{M_B},namespace="apps",name="queue"}}',
                 "values": "5x10"},
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_B},namespace="apps",name="queue"}}',
                 "values": "30x10"},
            ],
            "6m",
            [
                fires(
                    {
                        "job": "keptn-metrics",
                        "instance": "10.0.0.1:9999",
                        "pod": "keptn-metrics-a",
                        "namespace": "apps",
                        "name": "queue",
                        "severity": "warning",
                    },
                    "KeptnMetric apps/queue is stale.",
                    "The value of KeptnMetric apps/queue on 10.0.0.1:9999 is older than its staleness bound; "
                    "the APIs answer 503 for it and the HPA stops scaling on it.",
                    "KeptnMetricStale",
                )
            ],
        ),
        (
            "fresh values",
            [
                {"series": f'keptn_metric_value_age_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "0+1x10"},
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "30x10"},
            ],
            "10m",
            [],
        ),
        (
            "stale for less than 5 minutes",
            [
                {"series": f'keptn_metric_value_age_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "5x6 40x4"},
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="queue"}}',
                 "values": "30x10"},
            ],
            "9m",
            [],
        ),
    ],
    "KeptnMetricNoValue": [
        (
            "a metric that never got a value, next to one that has one",
            [
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="typo"}}', "values": "30x20"},
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="queue"}}', "values": "30x20"},
                {"series": f'keptn_metric_value_age_seconds{{{M_A},namespace="apps",name="queue"}}', "values": "1x20"},
            ],
            "16m",
            [
                fires(
                    {"job": "keptn-metrics", "instance": "10.0.0.1:9999", "pod": "keptn-metrics-a",
                     "namespace": "apps", "name": "typo", "severity": "warning"},
                    "KeptnMetric apps/typo has no value.",
                    "KeptnMetric apps/typo has had no value on 10.0.0.1:9999 for 15 minutes (never fetched "
                    "successfully); the APIs answer 503 for it.",
                    "KeptnMetricNoValue",
                )
            ],
        ),
        (
            "a new metric gets its first value within minutes",
            [
                {"series": f'keptn_metric_staleness_bound_seconds{{{M_A},namespace="apps",name="new"}}', "values": "30x20"},
                {"series": f'keptn_metric_value_age_seconds{{{M_A},namespace="apps",name="new"}}', "values": "_x2 1x18"},
            ],
            "16m",
            [],
        ),
    ],
    "KeptnMetricsAPIErrors": [
        (
            "2% of requests answer 500",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="200"}}',
                 "values": "0+588x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="500"}}',
                 "values": "0+12x30"},
            ],
            "20m",
            [
                fires(
                    {**TARGET, "severity": "critical"},
                    "The metrics APIs answer with server errors.",
                    "2% of the requests to the metrics APIs failed with a 5xx other than 503.",
                    "KeptnMetricsAPIErrors",
                )
            ],
        ),
        (
            "503s (no value) are another alert",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="200"}}',
                 "values": "0+60x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="503"}}',
                 "values": "0+60x30"},
            ],
            "20m",
            [],
        ),
        (
            "0.5% of requests fail: below the 1% threshold",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="external/value",code="200"}}',
                 "values": "0+597x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="external/value",code="500"}}',
                 "values": "0+3x30"},
            ],
            "20m",
            [],
        ),
    ],
    "KeptnMetricsAPIUnavailable": [
        (
            "a quarter of HPA and KEDA reads get no value",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="200"}}',
                 "values": "0+90x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="503"}}',
                 "values": "0+15x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="keda/grpc/GetMetrics",code="14"}}',
                 "values": "0+15x30"},
            ],
            "20m",
            [
                fires(
                    {**TARGET, "severity": "warning"},
                    'The metrics APIs answer "no value" (503 / gRPC UNAVAILABLE).',
                    "25% of the requests for KeptnMetric values got no value (none yet, not finite, or stale).",
                    "KeptnMetricsAPIUnavailable",
                )
            ],
        ),
        (
            "/readyz answering 503 during a rollout does not count",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="200"}}',
                 "values": "0+60x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="health",code="503"}}',
                 "values": "0+600x30"},
            ],
            "20m",
            [],
        ),
        (
            "a few misses: below the 5% threshold",
            [
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="200"}}',
                 "values": "0+99x30"},
                {"series": f'keptn_metrics_api_requests_total{{{POD_A},route="custom/object",code="503"}}',
                 "values": "0+1x30"},
            ],
            "20m",
            [],
        ),
    ],
    "KeptnMetricsStatusWriteBudgetExhausted": [
        (
            "19 writes/s of a 20/s budget and a queue that never drains",
            [
                {"series": f'keptn_metrics_status_write_requests_total{{{POD_A},kind="status",result="ok"}}',
                 "values": "0+1080x40"},
                {"series": f'keptn_metrics_status_write_requests_total{{{POD_A},kind="event",result="ok"}}',
                 "values": "0+60x40"},
                {"series": f"keptn_metrics_status_write_budget_qps{{{POD_A}}}", "values": "20x40"},
                {"series": f"keptn_metrics_status_write_queue{{{POD_A}}}", "values": "500+10x40"},
            ],
            "30m",
            [
                fires(
                    {**A, "severity": "warning"},
                    "Status writes on 10.0.0.1:9999 use the whole --status-write-qps budget.",
                    "The status writer sends 19.0 requests/s, at its budget, and its queue has not drained "
                    "for 5 minutes: KeptnMetric .status (kubectl, the lifecycle controller) lags behind "
                    "the served values.",
                    "KeptnMetricsStatusWriteBudgetExhausted",
                )
            ],
        ),
        (
            "busy but keeping up: the queue drains",
            [
                {"series": f'keptn_metrics_status_write_requests_total{{{POD_A},kind="status",result="ok"}}',
                 "values": "0+1140x40"},
                {"series": f"keptn_metrics_status_write_budget_qps{{{POD_A}}}", "values": "20x40"},
                {"series": f"keptn_metrics_status_write_queue{{{POD_A}}}", "values": "3 0 5 0 2 0 4 0 1 0" * 1
                 + " 0x30"},
            ],
            "30m",
            [],
        ),
        (
            "a queue but far below the budget (a standby, or retries backing off)",
            [
                {"series": f'keptn_metrics_status_write_requests_total{{{POD_A},kind="status",result="error"}}',
                 "values": "0+60x40"},
                {"series": f"keptn_metrics_status_write_budget_qps{{{POD_A}}}", "values": "20x40"},
                {"series": f"keptn_metrics_status_write_queue{{{POD_A}}}", "values": "40x40"},
            ],
            "30m",
            [],
        ),
    ],
    "KeptnMetricsNoLeader": [
        (
            "both replicas campaign, neither holds the leader Lease; a shard Lease nobody owns",
            [
                {"series": f'keptn_metrics_lease_held{{{POD_A},lease="keptn-metrics-leader"}}', "values": "0x5"},
                {"series": f'keptn_metrics_lease_held{{{POD_B},lease="keptn-metrics-leader"}}', "values": "0x5"},
                {"series": f'keptn_metrics_lease_held{{{POD_A},lease="keptn-metrics-shard-3"}}', "values": "0x5"},
                {"series": f'keptn_metrics_lease_held{{{POD_B},lease="keptn-metrics-shard-1"}}', "values": "1x5"},
            ],
            "3m",
            [
                fires(
                    {**TARGET, "lease": "keptn-metrics-leader", "severity": "critical"},
                    "Nobody holds the Lease keptn-metrics-leader.",
                    "Replicas campaign for the Lease keptn-system/keptn-metrics-leader but none holds it: "
                    "the KeptnMetrics it covers are not fetched and their values go stale.",
                    "KeptnMetricsNoLeader",
                ),
                fires(
                    {**TARGET, "lease": "keptn-metrics-shard-3", "severity": "critical"},
                    "Nobody holds the Lease keptn-metrics-shard-3.",
                    "Replicas campaign for the Lease keptn-system/keptn-metrics-shard-3 but none holds it: "
                    "the KeptnMetrics it covers are not fetched and their values go stale.",
                    "KeptnMetricsNoLeader",
                ),
            ],
        ),
        (
            "one leader, one standby",
            [
                {"series": f'keptn_metrics_lease_held{{{POD_A},lease="keptn-metrics-leader"}}', "values": "1x5"},
                {"series": f'keptn_metrics_lease_held{{{POD_B},lease="keptn-metrics-leader"}}', "values": "0x5"},
            ],
            "3m",
            [],
        ),
        (
            "a handover shorter than a minute",
            [
                {"series": f'keptn_metrics_lease_held{{{POD_A},lease="keptn-metrics-leader"}}',
                 "values": "1 1 0 0 0 0"},
                {"series": f'keptn_metrics_lease_held{{{POD_B},lease="keptn-metrics-leader"}}',
                 "values": "0 0 0 1 1 1"},
            ],
            "3m",
            [],
        ),
    ],
    "KeptnMetricsCertificateExpiry": [
        (
            "3 days left: warning",  # promtool's clock starts at 0: time() at 2h is 7200
            [{"series": f'keptn_metrics_certificate_expiry_timestamp_seconds{{{POD_A},certificate="serving"}}',
              "values": f"{7200 + 3 * 86400}x120"}],
            "2h",
            [
                fires(
                    {**A, "certificate": "serving", "severity": "warning"},
                    "The serving certificate of 10.0.0.1:9999 expires in less than 7 days.",
                    "The serving certificate expires in 3d 0h 0m 0s; it should have been renewed by now.",
                    "KeptnMetricsCertificateExpiry",
                )
            ],
        ),
        (
            "an hour left: warning and critical",
            [{"series": f'keptn_metrics_certificate_expiry_timestamp_seconds{{{POD_A},certificate="client-ca"}}',
              "values": f"{7200 + 3600}x120"}],
            "2h",
            [
                fires(
                    {**A, "certificate": "client-ca", "severity": "warning"},
                    "The client-ca certificate of 10.0.0.1:9999 expires in less than 7 days.",
                    "The client-ca certificate expires in 1h 0m 0s; it should have been renewed by now.",
                    "KeptnMetricsCertificateExpiry",
                ),
                fires(
                    {**A, "certificate": "client-ca", "severity": "critical"},
                    "The client-ca certificate of 10.0.0.1:9999 expires within a day.",
                    "The client-ca certificate expires in 1h 0m 0s; after that the kube-aggregator (or this "
                    "server) rejects the TLS handshake and the metrics APIs are unavailable.",
                    "KeptnMetricsCertificateExpiry",
                ),
            ],
        ),
        (
            "30 days left",
            [{"series": f'keptn_metrics_certificate_expiry_timestamp_seconds{{{POD_A},certificate="serving"}}',
              "values": f"{30 * 86400}x120"}],
            "2h",
            [],
        ),
    ],
}  # fmt: skip


def test_every_alert_has_firing_and_quiet_cases() -> None:
    assert sorted(CASES) == alert_names()
    for alert, cases in CASES.items():
        assert any(expected for *_, expected in cases), f"{alert}: no case where it fires"
        assert any(not expected for *_, expected in cases), f"{alert}: no case where it stays quiet"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    runbook_doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["runbook_url"] == runbook(rule["alert"])
        assert f"\n### {rule['alert']}\n" in runbook_doc, (
            f"docs/operations.md: no runbook for {rule['alert']}"
        )


def test_the_rule_file_is_valid(tmp_path: Path) -> None:
    require_prometheus()
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_groups_file(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert(alert: str, tmp_path: Path) -> None:
    require_prometheus()
    rules = rule_groups_file(tmp_path)
    tests = [
        {
            "name": f"{alert}: {case}",
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
        }
        for case, series, at, expected in CASES[alert]
    ]
    spec = tmp_path / "tests.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["promtool", "test", "rules", spec.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
