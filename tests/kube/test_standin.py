"""The stand-in answers like kube-apiserver (these also run against a real cluster)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from metrics_server.kube.client import ApiException, error_reason, resource_path
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.kube_standin import KubeStandin, json_patch, merge_patch, parse_label_selector

pytestmark = pytest.mark.kube

IR = {"value": "1", "range": {"interval": "5m"}, "lastUpdated": "2024-01-01T00:00:00Z"}


def mpath(kube: KubeEnv, name: str | None = None, sub: str | None = None) -> str:
    return resource_path("metrics.keptn.sh", "v1", "keptnmetrics", kube.namespace, name, sub)


async def status_of(exc_info: Any) -> tuple[int, str]:
    exc = exc_info.value
    return exc.status, error_reason(exc)


async def test_create_get_conflict_notfound(kube: KubeEnv) -> None:
    created = await kube.create(metric_doc("m1"))
    assert created["metadata"]["generation"] == 1
    assert int(created["metadata"]["resourceVersion"]) > 0
    with pytest.raises(ApiException) as e:
        await kube.create(metric_doc("m1"))
    assert await status_of(e) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as e:
        await kube.get("KeptnMetric", "nope")
    assert await status_of(e) == (404, "NotFound")
    body = json.loads(e.value.body or b"{}")
    assert body["kind"] == "Status" and body["details"]["name"] == "nope"


async def test_update_stale_resource_version_conflicts(kube: KubeEnv) -> None:
    created = await kube.create(metric_doc("m1"))
    first = dict(created, spec={**created["spec"], "query": "q2"})
    updated = await kube.client.replace(mpath(kube, "m1"), first)
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale = dict(created, spec={**created["spec"], "query": "q3"})
    with pytest.raises(ApiException) as e:
        await kube.client.replace(mpath(kube, "m1"), stale)
    assert await status_of(e) == (409, "Conflict")


async def test_status_subresource_semantics(kube: KubeEnv) -> None:
    doc = metric_doc("m1")
    doc["status"] = {"value": "ignored-on-create"}
    created = await kube.create(doc)
    assert "status" not in created or created["status"].get("value") != "ignored-on-create"
    # the main endpoint ignores status
    after = await kube.patch("KeptnMetric", "m1", {"status": {"value": "1"}})
    assert (after.get("status") or {}).get("value") is None
    # the status endpoint ignores spec, keeps generation
    after = await kube.patch(
        "KeptnMetric",
        "m1",
        {"spec": {"query": "other"}, "status": {"value": "2", "errMsg": ""}},
        sub="status",
    )
    assert after["status"]["value"] == "2"
    assert after["spec"]["query"] == "up"
    assert after["metadata"]["generation"] == 1
    # merge patch: null deletes a field, lists are replaced
    after = await kube.patch(
        "KeptnMetric", "m1", {"status": {"errMsg": None, "intervalResults": [IR]}}, sub="status"
    )
    assert "errMsg" not in after["status"] and after["status"]["value"] == "2"
    assert after["status"]["intervalResults"] == [IR]


async def test_patch_content_types(kube: KubeEnv) -> None:
    await kube.create(metric_doc("m1"))
    with pytest.raises(ApiException) as e:
        await kube.client.request(
            "PATCH",
            mpath(kube, "m1"),
            body={"spec": {"query": "x"}},
            content_type="application/strategic-merge-patch+json",
        )
    assert e.value.status == 415
    out = await kube.client.request(
        "PATCH",
        mpath(kube, "m1"),
        body=[{"op": "replace", "path": "/spec/query", "value": "jp"}],
        content_type="application/json-patch+json",
    )
    assert out["spec"]["query"] == "jp" and out["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as e:
        await kube.client.request(
            "PATCH",
            mpath(kube, "m1"),
            body=[{"op": "test", "path": "/spec/query", "value": "no"}],
            content_type="application/json-patch+json",
        )
    assert e.value.status == 422


async def test_noop_write_keeps_resource_version(kube: KubeEnv) -> None:
    created = await kube.create(metric_doc("m1"))
    again = await kube.patch("KeptnMetric", "m1", {"spec": {"query": "up"}})
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_list_selector_and_resource_version(kube: KubeEnv) -> None:
    await kube.create(metric_doc("a", labels={"team": "x"}))
    await kube.create(metric_doc("b", labels={"team": "y"}))
    out = await kube.client.list(mpath(kube), labelSelector="team=x")
    assert [i["metadata"]["name"] for i in out["items"]] == ["a"]
    assert out["metadata"]["resourceVersion"]
    assert out["kind"] == "KeptnMetricList"
    everywhere = await kube.client.list(resource_path("metrics.keptn.sh", "v1", "keptnmetrics"))
    assert {"a", "b"} <= {i["metadata"]["name"] for i in everywhere["items"]}


async def read_events(resp: Any, n: int, wait: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        line = await asyncio.wait_for(resp.content.readline(), wait)
        if not line:
            break
        out.append(json.loads(line))
    return out


async def test_watch_events_and_bookmarks(kube: KubeEnv) -> None:
    listed = await kube.client.list(mpath(kube))
    rv = listed["metadata"]["resourceVersion"]
    resp = await kube.client.stream(
        mpath(kube),
        {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "30"},
        read_timeout=10,
    )
    try:
        await kube.create(metric_doc("w1"))
        await kube.patch("KeptnMetric", "w1", {"spec": {"query": "changed"}})
        await kube.delete("KeptnMetric", "w1")
        events = [e for e in await read_events(resp, 3) if e["type"] != "BOOKMARK"]
        while len(events) < 3:
            events += [e for e in await read_events(resp, 1) if e["type"] != "BOOKMARK"]
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert rvs == sorted(rvs) and len(set(rvs)) == 3
    finally:
        resp.release()


async def test_watch_too_old_gives_410_error_event(kube: KubeEnv, standin_only: KubeStandin) -> None:
    await kube.create(metric_doc("m1"))
    standin_only.compact()
    resp = await kube.client.stream(mpath(kube), {"watch": "1", "resourceVersion": "1"}, read_timeout=5)
    try:
        (event,) = await read_events(resp, 1)
    finally:
        resp.release()
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


async def test_custom_resource_refuses_unconditional_update(kube: KubeEnv) -> None:
    created = await kube.create(metric_doc("m1"))
    created["metadata"].pop("resourceVersion")
    with pytest.raises(ApiException) as e:
        await kube.client.replace(mpath(kube, "m1"), created)
    assert e.value.status == 422


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": "b"}, {"a": {"x": None}}) == {"a": {}}


def test_json_patch_rfc6902() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/b/c"},
            {"op": "move", "from": "/a", "path": "/z"},
        ],
    )
    assert out == {"b": {}, "z": [1, 2, 3]}


def test_label_selectors() -> None:
    ok = parse_label_selector("app in (a, b),!gone,tier!=db,env")
    assert ok({"app": "a", "env": "x", "tier": "web"})
    assert not ok({"app": "c", "env": "x"})
    assert not ok({"app": "a", "env": "x", "gone": "1"})


async def test_crd_schema_prunes_defaults_and_validates(kube: KubeEnv) -> None:
    if kube.standin is not None and not kube.standin.crd_schemas:
        pytest.skip("no CRDs in deploy/crds")
    doc = metric_doc("m1")
    doc["spec"]["range"] = {"interval": "10m", "step": "1m", "aggregation": "max"}
    doc["spec"]["unknownField"] = "dropped"
    created = await kube.create(doc)
    assert "unknownField" not in created["spec"]
    bad = metric_doc("m2")
    bad["spec"]["fetchIntervalSeconds"] = "ten"
    with pytest.raises(ApiException) as e:
        await kube.create(bad)
    assert e.value.status == 422 and error_reason(e.value) == "Invalid"
    body = json.loads(e.value.body or b"{}")
    assert any(c["field"] == "spec.fetchIntervalSeconds" for c in body["details"]["causes"])
