"""Every route of custom.metrics.k8s.io (both versions) and external.metrics.k8s.io, byte by byte."""

from __future__ import annotations

import math

import orjson
import pytest

from metrics_server.model import ObjectKey, parse_metric
from metrics_server.state import rfc3339
from tests.api.conftest import World, metric_doc

CUSTOM = "/apis/custom.metrics.k8s.io"
EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1"
RES = "keptnmetrics.metrics.keptn.sh"


@pytest.fixture
async def api(world: World, start):
    world.add("shop", "cpu", 1.5, labels={"app": "web", "tier": "front"}, age=2)
    world.add(
        "shop",
        "rps",
        1500,
        labels={"app": "api"},
        age=3,
        rng={"interval": "5m", "step": "1m", "aggregation": "max"},
    )
    world.add("other", "cpu", 99, labels={"app": "web"})
    return await start()


async def test_object_v1beta2_exact_bytes(api, world: World):
    status, _, resp = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu")
    assert status == 200
    assert resp.headers["Content-Type"] == "application/json"
    ts = rfc3339(world.now - 2)
    expected = (
        '{"kind":"MetricValueList","apiVersion":"custom.metrics.k8s.io/v1beta2","metadata":{},"items":['
        '{"describedObject":{"kind":"KeptnMetric","namespace":"shop","name":"cpu","apiVersion":"metrics.keptn.sh/v1"},'
        '"metric":{"name":"cpu","selector":{"matchLabels":{"app":"web","tier":"front"}}},'
        f'"timestamp":"{ts}","value":"1500m"}}]}}'
    )
    assert resp._body.decode() == expected


async def test_object_v1beta1_exact_bytes(api, world: World):
    status, _, resp = await api.get(f"{CUSTOM}/v1beta1/namespaces/shop/{RES}/rps/rps")
    assert status == 200
    ts = rfc3339(world.now - 3)
    expected = (
        '{"kind":"MetricValueList","apiVersion":"custom.metrics.k8s.io/v1beta1","metadata":{},"items":['
        '{"describedObject":{"kind":"KeptnMetric","namespace":"shop","name":"rps","apiVersion":"metrics.keptn.sh/v1"},'
        f'"metricName":"rps","timestamp":"{ts}","window":300,"value":"1500",'
        '"selector":{"matchLabels":{"app":"api"}}}]}'
    )
    assert resp._body.decode() == expected


async def test_window_seconds_v1beta2(api):
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/rps/rps")
    assert data["items"][0]["windowSeconds"] == 300


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
@pytest.mark.parametrize("resource", [RES, "keptnmetrics.metrics.sh", "keptnmetrics"])
async def test_both_resource_spellings_and_versions(api, version, resource):
    status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/shop/{resource}/cpu/cpu")
    assert status == 200, data
    assert data["apiVersion"] == f"custom.metrics.k8s.io/{version}"
    assert [i["value"] for i in data["items"]] == ["1500m"]


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
@pytest.mark.parametrize("star", ["*", "%2A", "%2a"])
async def test_wildcard_stays_in_namespace(api, version, star):
    def seen(data):
        return [(i["describedObject"]["namespace"], i["describedObject"]["name"]) for i in data["items"]]

    for metric in ("cpu", star):
        status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/shop/{RES}/{star}/{metric}")
        assert status == 200
        assert seen(data) == [("shop", "cpu"), ("shop", "rps")]
        status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/other/{RES}/{star}/{metric}")
        assert seen(data) == [("other", "cpu")]
        status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/empty/{RES}/{star}/{metric}")
        assert status == 200 and data["items"] == []


async def test_cluster_wildcard_lists_every_namespace(api):
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/{RES}/*/cpu")
    assert status == 200
    assert [(i["describedObject"]["namespace"], i["describedObject"]["name"]) for i in data["items"]] == [
        ("other", "cpu"),
        ("shop", "cpu"),
        ("shop", "rps"),
    ]


async def test_cluster_scoped_named_object_is_404(api):
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/{RES}/cpu/cpu")
    assert status == 404 and data["reason"] == "NotFound" and "namespaced" in data["message"]


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_namespace_metric_routes(api, version):
    status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/shop/metrics/cpu")
    assert status == 200
    assert data["items"][0]["describedObject"] == {"kind": "Namespace", "name": "shop", "apiVersion": "/v1"}
    status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/shop/cpu")
    assert status == 200 and len(data["items"]) == 1
    status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/*/cpu")
    assert status == 200 and [i["describedObject"]["name"] for i in data["items"]] == ["other", "shop"]


