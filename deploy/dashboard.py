#!/usr/bin/env python3
"""The Grafana dashboard for keptn-metrics, generated so that every panel is built the same way.

    python deploy/dashboard.py           # write deploy/grafana/keptn-metrics.json and its ConfigMap
    python deploy/dashboard.py --check   # exit 1 if the committed files are stale

Outputs:
- ``deploy/grafana/keptn-metrics.json``: import it in Grafana (Dashboards > New > Import);
- ``deploy/components/grafana-dashboard/configmap.yaml``: the same JSON in a ConfigMap labelled
  ``grafana_dashboard: "1"``, which Grafana's dashboard sidecar (kube-prometheus-stack, the
  Grafana chart) loads.

Every PromQL expression here is run against a real Prometheus scraping a running server by
tests/ops/test_dashboard_live.py, with the template variables substituted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent
JSON_FILE = DEPLOY / "grafana" / "keptn-metrics.json"
CONFIGMAP_FILE = DEPLOY / "components" / "grafana-dashboard" / "configmap.yaml"
UID = "keptn-metrics"
DS = {"type": "prometheus", "uid": "${datasource}"}

#: the replica filter every server-side panel uses
SEL = 'job="$job", instance=~"$instance"'
#: ... and the per-KeptnMetric filter
MSEL = SEL + ', namespace=~"$namespace", name=~"$name"'
RATE = "[$__rate_interval]"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if instant:
        out.update(instant=True, range=False, format="table")
    return out


#: one row per (replica, KeptnMetric): the three instant queries joined on their labels
TABLE_TRANSFORMATIONS = [
    {"id": "merge", "options": {}},
    {
        "id": "organize",
        "options": {
            "excludeByName": {"Time": True, "__name__": True},
            "renameByName": {"Value #A": "value", "Value #B": "age (s)", "Value #C": "last fetch failed"},
        },
    },
]


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    width: int = 8,
    height: int = 8,
    **options: Any,
) -> dict[str, Any]:
    refs = "ABCDEFGH"
    transformations = options.pop("transformations", [])
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit, **options.pop("defaults", {})}, "overrides": []},
        "options": options,
        "targets": [{**t, "refId": refs[i]} for i, t in enumerate(targets)],
        "transformations": transformations,
    }


def timeseries(title: str, description: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return panel(
        "timeseries",
        title,
        description,
        targets,
        legend={"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        tooltip={"mode": "multi", "sort": "desc"},
        **kw,
    )


def stat(title: str, description: str, expr: str, legend: str = "", **kw: Any) -> dict[str, Any]:
    return panel(
        "stat",
        title,
        description,
        [target(expr, legend)],
        width=kw.pop("width", 4),
        height=4,
        reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False},
        colorMode="value",
        graphMode="area",
        **kw,
    )


def quantiles(metric: str, by: str, legend: str) -> list[dict[str, Any]]:
    return [
        target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}{RATE})))",
            f"p{int(q * 100)} {legend}",
        )
        for q in (0.5, 0.99)
    ]


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
    }
    if multi:
        out["allValue"] = ".*"
    return out


def sections() -> list[tuple[str, list[dict[str, Any]]]]:
    api = "keptn_metrics_api_requests_total"
    writes = "keptn_metrics_status_write_requests_total"
    return [
        (
            "Overview",
            [
                stat(
                    "Replicas up",
                    "Targets of this job Prometheus scrapes successfully.",
                    'sum(up{job="$job"})',
                ),
                stat(
                    "Lease holders",
                    "Replicas holding each Lease (leader, and shards once sharding is on): 1 is healthy, "
                    "0 fires KeptnMetricsNoLeader.",
                    'sum by (lease) (keptn_metrics_lease_held{job="$job"})',
                    "{{lease}}",
                ),
                stat(
                    "KeptnMetrics",
                    "KeptnMetrics the busiest replica knows.",
                    f"max(count by (instance) (keptn_metric_staleness_bound_seconds{{{SEL}}}))",
                ),
                stat(
                    "Failing",
                    "KeptnMetrics whose last fetch failed (on the replica that sees most of them).",
                    f"max(sum by (instance) (keptn_metric_error{{{SEL}}}))",
                ),
                stat(
                    "Stale",
                    "KeptnMetrics older than their staleness bound: the APIs answer 503 for them.",
                    f"max(count by (instance) (keptn_metric_value_age_seconds{{{SEL}}}"
                    f" > keptn_metric_staleness_bound_seconds{{{SEL}}})) or vector(0)",
                ),
                stat(
                    "API requests/s",
                    "Requests to the metrics APIs (custom, external, KEDA REST and gRPC), all replicas.",
                    f'sum(rate({api}{{{SEL}, route!="health"}}{RATE}))',
                    unit="reqps",
                ),
            ],
        ),
        (
            "Fetches by provider type",
            [
                timeseries(
                    "Fetch rate",
                    "Provider queries per second (shared identical queries count once).",
                    [
                        target(
                            "sum by (provider_type) "
                            f"(rate(keptn_metrics_fetch_duration_seconds_count{{{SEL}}}{RATE}))",
                            "{{provider_type}}",
                        )
                    ],
                    unit="ops",
                ),
                timeseries(
                    "Fetch errors",
                    "Failed provider queries per second, and the failing fraction (KeptnMetricsFetchErrors "
                    "fires above 5% for 15 minutes).",
                    [
                        target(
                            f"sum by (provider_type) (rate(keptn_metrics_fetch_errors_total{{{SEL}}}{RATE}))",
                            "{{provider_type}} errors/s",
                        ),
                        target(
                            f"sum by (provider_type) (rate(keptn_metrics_fetch_errors_total{{{SEL}}}{RATE}))"
                            f" / sum by (provider_type) "
                            f"(rate(keptn_metrics_fetch_duration_seconds_count{{{SEL}}}{RATE}))",
                            "{{provider_type}} ratio",
                        ),
                    ],
                ),
                timeseries(
                    "Fetch latency",
                    "Duration of provider queries (successes and failures).",
                    quantiles("keptn_metrics_fetch_duration_seconds", "provider_type", "{{provider_type}}"),
                    unit="s",
                ),
            ],
        ),
        (
            "Scheduling and freshness",
            [
                timeseries(
                    "Schedule lag",
                    "How late fetches start compared to their due time.",
                    [
                        target(
                            f"histogram_quantile({q}, sum by (le) "
                            f"(rate(keptn_metrics_schedule_lag_seconds_bucket{{{SEL}}}{RATE})))",
                            f"p{int(q * 100)}",
                        )
                        for q in (0.5, 0.99)
                    ],
                    unit="s",
                ),
                timeseries(
                    "Schedule lag in fetch intervals",
                    "The same lag in units of each metric's fetchIntervalSeconds; KeptnMetricsScheduleLag "
                    "fires when p99 stays above 1.",
                    [
                        target(
                            "histogram_quantile(0.99, sum by (instance, le) "
                            f"(rate(keptn_metrics_schedule_lag_intervals_bucket{{{SEL}}}{RATE})))",
                            "p99 {{instance}}",
                        )
                    ],
                ),
                timeseries(
                    "Value age",
                    "Age of the served values; age / bound reaching 1 means 503 (KeptnMetricStale).",
                    [
                        target(f"max(keptn_metric_value_age_seconds{{{SEL}}})", "oldest"),
                        target(f"quantile(0.5, keptn_metric_value_age_seconds{{{SEL}}})", "median"),
                        target(
                            f"max(keptn_metric_value_age_seconds{{{SEL}}}"
                            f" / keptn_metric_staleness_bound_seconds{{{SEL}}})",
                            "max age / bound",
                        ),
                    ],
                    unit="s",
                ),
            ],
        ),
        (
            "Metrics APIs by route",
            [
                timeseries(
                    "Request rate",
                    "Requests per second by route (custom/*, external/*, keda/rest, keda/grpc/*, "
                    "discovery, ...).",
                    [target(f"sum by (route) (rate({api}{{{SEL}}}{RATE}))", "{{route}}")],
                    unit="reqps",
                ),
                timeseries(
                    "Status codes",
                    "Requests per second by route and code (HTTP codes; gRPC status numbers on keda/grpc/*: "
                    "0 OK, 5 NOT_FOUND, 14 UNAVAILABLE).",
                    [target(f"sum by (route, code) (rate({api}{{{SEL}}}{RATE}))", "{{route}} {{code}}")],
                    unit="reqps",
                ),
                timeseries(
                    "Latency",
                    "Time to answer, by route.",
                    quantiles("keptn_metrics_api_request_duration_seconds", "route", "{{route}}"),
                    unit="s",
                ),
                timeseries(
                    "Errors and no-value answers",
                    "Fraction of requests answered 5xx or gRPC UNAVAILABLE, by route (503: no value, "
                    "KeptnMetricsAPIUnavailable; other 5xx: KeptnMetricsAPIErrors).",
                    [
                        target(
                            f'sum by (route) (rate({api}{{{SEL}, code=~"5..|14"}}{RATE}))'
                            f" / sum by (route) (rate({api}{{{SEL}}}{RATE}))",
                            "{{route}}",
                        )
                    ],
                    unit="percentunit",
                    width=24,
                ),
            ],
        ),
        (
            "Status writes and leadership (Kubernetes mode)",
            [
                timeseries(
                    "Status write requests",
                    "Status patches and Events the leader sends, by result.",
                    [target(f"sum by (kind, result) (rate({writes}{{{SEL}}}{RATE}))", "{{kind}} {{result}}")],
                    unit="reqps",
                ),
                timeseries(
                    "Write budget",
                    "Requests per second against --status-write-qps; a queue that never drains at the budget "
                    "fires KeptnMetricsStatusWriteBudgetExhausted.",
                    [
                        target(f"sum by (instance) (rate({writes}{{{SEL}}}{RATE}))", "used {{instance}}"),
                        target(f"keptn_metrics_status_write_budget_qps{{{SEL}}}", "budget {{instance}}"),
                        target(f"keptn_metrics_status_write_queue{{{SEL}}}", "queued {{instance}}"),
                    ],
                ),
                timeseries(
                    "Leases held",
                    "1 while a replica holds a Lease, 0 while it campaigns.",
                    [target(f"keptn_metrics_lease_held{{{SEL}}}", "{{instance}} {{lease}}")],
                ),
            ],
        ),
        (
            "Process",
            [
                timeseries(
                    "CPU",
                    "CPU seconds per second by replica.",
                    [target(f"rate(process_cpu_seconds_total{{{SEL}}}{RATE})", "{{instance}}")],
                ),
                timeseries(
                    "Memory",
                    "Resident memory by replica.",
                    [target(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
                    unit="bytes",
                ),
                timeseries(
                    "Certificate expiry",
                    "Days until the serving certificate and the client CA bundles expire.",
                    [
                        target(
                            f"(keptn_metrics_certificate_expiry_timestamp_seconds{{{SEL}}} - time()) / 86400",
                            "{{instance}} {{certificate}}",
                        )
                    ],
                    unit="d",
                ),
            ],
        ),
        (
            "KeptnMetrics (select namespace and name above)",
            [
                timeseries(
                    "Value",
                    "The last good value of each selected KeptnMetric.",
                    [target(f"keptn_metric_value{{{MSEL}}}", "{{namespace}}/{{name}} {{instance}}")],
                    width=12,
                ),
                timeseries(
                    "Age and staleness bound",
                    "Seconds since each selected value was fetched, against the age past which it is "
                    "not served.",
                    [
                        target(
                            f"keptn_metric_value_age_seconds{{{MSEL}}}",
                            "age {{namespace}}/{{name}} {{instance}}",
                        ),
                        target(
                            f"max by (namespace, name) (keptn_metric_staleness_bound_seconds{{{MSEL}}})",
                            "bound {{namespace}}/{{name}}",
                        ),
                    ],
                    unit="s",
                    width=12,
                ),
                panel(
                    "table",
                    "Selected KeptnMetrics now",
                    "Value, age and whether the last fetch failed (kubectl get keptnmetrics -o wide "
                    "shows the error message).",
                    [
                        target(f"keptn_metric_value{{{MSEL}}}", instant=True),
                        target(f"keptn_metric_value_age_seconds{{{MSEL}}}", instant=True),
                        target(f"keptn_metric_error{{{MSEL}}}", instant=True),
                    ],
                    width=24,
                    height=10,
                    showHeader=True,
                    transformations=TABLE_TRANSFORMATIONS,
                ),
            ],
        ),
    ]


def layout(items: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Place rows and panels left to right, top to bottom, on Grafana's 24-column grid."""
    out: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for title, members in items:
        r = row(title)
        r["gridPos"].update(x=0, y=y)
        r["id"] = next_id
        next_id += 1
        out.append(r)
        y += 1
        x, line_height = 0, 0
        for p in members:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > 24:
                x, y, line_height = 0, y + line_height, 0
            p["gridPos"].update(x=x, y=y)
            p["id"] = next_id
            next_id += 1
            out.append(p)
            x += w
            line_height = max(line_height, h)
        y += line_height
    return out


