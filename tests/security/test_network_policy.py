"""The NetworkPolicy admits 9998/9999 only from selected namespaces (issue 10, item 3: it
opened both ports to every pod)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_spec = importlib.util.spec_from_file_location("render", DEPLOY / "render.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def client_rule(values: dict) -> dict:
    policy = next(
        d for d in render.render_chart(values, namespace="keptn-system") if d["kind"] == "NetworkPolicy"
    )
    ingress = policy["spec"]["ingress"]
    (rule,) = [r for r in ingress if any("namespaceSelector" in p for p in r.get("from", []))]
    return rule


def test_default_admits_keda_and_monitoring_only() -> None:
    rule = client_rule({})
    assert {p["port"] for p in rule["ports"]} == {9998, 9999}
    (expr,) = rule["from"][0]["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["keda", "monitoring"]}


def test_chart_value_lists_the_namespaces() -> None:
    rule = client_rule({"networkPolicy": {"clientNamespaces": ["keda-system"]}})
    (expr,) = rule["from"][0]["namespaceSelector"]["matchExpressions"]
    assert expr["values"] == ["keda-system"]


def test_chart_value_selects_the_namespaces() -> None:
    selector = {"matchLabels": {"metrics.keptn.sh/client": "true"}}
    rule = client_rule({"networkPolicy": {"enabled": True, "clientNamespaceSelector": selector}})
    assert rule["from"] == [{"namespaceSelector": selector}]
