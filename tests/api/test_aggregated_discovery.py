"""`GET /apis` as aggregated discovery (apidiscovery.k8s.io v2 / v2beta1), negotiated like a Go
server built on k8s.io/apiserver (pkg/endpoints/discovery/aggregated, handlers/negotiation)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from apiservice.negotiation import parse_accept
from metrics_server.model import parse_metric
from tests.aggregator import (
    ACCEPT_V2,
    ACCEPT_V2BETA1,
    AGGREGATED_DISCOVERY_ACCEPT,
    convert_group_version_into_to_discovery,
)
from tests.api.conftest import World, metric_doc

RES = "keptnmetrics.metrics.keptn.sh"
V2_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
# client-go rest clients with protobuf enabled put the protobuf form first
PROTOBUF_FIRST = (
    "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    f"{ACCEPT_V2},application/json"
)


@pytest.fixture
async def api(world: World, start):
    world.add("shop", "cpu", 1.5)
    world.add("shop", "rps", 1500)
    world.add("other", "cpu", 3)  # the same name in another namespace: one discovery entry
    return await start()


async def _apis(api, accept: str | None, **headers: str):
    if accept is not None:
        headers["Accept"] = accept
    return await api.get("/apis", headers=headers)


def _custom_resources(names: list[str]) -> list[dict]:
    return [
        {
            "resource": RES,
            "responseKind": {"group": "", "version": "", "kind": ""},
            "scope": "Namespaced",
            "singularResource": "",
            "verbs": None,
            "subresources": [
                {
                    "subresource": n,
                    "responseKind": {"group": "", "version": "", "kind": "MetricValueList"},
                    "verbs": ["get"],
                }
                for n in names
            ],
        }
    ]


async def test_v2_document_lists_every_served_version_with_its_resources(api):
    status, doc, resp = await _apis(api, AGGREGATED_DISCOVERY_ACCEPT)
    assert status == 200
    assert resp.headers["Content-Type"] == V2_TYPE
    assert doc == {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [
            {
                "metadata": {"name": "custom.metrics.k8s.io", "creationTimestamp": None},
                "versions": [
                    {
                        "version": "v1beta2",
                        "resources": _custom_resources(["cpu", "rps"]),
                        "freshness": "Current",
                    },
                    {
                        "version": "v1beta1",
                        "resources": _custom_resources(["cpu", "rps"]),
                        "freshness": "Current",
                    },
                ],
            },
            {
                "metadata": {"name": "external.metrics.k8s.io", "creationTimestamp": None},
                "versions": [
                    {
                        "version": "v1beta1",
                        "resources": [
                            {
                                "resource": n,
                                "responseKind": {
                                    "group": "",
                                    "version": "",
                                    "kind": "ExternalMetricValueList",
                                },
                                "scope": "Namespaced",
                                "singularResource": "",
                                "verbs": ["get"],
                            }
                            for n in ("cpu", "rps")
                        ],
                        "freshness": "Current",
                    }
                ],
            },
        ],
    }


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_resources_are_what_the_aggregator_would_convert_from_the_resource_list(api, version):
    """kube-aggregator's fallback converts /apis/<g>/<v>; the native document says the same."""
    _, doc, _ = await _apis(api, ACCEPT_V2)
    _, listed, _ = await api.get(f"/apis/custom.metrics.k8s.io/{version}")
    native = next(v for v in doc["items"][0]["versions"] if v["version"] == version)
    assert native["resources"] == convert_group_version_into_to_discovery(listed["resources"])
    _, listed, _ = await api.get("/apis/external.metrics.k8s.io/v1beta1")
    assert doc["items"][1]["versions"][0]["resources"] == convert_group_version_into_to_discovery(
        listed["resources"]
    )