def dashboard() -> dict[str, Any]:
    counter = "keptn_metrics_schedule_lag_seconds_count"  # always exported, by every replica
    per_metric = "keptn_metric_staleness_bound_seconds"  # one series per KeptnMetric
    return {
        "uid": UID,
        "title": "Keptn metrics server",
        "description": "keptn-metrics: fetches by provider type, schedule lag, value age, the metrics APIs, "
        "status writes, leases, and each KeptnMetric's value and age. Runbooks: docs/operations.md.",
        "tags": ["keptn", "keptn-metrics", "autoscaling"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "version": 1,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("job", "Job", f"label_values({counter}, job)", multi=False),
                variable("instance", "Replica", f'label_values({counter}{{job="$job"}}, instance)'),
                variable("namespace", "Namespace", f'label_values({per_metric}{{job="$job"}}, namespace)'),
                variable(
                    "name",
                    "KeptnMetric",
                    f'label_values({per_metric}{{job="$job", namespace=~"$namespace"}}, name)',
                ),
            ]
        },
        "panels": layout(sections()),
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def configmap_yaml() -> str:
    body = "".join(f"    {line}\n" if line else "\n" for line in dashboard_json().splitlines())
    return (
        "# Generated by deploy/dashboard.py; do not edit by hand.\n"
        '# Grafana\'s dashboard sidecar loads ConfigMaps labelled grafana_dashboard: "1" (it must\n'
        "# watch this namespace, or all: sidecar.dashboards.searchNamespace in the Grafana chart).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: keptn-metrics-dashboard\n"
        "  namespace: keptn-system\n"
        "  labels:\n"
        "    app.kubernetes.io/name: keptn-metrics\n"
        "    app.kubernetes.io/part-of: keptn-metrics\n"
        '    grafana_dashboard: "1"\n'
        "data:\n"
        "  keptn-metrics.json: |\n" + body
    )


def expected_files() -> dict[Path, str]:
    return {JSON_FILE: dashboard_json(), CONFIGMAP_FILE: configmap_yaml()}


def main(argv: list[str]) -> int:
    files = expected_files()
    if "--check" in argv:
        stale = [str(p.relative_to(DEPLOY)) for p, t in files.items() if not p.exists() or p.read_text() != t]
        if stale:
            print("dashboard is stale, run python deploy/dashboard.py:", ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