async def test_label_selector_filters_described_objects(api):
    url = f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/*/cpu"
    for sel, names in [
        ("app=web", ["cpu"]),
        ("app=api", ["rps"]),
        ("app=db", []),
        ("app in (web,api),tier", ["cpu"]),
        ("!tier", ["rps"]),
        ("tier notin (back)", ["cpu", "rps"]),
        ("app!=web", ["rps"]),
        ("missing!=x", ["cpu", "rps"]),
    ]:
        status, data, _ = await api.get(url, params={"labelSelector": sel})
        assert status == 200, (sel, data)
        assert [i["describedObject"]["name"] for i in data["items"]] == names, sel
    status, data, _ = await api.get(
        f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu", params={"labelSelector": "app=api"}
    )
    assert status == 404


async def test_metric_label_selector_is_echoed(api):
    url = f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu"
    status, data, _ = await api.get(url, params={"metricLabelSelector": "app=web,tier in (front)"})
    assert status == 200
    assert data["items"][0]["metric"]["selector"] == {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
    }
    status, data, _ = await api.get(url.replace("v1beta2", "v1beta1"), params={"metricLabelSelector": "app"})
    assert data["items"][0]["selector"] == {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    status, data, _ = await api.get(url, params={"metricLabelSelector": "app=nope"})
    assert status == 404


@pytest.mark.parametrize("sel", ["app in web", "=x", "a=b c", "Bad Key=1", "app=" + "x" * 70, "a in ()"])
async def test_bad_selector_is_400(api, sel):
    for param in ("labelSelector", "metricLabelSelector"):
        status, data, resp = await api.get(
            f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/*/cpu", params={param: sel}
        )
        assert status == 400, (param, sel)
        assert data["kind"] == "Status" and data["reason"] == "BadRequest" and data["code"] == 400
        assert "Retry-After" not in resp.headers


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_object_answers_any_metric_name_and_echoes_it(api, version):
    """Upstream serves a KeptnMetric object whatever metric name the HPA asks for."""
    status, data, _ = await api.get(f"{CUSTOM}/{version}/namespaces/shop/{RES}/cpu/requests-per-second")
    assert status == 200, data
    (item,) = data["items"]
    assert item["describedObject"]["name"] == "cpu" and item["value"] == "1500m"
    name = item["metric"]["name"] if version == "v1beta2" else item["metricName"]
    assert name == "requests-per-second"


@pytest.mark.parametrize(
    "path",
    [
        f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/nope/nope",
        f"{CUSTOM}/v1beta2/namespaces/shop/pods/cpu/cpu",
        f"{CUSTOM}/v1beta3/namespaces/shop/{RES}/cpu/cpu",
        f"{CUSTOM}/v1beta2/namespaces/shop",
        f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu/extra",
        f"{EXTERNAL}/namespaces/shop/nope",
        f"{EXTERNAL}/namespaces/shop/cpu/extra",
        "/apis/other.group/v1",
        "/nothing",
        "/openapi/v3/apis/other.group/v1",
    ],
)
async def test_not_found_is_a_status(api, path):
    status, data, resp = await api.get(path)
    assert status == 404, path
    assert resp.headers["Content-Type"] == "application/json"
    assert set(data) == {"kind", "apiVersion", "metadata", "status", "message", "reason", "code"}
    assert data["kind"] == "Status" and data["apiVersion"] == "v1" and data["metadata"] == {}
    assert data["status"] == "Failure" and data["reason"] == "NotFound" and data["code"] == 404


