"""The optional monitoring components: ServiceMonitor (+ scraper RBAC), PrometheusRule, Grafana
dashboard ConfigMap, scrape annotations; kustomize and the Helm chart agree for each toggle.

prometheus-operator's CRDs are not vendored: the fields we use are checked against a schema
written from its v1 API (monitoring.coreos.com_servicemonitors / _prometheusrules).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from tests.ops.rules import DASHBOARD_FILE, ROOT, dashboard, panels

DEPLOY = ROOT / "deploy"
COMPONENTS = DEPLOY / "components"
HAS_KUBECTL = shutil.which("kubectl") is not None
MONITORING_VALUES = {
    "namespace": {"create": True},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_ops_{name}", DEPLOY / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


render = _module("render")
dashboard_gen = _module("dashboard")

SECRET_KEY_SELECTOR = {
    "type": "object",
    "required": ["name", "key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}},
    "additionalProperties": False,
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": SECRET_KEY_SELECTOR,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "for", "labels", "annotations"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": DURATION,
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description", "runbook_url"],
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def built(path: Path) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return render.by_key(render.kustomize_build(path))


def one(docs: dict[tuple[str, str, str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for (_, k, _, n), d in docs.items() if k == kind and n == name]
    return found


MONITORING = built(DEPLOY / "overlays" / "monitoring")


def test_dashboard_is_generated_and_fresh() -> None:
    assert dashboard_gen.main(["--check"]) == 0, "run python deploy/dashboard.py"


def test_service_monitor_scrapes_the_metrics_port_with_a_token_allowed_to_get_metrics() -> None:
    monitor = one(MONITORING, "ServiceMonitor", "keptn-metrics")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    service = one(MONITORING, "Service", "keptn-metrics")
    deployment = one(MONITORING, "Deployment", "keptn-metrics")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "keptn-system"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container_port = next(p for p in container["ports"] if p["name"] == port["targetPort"])
    assert f"--metrics-port={container_port['containerPort']}" in container["args"]
    assert (endpoint["path"], endpoint["scheme"], endpoint["honorLabels"]) == ("/metrics", "http", True)

    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    secret = one(MONITORING, "Secret", credentials["name"])
    assert secret["type"] == "kubernetes.io/service-account-token" and credentials["key"] == "token"
    account = one(
        MONITORING, "ServiceAccount", secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    )
    assert (
        account["metadata"]["namespace"]
        == secret["metadata"]["namespace"]
        == monitor["metadata"]["namespace"]
    )
    assert account["automountServiceAccountToken"] is False
    binding = one(MONITORING, "ClusterRoleBinding", "keptn-metrics:metrics-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "keptn-system"}
    ]
    role = one(MONITORING, "ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]  # nothing else


def test_prometheus_rule_is_well_formed() -> None:
    rule = one(MONITORING, "PrometheusRule", "keptn-metrics")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    assert rule["metadata"]["namespace"] == "keptn-system"
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert 'job="keptn-metrics"' in alert["expr"], f"{alert['alert']} must select our job"


def test_dashboard_configmap_carries_the_dashboard_json() -> None:
    configmap = one(MONITORING, "ConfigMap", "keptn-metrics-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["keptn-metrics.json"]) == json.loads(DASHBOARD_FILE.read_text())
    board = dashboard()
    assert board["uid"] == "keptn-metrics"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for p in panels(board):
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p["description"], p["title"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "namespace", "name"]


def test_monitoring_objects_are_namespaced_with_the_server_or_cluster_scoped() -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "APIService",
        "CustomResourceDefinition",
    }
    for (_, kind, namespace, name), _doc in MONITORING.items():
        if kind not in cluster_scoped:
            assert namespace in ("keptn-system", "kube-system"), (kind, name)


def test_chart_monitoring_toggles_equal_the_monitoring_overlay() -> None:
    rendered = render.by_key(render.render_chart(MONITORING_VALUES))
    assert set(rendered) == set(MONITORING)
    for key, doc in MONITORING.items():
        assert rendered[key] == doc, key


def test_chart_monitoring_values() -> None:
    docs = render.render_chart(
        {
            "serviceMonitor": {
                "enabled": True,
                "interval": "15s",
                "labels": {"release": "kube-prometheus-stack"},
            },
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "jobSelector": 'job="kubernetes-pods", app_kubernetes_io_name="keptn-metrics"',
            },
        },
        namespace="observability",
    )
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/name"] == "keptn-metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert monitor["metadata"]["namespace"] == "observability"
    binding = next(
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "keptn-metrics:metrics-reader"
    )
    assert binding["subjects"][0]["namespace"] == "observability"
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all('{job="kubernetes-pods", app_kubernetes_io_name="keptn-metrics"' in e for e in exprs)
    assert not any('job="keptn-metrics"' in e for e in exprs)
    fetch = next(
        r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "KeptnMetricsFetchErrors"
    )
    assert fetch["annotations"]["summary"] == "Fetches from {{ $labels.provider_type }} providers fail."
    assert not any(d["kind"] == "ConfigMap" for d in docs)  # grafanaDashboard stays off


def test_chart_defaults_render_no_monitoring_objects() -> None:
    kinds = {d["kind"] for d in render.render_chart()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Secret"}
    deployment = next(d for d in render.render_chart() if d["kind"] == "Deployment")
    assert "annotations" not in deployment["spec"]["template"]["metadata"]


def test_chart_scrape_annotations_point_at_the_metrics_port() -> None:
    docs = render.render_chart({"prometheusScrapeAnnotations": {"enabled": True}})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(metrics["containerPort"]),
        "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "http",
    }
    readers = [
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "keptn-metrics:metrics-reader"
    ]
    assert len(readers) == 1
    both = render.render_chart(
        {"prometheusScrapeAnnotations": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    )
    names = [d["metadata"]["name"] for d in both if d["kind"] == "ClusterRole"]
    assert names.count("keptn-metrics:metrics-reader") == 1  # one ClusterRole, whichever way it is scraped


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl kustomize for the component's patch")
def test_chart_scrape_annotations_equal_the_component(tmp_path: Path) -> None:
    copy_of_deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_of_deploy, ignore=shutil.ignore_patterns("helm", "__pycache__"))
    overlay = copy_of_deploy / "overlays" / "scrape-annotations"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources:\n- ../../default\ncomponents:\n- ../../components/prometheus-annotations\n"
    )
    rendered = render.by_key(
        render.render_chart({"namespace": {"create": True}, "prometheusScrapeAnnotations": {"enabled": True}})
    )
    kustomized = built(overlay)
    assert set(rendered) == set(kustomized)
    for key, doc in kustomized.items():
        assert rendered[key] == doc, key


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl kustomize")
def test_components_build_with_real_kustomize_and_the_fallback_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback used without kubectl handles the resources-only monitoring components the same way."""
    real = built(DEPLOY / "overlays" / "monitoring")
    monkeypatch.setattr(render.shutil, "which", lambda *_args, **_kwargs: None)
    assert built(DEPLOY / "overlays" / "monitoring") == real
