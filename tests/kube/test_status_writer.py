"""StatusWriter: merge patches to /status, bounded rate, coalescing, 404s, Events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from metrics_server.kube.status_writer import FAILED_REASON, RECOVERED_REASON, StatusWriter, TokenBucket
from metrics_server.model import KeptnMetric, ObjectKey, parse_metric
from metrics_server.state import MetricState
from tests.kube_fixtures import KubeEnv, metric_doc

pytestmark = pytest.mark.kube


def state_for(metric: KeptnMetric, value: float | None = 42.0, error: str = "") -> MetricState:
    st = MetricState(key=metric.key, fetch_interval=metric.fetch_interval_seconds)
    if value is not None:
        st.value, st.value_text, st.last_success = value, f"{value:g}", time.time()
    st.last_attempt = time.time()
    st.error = error
    return st


async def make_metric(kube: KubeEnv, name: str) -> KeptnMetric:
    return parse_metric(await kube.create(metric_doc(name)))


@pytest_asyncio.fixture
async def writer(kube: KubeEnv) -> AsyncIterator[StatusWriter]:
    w = StatusWriter(await kube.new_client(), qps=200, burst=50)
    w.start()
    yield w
    await w.stop()


async def test_merge_patch_lands_in_status_subresource(kube: KubeEnv, writer: StatusWriter) -> None:
    metric = await make_metric(kube, "m1")
    await writer.publish(metric, state_for(metric, 42.0), changed=True)
    await writer.flush()
    obj = await kube.get("KeptnMetric", "m1")
    assert obj["status"]["value"] == "42" and obj["status"]["errMsg"] == ""
    assert obj["spec"]["query"] == "up" and obj["metadata"]["generation"] == 1
    if kube.standin is not None:
        patches = [r for r in kube.standin.requests if r.verb == "patch"]
        assert [(r.subresource, r.content_type) for r in patches] == [
            ("status", "application/merge-patch+json")
        ]


async def test_unchanged_refreshes_at_bounded_interval(kube: KubeEnv) -> None:
    now = [1000.0]
    w = StatusWriter(await kube.new_client(), refresh_interval=60, clock=lambda: now[0])
    w.bucket = TokenBucket(20, 40)  # real time for the rate, fake time for the refresh interval
    w.start()
    try:
        metric = await make_metric(kube, "m1")
        st = state_for(metric)
        await w.publish(metric, st, changed=True)
        await w.flush()
        for _ in range(5):
            now[0] += 10
            await w.publish(metric, st, changed=False)
        await w.flush()
        assert w.stats.writes == 1 and w.stats.skipped_unchanged == 5
        now[0] += 20  # 70 s after the write
        await w.publish(metric, st, changed=False)
        await w.flush()
        assert w.stats.writes == 2
    finally:
        await w.stop()


async def test_new_leader_trusts_recent_last_updated(kube: KubeEnv, writer: StatusWriter) -> None:
    metric = await make_metric(kube, "m1")
    await writer.publish(metric, state_for(metric), changed=True)
    await writer.flush()
    fresh = parse_metric(await kube.get("KeptnMetric", "m1"))
    other = StatusWriter(await kube.new_client())
    other.start()
    try:
        await other.publish(fresh, state_for(fresh), changed=False)
        await other.flush()
        assert other.stats.writes == 0
    finally:
        await other.stop()


async def test_rate_is_bounded_and_writes_coalesce(kube: KubeEnv) -> None:
    metrics = [await make_metric(kube, f"m{i}") for i in range(30)]
    w = StatusWriter(await kube.new_client(), qps=40, burst=5)
    w.start()
    try:
        started = time.monotonic()
        for round_ in range(3):  # three values per metric, published faster than they can be written
            for m in metrics:
                await w.publish(m, state_for(m, float(round_)), changed=True)
        await w.flush(within=20)
        elapsed = time.monotonic() - started
    finally:
        await w.stop()
    assert w.stats.writes <= 30 + 5  # coalesced: one pending write per metric
    assert w.stats.coalesced >= 50
    assert elapsed >= (w.stats.writes - 5) / 40 * 0.9  # never faster than the bucket allows
    for m in metrics[:3]:
        assert (await kube.get("KeptnMetric", m.meta.name))["status"]["value"] == "2"  # newest value won
    if kube.standin is not None:
        assert kube.standin.count("patch", "keptnmetrics", "status") == w.stats.writes


async def test_deleted_metric_is_dropped(kube: KubeEnv, writer: StatusWriter) -> None:
    metric = await make_metric(kube, "m1")
    await kube.delete("KeptnMetric", "m1")
    await writer.publish(metric, state_for(metric), changed=True)
    await writer.flush()
    assert writer.stats.not_found == 1 and writer.stats.writes == 0 and writer.queued == 0


async def test_server_errors_are_retried(kube: KubeEnv) -> None:
    if kube.standin is None:
        pytest.skip("fault injection needs the stand-in")
    metric = await make_metric(kube, "m1")
    w = StatusWriter(await kube.new_client(), retry_delay=0.01)
    w.start()
    try:
        kube.standin.fail_next(lambda r: r.verb == "patch", code=503, reason="ServiceUnavailable")
        await w.publish(metric, state_for(metric, 7.0), changed=True)
        await asyncio.sleep(0.2)
        await w.flush()
        assert w.stats.errors == 1 and w.stats.writes == 1
        assert (await kube.get("KeptnMetric", "m1"))["status"]["value"] == "7"
    finally:
        await w.stop()


async def test_events_on_transition_to_error_and_back(kube: KubeEnv, writer: StatusWriter) -> None:
    metric = await make_metric(kube, "m1")
    await writer.publish(metric, state_for(metric, 1.0), changed=True)
    await writer.publish(metric, state_for(metric, 1.0, error="connection refused"), changed=True)
    await writer.publish(metric, state_for(metric, 1.0, error="connection refused again"), changed=True)
    await writer.publish(metric, state_for(metric, 2.0), changed=True)
    await writer.flush()
    events = (await kube.client.list(f"/api/v1/namespaces/{kube.namespace}/events"))["items"]
    mine = sorted(
        (e for e in events if e["involvedObject"]["name"] == "m1"), key=lambda e: e["metadata"]["name"]
    )
    assert [(e["type"], e["reason"]) for e in mine] == [
        ("Warning", FAILED_REASON),
        ("Normal", RECOVERED_REASON),
    ]
    assert mine[0]["involvedObject"]["kind"] == "KeptnMetric" and "connection refused" in mine[0]["message"]
    obj = await kube.get("KeptnMetric", "m1")
    assert obj["status"]["value"] == "2" and obj["status"]["errMsg"] == ""


async def test_paused_writer_writes_nothing(kube: KubeEnv, writer: StatusWriter) -> None:
    metric = await make_metric(kube, "m1")
    writer.pause()
    await writer.publish(metric, state_for(metric), changed=True)
    await writer.flush()
    assert writer.stats.writes == 0
    writer.resume()
    await writer.publish(metric, state_for(metric), changed=True)
    await writer.flush()
    assert writer.stats.writes == 1
    assert isinstance(metric.key, ObjectKey)


async def test_token_bucket_with_fake_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(d: float) -> None:
        slept.append(d)
        now[0] += d

    bucket = TokenBucket(10, 5, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(25):
        await bucket.acquire()
    assert now[0] == pytest.approx(2.0)  # 5 from the burst, 20 at 10/s
    assert len(slept) == 20
