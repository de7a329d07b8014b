"""The aggregation layer of a kube-apiserver 1.36 in front of our server (tests/aggregator.py),
with every SubjectAccessReview answered by kube-apiserver's RBAC (tests/rbac.py: the bootstrap
policy plus deploy/'s RBAC), the APIServices read from deploy/, and the HPA calling as its
own service account.

This is the failure seen on a real control plane (issue 9): the aggregator's discovery and
OpenAPI requests carry no group of their own, so a server that neither adds
`system:authenticated` nor serves the aggregated document gets every group-version marked
Stale, client-go drops them and the HPA finds "no known available metric versions".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import apiservice.auth
from apiservice import aggregated_discovery
from apiservice.openapi_endpoints import OpenApiV3
from apiservice.status import status_response
from tests.aggregator import (
    AGGREGATED_DISCOVERY_ACCEPT,
    HPA,
    KUBE_AGGREGATOR_AS_MASTER,
    KUBE_AGGREGATOR_NO_GROUPS,
    NO_METRIC_VERSIONS,
    OPENAPI_DOWNLOADER,
    Aggregator,
    APIService,
    HorizontalPodAutoscaler,
    Identity,
    MetricsClientError,
    split_groups_and_resources,
)
from tests.api.conftest import KubeReviews, Pki, World
from tests.rbac import DEFAULT_SERVER_NAMESPACE, deploy_objects, policy_with_deploy, sar_policy

RES = "keptnmetrics.metrics.keptn.sh"
APISERVICES = tuple(
    APIService.from_manifest(d)
    for d in deploy_objects(values={"externalMetrics": {"enabled": True}})
    if d["kind"] == "APIService"
)
GROUP_VERSIONS = {
    "custom.metrics.k8s.io/v1beta2",
    "custom.metrics.k8s.io/v1beta1",
    "external.metrics.k8s.io/v1beta1",
}


def test_apiservices_come_from_deploy():
    assert {a.group_version for a in APISERVICES} == GROUP_VERSIONS
    assert {a.server_name for a in APISERVICES} == {f"keptn-metrics.{DEFAULT_SERVER_NAMESPACE}.svc"}


@pytest.fixture
def rbac(kube: KubeReviews) -> KubeReviews:
    kube.policy = sar_policy(policy_with_deploy())
    return kube


@pytest.fixture
def without_authenticated_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1 undone: identities keep only the groups they were asserted with."""
    monkeypatch.setattr(apiservice.auth, "with_authenticated_group", lambda user: user)