async def test_v2beta1_is_the_same_document_under_its_own_kind(api):
    _, v2, r2 = await _apis(api, ACCEPT_V2)
    status, beta, rb = await _apis(api, ACCEPT_V2BETA1)
    assert status == 200 and rb.headers["Content-Type"] == V2BETA1_TYPE
    assert beta["apiVersion"] == "apidiscovery.k8s.io/v2beta1" and beta["kind"] == "APIGroupDiscoveryList"
    assert beta["items"] == v2["items"]
    assert rb.headers["ETag"] == r2.headers["ETag"]  # one ETag for both encodings (Vary: Accept)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (AGGREGATED_DISCOVERY_ACCEPT, V2_TYPE),  # kube-aggregator 1.30-1.36
        (f"{ACCEPT_V2},application/json", V2_TYPE),  # client-go discovery (1.35+)
        (f"{ACCEPT_V2},{ACCEPT_V2BETA1},application/json", V2_TYPE),  # client-go 1.30-1.34
        (f"{ACCEPT_V2BETA1},application/json", V2BETA1_TYPE),
        (PROTOBUF_FIRST, V2_TYPE),  # protobuf is not served: the JSON clause after it wins
        ("*/*;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", V2_TYPE),
        ("application/*;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", V2_TYPE),
        (f"application/json;q=0.5,{ACCEPT_V2}", V2_TYPE),  # the aggregated clause sorts first
        (f"application/json,{ACCEPT_V2};q=0.5", V2_TYPE),  # a JSON clause without as= is not a transform
        (f"{ACCEPT_V2};profile=nopeer", V2_TYPE),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/vnd.kubernetes.protobuf, */*", "application/json"),
        (None, "application/json"),
        ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList", "application/json"),
        ("application/json;g=apidiscovery.k8s.io;as=APIGroupDiscoveryList", "application/json"),
        ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;stream=x", "application/json"),
        ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;sv=v1", "application/json"),
        ("application/yaml;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "application/json"),
    ],
)
async def test_content_negotiation(api, accept, expected):
    status, doc, resp = await _apis(api, accept)
    assert status == 200
    assert resp.headers["Content-Type"] == expected
    if expected == "application/json":
        assert doc["kind"] == "APIGroupList" and "ETag" not in resp.headers
    else:
        assert doc["kind"] == "APIGroupDiscoveryList"


async def test_etag_cache_headers_and_not_modified(api):
    status, doc, resp = await _apis(api, ACCEPT_V2)
    etag = resp.headers["ETag"]
    unversioned = orjson.dumps({"metadata": {}, "items": doc["items"]})
    assert etag == '"' + hashlib.sha512(unversioned).hexdigest().upper() + '"'
    assert resp.headers["Vary"] == "Accept" and resp.headers["Cache-Control"] == "public"
    status, _, again = await _apis(api, ACCEPT_V2, **{"If-None-Match": etag})
    assert status == 304 and again._body == b""
    assert again.headers["ETag"] == etag and again.headers["Vary"] == "Accept"
    # Go compares the header to the quoted ETag as a plain string: no lists, no weak tags
    for other in (etag.strip('"'), f"W/{etag}", f'"x", {etag}'):
        assert (await _apis(api, ACCEPT_V2, **{"If-None-Match": other}))[0] == 200


async def test_document_follows_the_store_and_keeps_the_discovery_cap(world: World, start):
    api = await start("--discovery-limit", "2")
    _, doc, first = await _apis(api, ACCEPT_V2)
    star = doc["items"][0]["versions"][0]["resources"][0]["subresources"]
    assert [s["subresource"] for s in star] == ["*"]  # never empty
    assert [r["resource"] for r in doc["items"][1]["versions"][0]["resources"]] == ["*"]
    for name in ("c", "a", "b"):
        world.store.apply(parse_metric(metric_doc("ns", name)))
    status, doc, second = await _apis(api, ACCEPT_V2, **{"If-None-Match": first.headers["ETag"]})
    assert status == 200 and second.headers["ETag"] != first.headers["ETag"]
    subs = doc["items"][0]["versions"][1]["resources"][0]["subresources"]
    assert [s["subresource"] for s in subs] == ["a", "b"]  # sorted, capped like /apis/<g>/<v>


async def test_plain_discovery_keeps_working(api):
    status, data, _ = await api.get("/apis", headers={"Accept": "application/json"})
    assert status == 200 and data["kind"] == "APIGroupList"
    for path in ("/apis/custom.metrics.k8s.io", "/apis/custom.metrics.k8s.io/v1beta2"):
        status, data, resp = await api.get(path, headers={"Accept": AGGREGATED_DISCOVERY_ACCEPT})
        assert status == 200 and resp.headers["Content-Type"] == "application/json"
        assert data["kind"] in ("APIGroup", "APIResourceList")


def test_accept_parsing_follows_goautoneg():
    clauses = parse_accept("text/plain;q=0.5, application/json;v=v2;g=x, */*;q=0.1, bad, a/b/c, *")
    assert [(c.type, c.subtype, c.q) for c in clauses] == [
        ("application", "json", 1.0),
        ("*", "*", 1.0),
        ("text", "plain", 0.5),
        ("*", "*", 0.1),
    ]
    assert clauses[0].params == {"v": "v2", "g": "x"}
    # goautoneg's Less prefers a concrete type to a wildcard even at a lower q
    assert [(c.type, c.q) for c in parse_accept("*/*, text/html;q=0.1")] == [("text", 0.1), ("*", 1.0)]