async def test_method_not_allowed(api):
    s = api.proxy()
    async with s.post(api.base + f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu") as resp:
        assert resp.status == 405
        assert (await resp.json())["reason"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    "accept",
    [
        "application/vnd.kubernetes.protobuf, */*",
        "application/vnd.kubernetes.protobuf",
        "application/json",
        "*/*",
        "text/plain",
    ],
)
async def test_always_json_whatever_accept(api, accept):
    status, data, resp = await api.get(
        f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu", headers={"Accept": accept}
    )
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    assert data["items"][0]["value"] == "1500m"


# -- values that are not served ------------------------------------------------------------
async def test_no_value_yet_is_503(world: World, start):
    world.add("shop", "pending", None, error="connection refused")
    api = await start()
    status, data, resp = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/pending/pending")
    assert status == 503 and data["reason"] == "ServiceUnavailable"
    assert data["message"] == "no value yet for KeptnMetric shop/pending: connection refused"
    assert "Retry-After" not in resp.headers
    status, data, _ = await api.get(f"{EXTERNAL}/namespaces/shop/pending")
    assert status == 503


async def test_stale_value_default_bound_is_three_intervals(world: World, start):
    world.add("shop", "fresh", 5, interval=10, age=29)
    world.add("shop", "stale", 5, interval=10, age=31, error="timeout")
    world.add("lagging", "stale", 5, interval=10, age=31, error="timeout")
    api = await start()
    assert (await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/fresh/fresh"))[0] == 200
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/stale/stale")
    assert status == 503 and "stale" in data["message"] and "timeout" in data["message"]
    # a wildcard list leaves a stale value out; with nothing left it says why (503)
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/*/*")
    assert status == 200 and [i["describedObject"]["name"] for i in data["items"]] == ["fresh"]
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/lagging/{RES}/*/*")
    assert status == 503 and "stale" in data["message"]
    assert (await api.get(f"{EXTERNAL}/namespaces/shop/stale"))[0] == 503


async def test_max_staleness_flag(world: World, start):
    world.add("shop", "m", 5, interval=10, age=100)
    api = await start("--max-staleness", "120")
    assert (await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/m/m"))[0] == 200
    world.now += 30
    assert (await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/m/m"))[0] == 503


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e20])
async def test_unservable_values(world: World, start, value):
    world.add("shop", "bad", value)
    api = await start()
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/bad/bad")
    assert status == 503, data
    assert (await api.get(f"{EXTERNAL}/namespaces/shop/bad"))[0] == 503


async def test_timestamp_is_the_fetch_time_not_request_time(world: World, start):
    world.add("shop", "m", 5, age=7)
    api = await start()
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/m/m")
    assert data["items"][0]["timestamp"] == rfc3339(world.now - 7)


# -- external metrics ----------------------------------------------------------------------
async def test_external_metric(api, world: World):
    status, _, resp = await api.get(f"{EXTERNAL}/namespaces/shop/rps")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    ts = rfc3339(world.now - 3)
    assert resp._body.decode() == (
        '{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},'
        f'"items":[{{"metricName":"rps","metricLabels":{{"app":"api"}},"timestamp":"{ts}","window":300,'
        '"value":"1500"}]}'
    )
    status, data, _ = await api.get(f"{EXTERNAL}/namespaces/shop/cpu", params={"labelSelector": "app=web"})
    assert status == 200 and data["items"][0]["value"] == "1500m" and "window" not in data["items"][0]
    status, data, _ = await api.get(f"{EXTERNAL}/namespaces/shop/cpu", params={"labelSelector": "app=api"})
    assert status == 200 and data["items"] == []
    status, data, _ = await api.get(f"{EXTERNAL}/namespaces/shop/cpu", params={"labelSelector": "app in"})
    assert status == 400


# -- discovery, OpenAPI, health, /metrics --------------------------------------------------
async def test_group_discovery(api):
    status, data, _ = await api.get("/apis")
    assert status == 200 and data["kind"] == "APIGroupList"
    assert [g["name"] for g in data["groups"]] == ["custom.metrics.k8s.io", "external.metrics.k8s.io"]
    status, data, _ = await api.get("/apis/custom.metrics.k8s.io")
    assert data["kind"] == "APIGroup" and data["preferredVersion"]["version"] == "v1beta2"
    assert [v["version"] for v in data["versions"]] == ["v1beta2", "v1beta1"]
    status, data, _ = await api.get("/apis/external.metrics.k8s.io")
    assert data["preferredVersion"] == {
        "groupVersion": "external.metrics.k8s.io/v1beta1",
        "version": "v1beta1",
    }


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_resource_discovery(api, version):
    status, data, _ = await api.get(f"{CUSTOM}/{version}")
    assert status == 200
    assert data["kind"] == "APIResourceList" and data["apiVersion"] == "v1"
    assert data["groupVersion"] == f"custom.metrics.k8s.io/{version}"
    assert data["resources"] == [
        {
            "name": f"{RES}/cpu",
            "singularName": "",
            "namespaced": True,
            "kind": "MetricValueList",
            "verbs": ["get"],
        },
        {
            "name": f"{RES}/rps",
            "singularName": "",
            "namespaced": True,
            "kind": "MetricValueList",
            "verbs": ["get"],
        },
    ]
    status, data, _ = await api.get(EXTERNAL)
    assert [r["name"] for r in data["resources"]] == ["cpu", "rps"]
    assert data["resources"][0]["kind"] == "ExternalMetricValueList"


async def test_discovery_never_empty_and_follows_the_store(world: World, start):
    api = await start()
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2")
    assert [r["name"] for r in data["resources"]] == [f"{RES}/*"]
    _, data, _ = await api.get(EXTERNAL)
    assert [r["name"] for r in data["resources"]] == ["*"]
    world.store.apply(parse_metric(metric_doc("a", "new")))
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2")
    assert [r["name"] for r in data["resources"]] == [f"{RES}/new"]
    world.store.apply(parse_metric(metric_doc("a", "new")), deleted=True)
    _, data, _ = await api.get(f"{CUSTOM}/v1beta2")
    assert [r["name"] for r in data["resources"]] == [f"{RES}/*"]


async def test_discovery_with_10000_metrics_is_bounded(world: World, start):
    for i in range(10000):
        world.store.apply(parse_metric(metric_doc(f"ns{i % 50}", f"m{i:05d}")))
    api = await start("--discovery-limit", "500")
    status, data, resp = await api.get(f"{CUSTOM}/v1beta2")
    assert status == 200 and len(data["resources"]) == 500
    assert len(resp._body) < 100_000
    import time

    t = time.perf_counter()
    for _ in range(20):
        assert (await api.get(f"{CUSTOM}/v1beta2"))[0] == 200
    assert (time.perf_counter() - t) / 20 < 0.05


async def test_openapi_v2(api):
    status, data, resp = await api.get("/openapi/v2")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    assert data["swagger"] == "2.0"
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].split("/")[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    assert refs <= set(data["definitions"])  # every reference resolves
    assert (
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/{resource}/{name}/{metric}"
        in data["paths"]
    )
    assert "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}" in data["paths"]
    gvks = [d.get("x-kubernetes-group-version-kind") for d in data["definitions"].values()]
    assert [{"group": "custom.metrics.k8s.io", "version": "v1beta2", "kind": "MetricValueList"}] in gvks


async def test_health_without_credentials(api, world: World):
    s = api.session()  # TLS only: no client certificate, no token
    for path in ("/healthz", "/livez", "/readyz"):
        status, body, _ = await api.get(path, s)
        assert status == 200 and body == b"ok"
    status, data, _ = await api.get(f"{CUSTOM}/v1beta2", s)
    assert status == 401 and data["reason"] == "Unauthorized"


async def test_readyz_waits_for_the_store(pki, kube, start):
    import tests.api.conftest as c
    from metrics_server.store.base import IndexedStore

    unsynced = IndexedStore()
    world = c.World(unsynced, c.MetricStates())
    from apiservice.server import start_api

    runner = await start_api(world.store, world.states, c.options(pki))
    try:
        r = c.Running(runner, pki)
        status, _, _ = await r.get("/readyz", r.session())
        assert status == 503
        unsynced.mark_synced()
        status, _, _ = await r.get("/readyz", r.session())
        assert status == 200
        for s in r.sessions:
            await s.close()
    finally:
        await runner.stop(grace=0.1)


async def test_self_metrics(api):
    await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu")
    await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/nope/nope")
    status, body, resp = await api.get("/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'keptn_metrics_api_requests_total{code="200",route="custom/object"}' in text
    assert 'keptn_metrics_api_requests_total{code="404",route="custom/object"}' in text
    assert 'keptn_metrics_api_request_duration_seconds_bucket{le="0.005",route="custom/object"}' in text
    # the same per-KeptnMetric gauges as the metrics port, labelled namespace and name
    assert 'keptn_metric_value{name="cpu",namespace="shop"}' in text
    assert 'keptn_metric_value_age_seconds{name="cpu",namespace="shop"}' in text


async def test_orjson_bytes_are_valid_json(api):
    _, _, resp = await api.get(f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/*/cpu")
    assert orjson.loads(resp._body)["items"]
    assert ObjectKey("shop", "cpu")


async def test_answers_follow_value_and_label_changes(api, world: World):
    url = f"{CUSTOM}/v1beta2/namespaces/shop/{RES}/cpu/cpu"
    assert (await api.get(url))[1]["items"][0]["value"] == "1500m"
    st = world.states.get(ObjectKey("shop", "cpu"))
    st.value, st.last_success = 2.0, world.now
    _, data, _ = await api.get(url)
    assert data["items"][0]["value"] == "2" and data["items"][0]["timestamp"] == rfc3339(world.now)
    assert (await api.get(url, params={"labelSelector": "app=web"}))[0] == 200
    world.store.apply(parse_metric(metric_doc("shop", "cpu", {"app": "changed"})))
    assert (await api.get(url, params={"labelSelector": "app=web"}))[0] == 404
    ext = f"{EXTERNAL}/namespaces/shop/cpu"
    assert (await api.get(ext))[1]["items"][0]["metricLabels"] == {"app": "changed"}
    st.value = 3.0
    assert (await api.get(ext))[1]["items"][0]["value"] == "3"
