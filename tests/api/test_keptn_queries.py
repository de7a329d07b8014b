"""Keptn's documented custom-metrics queries work unchanged (issue 9, item 4).

Upstream's adapter (metrics-operator/cmd/metrics/adapter/provider) lists every KeptnMetric
matching `labelSelector` for a wildcard object whatever the metric segment, answers an
Object request whatever metric name it names, and gives each item
`metric.selector = {matchLabels: <the KeptnMetric's labels>}`. Unlike upstream, a wildcard
never reaches into another namespace, and every item keeps our authorization and staleness rules.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import KubeReviews, World

CUSTOM = "/apis/custom.metrics.k8s.io"
DOCS_RESOURCE = "keptnmetrics.metrics.sh"  # the spelling Keptn's docs use


@pytest.fixture
def shop(world: World) -> World:
    world.add("shop", "frontend-rps", 12, labels={"app": "frontend", "team": "web"})
    world.add("shop", "frontend-latency", 0.25, labels={"app": "frontend"})
    world.add("shop", "backend-rps", 40, labels={"app": "backend"})
    world.add("shop", "unlabelled", 3)
    world.add("rival", "frontend-rps", 999, labels={"app": "frontend"})  # another tenant
    return world


def described(data: dict) -> list[tuple[str, str]]:
    return [(i["describedObject"]["namespace"], i["describedObject"]["name"]) for i in data["items"]]


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_keptn_docs_query_lists_matching_metrics_of_the_namespace(shop, start, version):
    api = await start()
    # exactly the form of Keptn's docs: kubectl sends the selector percent-encoded
    path = f"{CUSTOM}/{version}/namespaces/shop/{DOCS_RESOURCE}/*/*?labelSelector=app%3Dfrontend"
    status, data, resp = await api.get(path)
    assert status == 200, data
    assert resp.headers["Content-Type"] == "application/json"
    assert data["kind"] == "MetricValueList" and data["apiVersion"] == f"custom.metrics.k8s.io/{version}"
    assert described(data) == [("shop", "frontend-latency"), ("shop", "frontend-rps")]
    assert [i["value"] for i in data["items"]] == ["250m", "12"]


@pytest.mark.parametrize("star", ["*", "%2A", "%2a"])
@pytest.mark.parametrize("metric", ["*", "%2A", "frontend-rps", "anything"])
async def test_wildcard_object_with_any_metric_segment(shop, start, star, metric):
    api = await start()
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/{star}/{metric}")
    assert status == 200, data
    assert described(data) == [
        ("shop", "backend-rps"),
        ("shop", "frontend-latency"),
        ("shop", "frontend-rps"),
        ("shop", "unlabelled"),
    ]


async def test_wildcard_never_lists_another_namespace(shop, start):
    api = await start()
    for path in (
        f"/namespaces/rival/{DOCS_RESOURCE}/*/*",
        f"/namespaces/rival/{DOCS_RESOURCE}/*/backend-rps",
    ):
        status, data, _ = await api.get(f"{CUSTOM}/v1beta2{path}?labelSelector=app%3Dfrontend")
        assert status == 200 and described(data) == [("rival", "frontend-rps")]
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/nobody/{DOCS_RESOURCE}/*/*")
    assert status == 200 and data["items"] == []


async def test_wildcard_items_name_their_metric(shop, start):
    api = await start()
    base = f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/*"
    _, data, _ = await api.get(f"{base}/*?labelSelector=app%3Dfrontend")
    assert [i["metric"]["name"] for i in data["items"]] == ["frontend-latency", "frontend-rps"]
    _, data, _ = await api.get(f"{base}/load?labelSelector=app%3Dfrontend")
    assert [i["metric"]["name"] for i in data["items"]] == ["load", "load"]
    _, data, _ = await api.get(f"{CUSTOM}/v1beta1/namespaces/shop/{DOCS_RESOURCE}/*/*?labelSelector=team")
    assert [i["metricName"] for i in data["items"]] == ["frontend-rps"]


async def test_items_carry_the_objects_labels_as_selector(shop, start):
    api = await start()
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/*/*")
    assert {i["describedObject"]["name"]: i["metric"]["selector"] for i in data["items"]} == {
        "backend-rps": {"matchLabels": {"app": "backend"}},
        "frontend-latency": {"matchLabels": {"app": "frontend"}},
        "frontend-rps": {"matchLabels": {"app": "frontend", "team": "web"}},
        "unlabelled": {},
    }
    _, data, _ = await api.get(f"{CUSTOM}/v1beta1/namespaces/shop/{DOCS_RESOURCE}/frontend-rps/frontend-rps")
    assert data["items"][0]["selector"] == {"matchLabels": {"app": "frontend", "team": "web"}}


async def test_metric_label_selector_replaces_the_labels_selector(shop, start):
    api = await start()
    path = f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/frontend-rps/frontend-rps"
    _, data, _ = await api.get(path + "?metricLabelSelector=team%3Dweb")
    assert data["items"][0]["metric"]["selector"] == {"matchLabels": {"team": "web"}}


async def test_object_request_with_another_metric_name(shop, start):
    """An HPA whose metric.name differs from the KeptnMetric's name still gets its value."""
    api = await start()
    path = f"{CUSTOM}/v1beta2/namespaces/shop/keptnmetrics.metrics.keptn.sh/frontend-rps/rps"
    status, data, _ = await api.get(path)
    assert status == 200, data
    (item,) = data["items"]
    assert item["metric"] == {"name": "rps", "selector": {"matchLabels": {"app": "frontend", "team": "web"}}}
    assert item["describedObject"]["name"] == "frontend-rps" and item["value"] == "12"
    status, data, _ = await api.get(path.replace("frontend-rps/rps", "missing/rps"))
    assert status == 404 and data["reason"] == "NotFound"


async def test_wildcard_authorizes_name_star_and_a_denial_stands(shop, start, kube: KubeReviews):
    def policy(spec: dict) -> tuple[bool, str]:
        attrs = spec.get("resourceAttributes") or {}
        return (attrs.get("name") != "*", "wildcards denied")

    kube.policy = policy
    api = await start("--authorization-mode", "Webhook")
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/*/*?labelSelector=app")
    assert status == 403 and data["reason"] == "Forbidden"
    assert kube.sars[-1]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "get",
        "group": "custom.metrics.k8s.io",
        "version": "v1beta2",
        "resource": "keptnmetrics.metrics.keptn.sh",  # canonical, whatever the path spelled
        "subresource": "*",
        "name": "*",
    }
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/%2A/%2A")
    assert status == 403
    assert kube.sars[-1]["resourceAttributes"]["name"] == "*"
    # a named object is a different authorization question, allowed here
    status, _, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/backend-rps/x")
    assert status == 200


async def test_wildcard_leaves_out_values_that_may_not_be_served(world: World, start):
    world.add("shop", "fresh", 1, labels={"app": "frontend"})
    world.add("shop", "stale", 2, labels={"app": "frontend"}, interval=10, age=31)
    world.add("shop", "pending", None, labels={"app": "frontend"}, error="connection refused")
    api = await start()
    status, data, _ = await api.get(
        f"{CUSTOM}/v1beta2/namespaces/shop/{DOCS_RESOURCE}/*/*?labelSelector=app%3Dfrontend"
    )
    assert status == 200 and described(data) == [("shop", "fresh")]
