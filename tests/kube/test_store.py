"""KubernetesStore against the `kube` fixture: list+watch, drops, 410s, bookmarks, Secrets."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from metrics_server.kube.store import KubernetesStore
from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.store.base import StoreEvent
from tests.kube_fixtures import KubeEnv, metric_doc, provider_doc
from tests.kube_standin import KubeStandin
from tests.waiting import until as wait_until

pytestmark = pytest.mark.kube


until = functools.partial(wait_until, within=5.0)


@pytest_asyncio.fixture
async def store(kube: KubeEnv) -> AsyncIterator[KubernetesStore]:
    client = await kube.new_client()
    s = KubernetesStore(client, namespaces=[kube.namespace], server_namespace=kube.namespace)
    yield s
    await s.stop()


async def test_list_then_watch_adds_updates_deletes(kube: KubeEnv, store: KubernetesStore) -> None:
    await kube.create(provider_doc("prom"))
    await kube.create(metric_doc("before"))
    events: list[StoreEvent] = []
    store.subscribe(events.append)
    await store.start()
    key = ObjectKey(kube.namespace, "before")
    assert store.get_metric(key) is not None and store.synced
    assert store.resolve_provider(store.get_metric(key)) is not None  # type: ignore[arg-type]
    await kube.create(metric_doc("after"))
    await until(lambda: store.get_metric(ObjectKey(kube.namespace, "after")))
    await kube.patch("KeptnMetric", "after", {"spec": {"query": "changed"}})
    await until(lambda: (m := store.get_metric(ObjectKey(kube.namespace, "after"))) and m.query == "changed")
    await kube.delete("KeptnMetric", "before")
    await until(lambda: store.get_metric(key) is None)
    kinds = [(e.type.value, e.obj.key.name) for e in events if isinstance(e.obj, KeptnMetric)]
    assert kinds == [("ADDED", "before"), ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]


async def test_survives_watch_drops(kube: KubeEnv, store: KubernetesStore, standin_only: KubeStandin) -> None:
    await store.start()
    lists_before = sum(i.lists for i in store.informers)
    for n in range(3):
        standin_only.drop_watches()
        await kube.create(metric_doc(f"m{n}"))
        await until(lambda n=n: store.get_metric(ObjectKey(kube.namespace, f"m{n}")))  # type: ignore[misc]
    # resumed from the last resourceVersion: no relist needed
    assert sum(i.lists for i in store.informers) == lists_before


async def test_relists_after_410_and_sees_missed_deletes(
    kube: KubeEnv, store: KubernetesStore, standin_only: KubeStandin
) -> None:
    await kube.create(metric_doc("gone-soon"))
    await store.start()
    metric_inf = store.informers[0]
    # make the informer's version expire while it is disconnected and miss a delete
    stale = metric_inf.resource_version
    await metric_inf.stop()
    await kube.delete("KeptnMetric", "gone-soon")
    await kube.create(metric_doc("new"))
    standin_only.compact()
    metric_inf.resource_version = stale
    metric_inf.start()
    await until(lambda: store.get_metric(ObjectKey(kube.namespace, "new")))
    assert store.get_metric(ObjectKey(kube.namespace, "gone-soon")) is None
    assert metric_inf.lists == 2


async def test_bookmarks_advance_resource_version(kube: KubeEnv, store: KubernetesStore) -> None:
    await store.start()
    metric_inf = store.informers[0]
    start_rv = int(metric_inf.resource_version or 0)
    # changes to another kind move the global resourceVersion; bookmarks carry it to us
    for n in range(3):
        await kube.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{n}"}, "data": {}}
        )
    if kube.real:
        pytest.skip("a real API server sends bookmarks about once a minute")
    await until(lambda: int(metric_inf.resource_version or 0) > start_rv + 2)


async def test_invalid_objects_are_skipped(
    kube: KubeEnv, store: KubernetesStore, standin_only: KubeStandin, caplog: pytest.LogCaptureFixture
) -> None:
    bad = metric_doc("bad")
    bad["spec"]["range"] = {"interval": "5m", "step": "1m"}  # step without aggregation
    await kube.create(bad)
    await kube.create(metric_doc("good"))
    await store.start()
    assert store.get_metric(ObjectKey(kube.namespace, "good")) is not None
    assert store.get_metric(ObjectKey(kube.namespace, "bad")) is None
    assert sum("ignoring invalid KeptnMetric" in r.message for r in caplog.records) == 1


async def test_secrets_get_only_cached_and_invalidated(kube: KubeEnv, store: KubernetesStore) -> None:
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": base64.b64encode(b"s3cret").decode()},
        }
    )
    await kube.create(provider_doc("prom", secret="creds"))
    await store.start()
    provider = store.get_provider(ObjectKey(kube.namespace, "prom"))
    assert provider is not None
    results = await asyncio.gather(*(store.provider_secret(provider) for _ in range(5)))
    assert all(s is not None and s.text("password") == "s3cret" for s in results)
    assert store.secret_reads == 1  # concurrent reads share one get; later ones hit the cache
    store.invalidate_secret(ObjectKey(kube.namespace, "creds"))
    await store.provider_secret(provider)
    assert store.secret_reads == 2
    assert await store.get_secret(ObjectKey(kube.namespace, "missing")) is None
    if kube.standin is not None:
        assert kube.standin.count("get", "secrets") == 3
        assert kube.standin.count("list", "secrets") == 0 and kube.standin.count("watch", "secrets") == 0


async def test_secret_ttl(kube: KubeEnv) -> None:
    now = [0.0]
    client = await kube.new_client()
    store = KubernetesStore(
        client, namespaces=[kube.namespace], secret_ttl=10, clock=lambda: now[0], watch_auth_configmap=False
    )
    await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {}})
    key = ObjectKey(kube.namespace, "creds")
    await store.get_secret(key)
    now[0] = 9
    await store.get_secret(key)
    assert store.secret_reads == 1
    now[0] = 11
    await store.get_secret(key)
    assert store.secret_reads == 2


async def test_auth_configmap_watch(kube: KubeEnv, standin_only: KubeStandin) -> None:
    client = await kube.new_client()
    store = KubernetesStore(client, namespaces=[kube.namespace])
    seen: list[dict[str, str] | None] = []
    store.subscribe_auth_configmap(seen.append)
    await store.start()
    assert await store.wait_auth_configmap(5) is None
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication"},
            "data": {"client-ca-file": "CA1"},
        },
        namespace="kube-system",
    )
    await until(lambda: store.auth_configmap == {"client-ca-file": "CA1"})
    await kube.client.merge_patch(
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
        {"data": {"client-ca-file": "CA2"}},
    )
    await until(lambda: seen and seen[-1] == {"client-ca-file": "CA2"})
    assert standin_only.count("list", "configmaps") >= 1
    await store.stop()


async def test_no_hot_loop_on_errors_and_recovery(kube: KubeEnv, standin_only: KubeStandin) -> None:
    from metrics_server.kube.client import resource_path
    from metrics_server.kube.informer import Backoff, Informer

    standin_only.fail_next(lambda r: r.resource == "keptnmetrics", code=500, times=10_000)
    seen: list[int] = []
    inf = Informer(
        await kube.new_client(),
        resource_path("metrics.keptn.sh", "v1", "keptnmetrics", kube.namespace),
        lambda items: seen.append(len(items)),
        lambda t, o: None,
        backoff=Backoff(base=0.05, cap=0.4),
    )
    inf.start()
    await asyncio.sleep(1.0)
    attempts = standin_only.count("list", "keptnmetrics")
    assert 2 <= attempts <= 15  # backing off, not spinning
    standin_only._failures.clear()
    await until(lambda: inf.synced.is_set(), within=2)
    # a watch that keeps ending at once (server drops it) is retried with backoff too
    before = standin_only.count("watch", "keptnmetrics")
    standin_only.fail_next(lambda r: r.verb == "watch", code=500, times=10_000)
    await asyncio.sleep(1.0)
    assert standin_only.count("watch", "keptnmetrics") - before <= 15
    standin_only._failures.clear()
    await kube.create(metric_doc("late"))
    await until(lambda: inf.backoff.failures == 0, within=3)
    await inf.stop()
