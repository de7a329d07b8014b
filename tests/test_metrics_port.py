"""The metrics port: health, /metrics, and upstream's KEDA REST endpoint."""

from __future__ import annotations

import time
from typing import Any

import pytest

from metrics_server.http_server import MetricsPortApp
from metrics_server.model import parse_metric
from metrics_server.state import MetricStates
from metrics_server.store.base import IndexedStore


def app_with(
    value: float | None, age: float = 1.0, error: str = ""
) -> tuple[MetricsPortApp, MetricStates, IndexedStore]:
    store = IndexedStore()
    m = parse_metric(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": "cpu", "namespace": "apps"},
            "spec": {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10},
        }
    )
    store.apply(m)
    states = MetricStates()
    state = states.ensure(m.key, 10)
    if value is not None:
        state.value, state.value_text, state.last_success = value, f"{value:g}", time.time() - age
    state.error = error
    return MetricsPortApp(store, states), states, store


async def test_keda_endpoint_answers_like_upstream(aiohttp_client: Any) -> None:
    port, _, store = app_with(12.5)
    store.mark_synced()
    client = await aiohttp_client(port.build())
    resp = await client.get("/api/v1/metrics/apps/cpu")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == {"metric": "cpu", "namespace": "apps", "value": "12.5"}


async def test_unknown_metric_is_404_and_no_value_is_503(aiohttp_client: Any) -> None:
    port, _, _ = app_with(None, error="prometheus unreachable")
    client = await aiohttp_client(port.build())
    resp = await client.get("/api/v1/metrics/apps/other")
    assert resp.status == 404 and (await resp.json())["code"] == 404
    resp = await client.get("/api/v1/metrics/apps/cpu")
    body = await resp.json()
    assert resp.status == 503 and "no value yet" in body["error"] and "unreachable" in body["error"]


async def test_stale_values_are_not_served(aiohttp_client: Any) -> None:
    port, _, _ = app_with(3.0, age=31, error="timed out")
    client = await aiohttp_client(port.build())
    resp = await client.get("/api/v1/metrics/apps/cpu")
    assert resp.status == 503 and "stale" in (await resp.json())["error"]


async def test_readiness_follows_store_sync_and_shutdown(aiohttp_client: Any) -> None:
    port, _, store = app_with(1.0)
    client = await aiohttp_client(port.build())
    assert (await client.get("/readyz")).status == 503
    store.mark_synced()
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/livez")).status == 200
    port.shutting_down = True
    assert (await client.get("/readyz")).status == 503


async def test_metric_gauges_disappear_with_the_metric(aiohttp_client: Any) -> None:
    port, states, _ = app_with(7.0)
    client = await aiohttp_client(port.build())
    text = await (await client.get("/metrics")).text()
    assert 'keptn_metric_value{name="cpu",namespace="apps"} 7.0' in text
    states.remove(next(iter(s.key for s in states.values())))
    text = await (await client.get("/metrics")).text()
    assert 'name="cpu"' not in text


def test_standby_replicas_allow_for_the_leaders_status_refresh_interval() -> None:
    """A standby serves from status; an unchanged value's lastUpdated moves only every refresh interval."""
    from metrics_server.state import Unavailable, rfc3339, servable_value

    metric = parse_metric(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": "cpu", "namespace": "apps"},
            "spec": {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10},
            "status": {"value": "4", "lastUpdated": rfc3339(time.time() - 50), "errMsg": ""},
        }
    )
    leader_rule = MetricStates()
    with pytest.raises(Unavailable, match="stale"):
        servable_value(leader_rule.load_status(metric), "m", time.time(), None)  # 50 s > 3 x 10 s
    standby = MetricStates(follower_grace=60)
    assert servable_value(standby.load_status(metric), "m", time.time(), None)[0] == 4  # 50 s < 30 s + 60 s
    old = parse_metric(
        {**metric_doc_of(metric), "status": {"value": "4", "lastUpdated": rfc3339(time.time() - 95)}}
    )
    with pytest.raises(Unavailable, match="stale"):
        servable_value(MetricStates(follower_grace=60).load_status(old), "m", time.time(), None)


def metric_doc_of(metric: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"name": metric.meta.name, "namespace": metric.meta.namespace},
        "spec": {
            "provider": {"name": metric.provider_name},
            "query": metric.query,
            "fetchIntervalSeconds": metric.fetch_interval_seconds,
        },
    }