@pytest.fixture
def without_aggregated_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2 undone: `/apis` answers the plain APIGroupList whatever Accept asks for, and
    `/openapi/v3` is 404 (so the aggregator downloads /openapi/v2 instead)."""
    monkeypatch.setattr(aggregated_discovery, "requested_version", lambda accept: None)
    monkeypatch.setattr(OpenApiV3, "serve_root", lambda self, request: status_response(404, "not served"))


async def _serve(world: World, start, pki: Pki, tmp_path: Path):
    world.add("shop", "cpu", 1.5, labels={"app": "web"})
    world.add("shop", "queue", 42)
    serving = tmp_path / "serving.pem"  # a certificate for the Service name the aggregator verifies
    pki.server_ca.issue_cert(
        f"keptn-metrics.{DEFAULT_SERVER_NAMESPACE}.svc", "localhost", "127.0.0.1"
    ).private_key_and_cert_chain_pem.write_to_path(str(serving))
    tls = ("--tls-cert-file", str(serving), "--tls-private-key-file", str(serving))
    return await start("--authorization-mode", "Webhook", *tls)


@pytest.fixture
async def aggregator(
    world: World, start, pki: Pki, tmp_path: Path, rbac: KubeReviews
) -> AsyncIterator[Aggregator]:
    api = await _serve(world, start, pki, tmp_path)
    front_proxy = tmp_path / "front-proxy-client.pem"
    pki.front_proxy().private_key_and_cert_chain_pem.write_to_path(str(front_proxy))
    async with Aggregator(api.base, pki.server_ca.cert_pem.bytes(), str(front_proxy), APISERVICES) as agg:
        yield agg


def _freshness(agg: Aggregator) -> dict[str, str]:
    doc = agg.discovery_document()
    return {
        f"{g['metadata']['name']}/{v['version']}": v["freshness"] for g in doc["items"] for v in g["versions"]
    }


async def test_old_behaviour_all_versions_stale_and_the_hpa_finds_no_version(
    aggregator: Aggregator, rbac: KubeReviews, without_authenticated_group, without_aggregated_discovery
):
    await aggregator.sync()
    assert all(aggregator.available.values())  # the availability check runs as system:masters
    assert _freshness(aggregator) == dict.fromkeys(GROUP_VERSIONS, "Stale")
    group_list, _, failed = split_groups_and_resources(aggregator.discovery_document())
    assert set(failed) == GROUP_VERSIONS
    custom = next(g for g in group_list["groups"] if g["name"] == "custom.metrics.k8s.io")
    assert custom["versions"] == []
    hpa = HorizontalPodAutoscaler(aggregator)
    with pytest.raises(MetricsClientError, match=NO_METRIC_VERSIONS):
        await hpa.object_metric("shop", RES, "cpu", "cpu")
    items = await hpa.external_metric("shop", "cpu")  # no discovery on that path: it still works
    assert [i["value"] for i in items] == ["1500m"]
    # the fallback went out as system:kube-aggregator without groups and was denied by RBAC
    fallback = [e for e in aggregator.sent if e.who == KUBE_AGGREGATOR_NO_GROUPS]
    assert {e.path for e in fallback} == {f"/apis/{gv}" for gv in GROUP_VERSIONS}
    assert {e.status for e in fallback} == {403} and {e.headers["Accept"] for e in fallback} == {
        "application/json"
    }
    assert any(
        sar.get("user") == "system:kube-aggregator"
        and sar.get("groups") == []
        and "nonResourceAttributes" in sar
        for sar in rbac.sars
    )
    assert any(
        "failed to retrieve openAPI spec, http error: ResponseCode: 403" in e for e in aggregator.errors
    )


async def test_fixed_all_versions_current_openapi_downloads_and_the_hpa_reads_its_metrics(
    aggregator: Aggregator, rbac: KubeReviews
):
    await aggregator.sync()
    assert aggregator.conditions == dict.fromkeys(
        (a.name for a in APISERVICES), ("Passed", "all checks passed")
    )
    assert _freshness(aggregator) == dict.fromkeys(GROUP_VERSIONS, "Current")
    assert aggregator.errors == []
    group_list, resources, failed = split_groups_and_resources(aggregator.discovery_document())
    assert failed == {}
    custom = next(g for g in group_list["groups"] if g["name"] == "custom.metrics.k8s.io")
    assert [v["version"] for v in custom["versions"]] == ["v1beta2", "v1beta1"]  # versionPriority 200 > 100
    assert [r["name"] for r in resources["custom.metrics.k8s.io/v1beta2"]["resources"]] == [
        f"{RES}/cpu",
        f"{RES}/queue",
    ]
    assert [r["name"] for r in resources["external.metrics.k8s.io/v1beta1"]["resources"]] == ["cpu", "queue"]

    # discovery came from the native document: one /apis per Service, no fallback
    discovery = [e for e in aggregator.sent if e.path == "/apis"]
    assert discovery and all(e.who == KUBE_AGGREGATOR_AS_MASTER for e in discovery)
    assert {e.headers["Accept"] for e in discovery} == {AGGREGATED_DISCOVERY_ACCEPT}
    assert not [e for e in aggregator.sent if e.who == KUBE_AGGREGATOR_NO_GROUPS]
    # OpenAPI: /openapi/v2 and /openapi/v3 as system:aggregator (no groups), all 2xx/304
    openapi = [e for e in aggregator.sent if e.path.startswith("/openapi")]
    assert {e.path for e in openapi} == {"/openapi/v2", "/openapi/v3"}
    assert all(e.who == OPENAPI_DOWNLOADER and e.status in (200, 304) for e in openapi)
    assert sorted(aggregator.openapi_v3_paths()) == sorted(f"apis/{gv}" for gv in GROUP_VERSIONS)

    hpa = HorizontalPodAutoscaler(aggregator)
    item = await hpa.object_metric("shop", RES, "cpu", "cpu")
    assert item["value"] == "1500m" and item["describedObject"]["name"] == "cpu"
    assert [i["value"] for i in await hpa.external_metric("shop", "queue")] == ["42"]
    hpa_sars = [s for s in rbac.sars if s.get("user") == HPA.name]
    assert hpa_sars and all("system:authenticated" in s["groups"] for s in hpa_sars)
    assert {s["resourceAttributes"]["group"] for s in hpa_sars} == {
        "custom.metrics.k8s.io",
        "external.metrics.k8s.io",
    }


async def test_each_fix_alone_makes_discovery_current(
    world: World, start, pki: Pki, tmp_path: Path, rbac: KubeReviews, monkeypatch: pytest.MonkeyPatch
):
    """With only system:authenticated the fallback succeeds (system:discovery); with only the
    aggregated document the /apis fetch succeeds (system:masters). Both give the same entries,
    because the native document is the conversion kube-aggregator applies to the fallback."""
    api = await _serve(world, start, pki, tmp_path)
    fp = tmp_path / "fp.pem"
    pki.front_proxy().private_key_and_cert_chain_pem.write_to_path(str(fp))
    ca = pki.server_ca.cert_pem.bytes()

    async with Aggregator(api.base, ca, str(fp), APISERVICES) as native:
        await native.sync()
    with monkeypatch.context() as m:
        m.setattr(aggregated_discovery, "requested_version", lambda accept: None)
        async with Aggregator(api.base, ca, str(fp), APISERVICES) as fallback:
            await fallback.sync()
    with monkeypatch.context() as m:
        m.setattr(apiservice.auth, "with_authenticated_group", lambda user: user)
        async with Aggregator(api.base, ca, str(fp), APISERVICES) as masters_only:
            await masters_only.sync()

    assert any(e.who == KUBE_AGGREGATOR_NO_GROUPS and e.status == 200 for e in fallback.sent)
    for agg in (native, fallback, masters_only):
        assert _freshness(agg) == dict.fromkeys(GROUP_VERSIONS, "Current")
    assert native.discovery_document() == fallback.discovery_document() == masters_only.discovery_document()
    # OpenAPI needs system:authenticated: system:aggregator has no group of its own
    assert native.errors == fallback.errors == []
    errors = "\n".join(masters_only.errors)
    assert "failed to retrieve openAPI spec, http error: ResponseCode: 403" in errors
    assert "Error, could not get list of group versions for APIService" in errors


async def test_rediscovery_uses_the_etag_and_stays_current(aggregator: Aggregator):
    await aggregator.sync()
    await aggregator.sync()
    second = [e for e in aggregator.sent if e.path == "/apis"][-1]
    assert second.headers["If-None-Match"].startswith('"') and second.status == 304
    assert _freshness(aggregator) == dict.fromkeys(GROUP_VERSIONS, "Current")
    v2 = [e for e in aggregator.sent if e.path == "/openapi/v2"]
    assert v2[-1].headers.get("If-None-Match") and v2[-1].status == 304


async def test_a_front_proxy_cn_not_allowed_makes_the_apiservices_unavailable(
    world: World, start, pki: Pki, tmp_path: Path, rbac: KubeReviews
):
    api = await _serve(world, start, pki, tmp_path)
    wrong = tmp_path / "wrong-cn.pem"
    pki.front_proxy("not-front-proxy-client").private_key_and_cert_chain_pem.write_to_path(str(wrong))
    async with Aggregator(api.base, pki.server_ca.cert_pem.bytes(), str(wrong), APISERVICES) as agg:
        await agg.sync()
    assert not any(agg.available.values())
    reason, message = agg.conditions["v1beta2.custom.metrics.k8s.io"]
    assert reason == "FailedDiscoveryCheck" and "bad status from" in message and message.endswith(": 401")
    assert _freshness(agg) == dict.fromkeys(GROUP_VERSIONS, "Stale")  # the proxy answers 503 itself


async def test_a_client_reads_a_v3_document_through_the_aggregator(aggregator: Aggregator):
    await aggregator.sync()
    alice = Identity("alice", ("developers", "system:authenticated"))
    url = aggregator.openapi_v3_paths()["apis/custom.metrics.k8s.io/v1beta2"]["serverRelativeURL"]
    key, _, query = url.removeprefix("/openapi/v3/").partition("?")
    reply = await aggregator.openapi_v3_document(key, alice, f"?{query}")
    assert reply.status == 200 and reply.headers["Cache-Control"] == "public, immutable"
    assert reply.json()["openapi"] == "3.0.0"


async def test_a_stale_preferred_version_is_dropped_and_the_hpa_uses_the_next_one(
    world: World, start, pki: Pki, tmp_path: Path, rbac: KubeReviews
):
    """v1beta2's APIService names a Service our certificate does not cover: its availability
    check fails the TLS handshake, v1beta2 goes Stale, and client-go falls back to v1beta1."""
    api = await _serve(world, start, pki, tmp_path)
    fp = tmp_path / "fp.pem"
    pki.front_proxy().private_key_and_cert_chain_pem.write_to_path(str(fp))
    v1beta2 = next(a for a in APISERVICES if a.name == "v1beta2.custom.metrics.k8s.io")
    elsewhere = APIService(v1beta2.group, v1beta2.version, "other-namespace", "other", 100, 200)
    services = [elsewhere, *(a for a in APISERVICES if a is not v1beta2)]
    async with Aggregator(api.base, pki.server_ca.cert_pem.bytes(), str(fp), services) as agg:
        await agg.sync()
        reason, message = agg.conditions[elsewhere.name]
        assert reason == "FailedDiscoveryCheck" and "other.other-namespace.svc" in message, message
        assert _freshness(agg)["custom.metrics.k8s.io/v1beta2"] == "Stale"
        assert _freshness(agg)["custom.metrics.k8s.io/v1beta1"] == "Current"
        item = await HorizontalPodAutoscaler(agg).object_metric("shop", RES, "cpu", "cpu")
    assert item["metricName"] == "cpu" and item["value"] == "1500m"  # the v1beta1 shape
