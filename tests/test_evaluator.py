"""The evaluator: scheduling, single flight, concurrency, errors, backoff and stored results."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from metrics_server.evaluator import Evaluator, EvaluatorOptions
from metrics_server.model import KeptnMetric, ObjectKey, parse_metric, parse_provider, parse_secret
from metrics_server.state import MetricState, MetricStates
from metrics_server.store.base import IndexedStore
from tests.promapi import PromAPI


def provider_doc(
    url: str, name: str = "prom", namespace: str = "default", secret: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "prometheus", "targetServer": url}
    if secret:
        spec["secretKeyRef"] = {"name": secret, "key": "token"}
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def metric(
    name: str,
    query: str,
    interval: int = 60,
    namespace: str = "default",
    provider: str = "prom",
    rng: dict[str, Any] | None = None,
) -> KeptnMetric:
    spec: dict[str, Any] = {"provider": {"name": provider}, "query": query, "fetchIntervalSeconds": interval}
    if rng:
        spec["range"] = rng
    return parse_metric(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Recorder:
    """A StatusSink that remembers what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[ObjectKey, dict[str, Any], bool]] = []

    async def publish(self, metric: KeptnMetric, state: MetricState, changed: bool) -> None:
        self.published.append((metric.key, state.status(), changed))


@pytest.fixture
async def promapi(aiohttp_server: Any) -> AsyncIterator[tuple[PromAPI, str]]:
    api = PromAPI()
    server = await aiohttp_server(api.app())
    yield api, f"http://127.0.0.1:{server.port}"


@contextlib.asynccontextmanager
async def running(
    store: IndexedStore, **options: Any
) -> AsyncIterator[tuple[Evaluator, MetricStates, Recorder]]:
    states = MetricStates()
    sink = Recorder()
    evaluator = Evaluator(store, states, sink=sink, options=EvaluatorOptions(**options))
    evaluator.load()
    evaluator.activate()
    task = asyncio.create_task(evaluator.run())
    try:
        yield evaluator, states, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def store_with(url: str, *metrics: KeptnMetric) -> IndexedStore:
    store = IndexedStore(server_namespace="default")
    store.apply(parse_provider(provider_doc(url)))
    for m in metrics:
        store.apply(m)
    store.mark_synced()
    return store


async def test_identical_queries_are_fetched_once_and_shared(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["shared"] = 42
    api.latency = 0.05
    metrics = [metric(f"m{i}", "shared", namespace=f"ns{i % 3}") for i in range(50)]
    async with running(store_with(url, *metrics)) as (_, states, _sink):
        await eventually(lambda: all((s := states.get(m.key)) and s.value == 42 for m in metrics))
    assert api.calls["shared"] == 1


async def test_same_name_in_two_namespaces_never_collides(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values.update({"a": 1, "b": 2})
    one, two = metric("x", "a", namespace="ns-a"), metric("x", "b", namespace="ns")
    # upstream keyed its cache "ns-name": "ns-a"+"x" and "ns"+"a-x" could collide; keys are tuples here
    three = metric("a-x", "b", namespace="ns")
    async with running(store_with(url, one, two, three)) as (_, states, _sink):
        await eventually(
            lambda: all(states.get(m.key) and states.get(m.key).value is not None for m in (one, two, three))
        )  # type: ignore[union-attr]
        assert states.get(one.key).value == 1  # type: ignore[union-attr]
        assert states.get(two.key).value == 2  # type: ignore[union-attr]


async def test_concurrency_per_provider_is_bounded(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.default = 1
    api.latency = 0.05
    metrics = [metric(f"m{i}", f"q{i}") for i in range(40)]
    async with running(store_with(url, *metrics), provider_concurrency=5) as (_, states, _sink):
        await eventually(
            lambda: sum(1 for m in metrics if states.get(m.key) and states.get(m.key).value) == 40
        )  # type: ignore[union-attr]
    assert api.max_in_flight == 5


async def test_error_keeps_the_last_good_value_and_reports_errmsg(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 5
    m = metric("m", "q")
    async with running(store_with(url, m)) as (evaluator, states, sink):
        await eventually(lambda: states.get(m.key) is not None and states.get(m.key).value == 5)  # type: ignore[union-attr]
        api.fail_with["q"] = 503
        await eventually(lambda: evaluator.trigger(m.key))
        await eventually(lambda: bool(states.get(m.key).error))  # type: ignore[union-attr]
        state = states.get(m.key)
        assert state is not None
        assert state.value == 5 and state.value_text == "5"
        assert "HTTP 503" in state.error
        status = state.status()
        assert status["value"] == "5" and "HTTP 503" in status["errMsg"] and status["lastUpdated"]
        del api.fail_with["q"]
        api.values["q"] = 6
        await eventually(lambda: evaluator.trigger(m.key))
        await eventually(lambda: states.get(m.key).value == 6)  # type: ignore[union-attr]
        assert states.get(m.key).error == ""  # type: ignore[union-attr]
    assert [changed for _, _, changed in sink.published] == [True, True, True]


async def test_nan_is_an_error_never_a_silently_stale_value(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 3
    m = metric("m", "q")
    async with running(store_with(url, m)) as (evaluator, states, _sink):
        await eventually(lambda: states.get(m.key) is not None and states.get(m.key).value == 3)  # type: ignore[union-attr]
        api.values["q"] = "NaN"
        await eventually(lambda: evaluator.trigger(m.key))
        await eventually(lambda: "non-finite" in states.get(m.key).error)  # type: ignore[union-attr]
        assert states.get(m.key).value == 3  # type: ignore[union-attr]


async def test_stored_results_are_a_fifo_and_value_keeps_updating(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    m = metric("m", "q", rng={"interval": "5m", "step": "1m", "aggregation": "max", "storedResults": 3})
    async with running(store_with(url, m)) as (evaluator, states, _sink):
        for round_ in range(1, 6):
            api.values["q"] = [float(round_), 0.0]
            if round_ > 1:
                await eventually(lambda: evaluator.trigger(m.key))
            await eventually(lambda r=round_: states.get(m.key) is not None and states.get(m.key).value == r)  # type: ignore[union-attr,misc]
        status = states.get(m.key).status()  # type: ignore[union-attr]
    assert status["value"] == "5"  # upstream stops updating value once storedResults is set
    assert [r["value"] for r in status["intervalResults"]] == ["3", "4", "5"]
    assert status["intervalResults"][0]["range"] == {"interval": "5m", "step": "1m", "aggregation": "max"}


async def test_missing_provider_is_an_error_and_retried_when_it_appears(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 9
    store = IndexedStore()
    m = metric("m", "q", provider="later")
    store.apply(m)
    store.mark_synced()
    async with running(store) as (_, states, _sink):
        await eventually(lambda: "not found" in (states.get(m.key).error if states.get(m.key) else ""))  # type: ignore[union-attr]
        store.apply(parse_provider(provider_doc(url, name="later")))
        await eventually(lambda: states.get(m.key).value == 9)  # type: ignore[union-attr]


async def test_provider_in_server_namespace_serves_every_namespace(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 4
    store = IndexedStore(server_namespace="keptn-system")
    store.apply(parse_provider(provider_doc(url, name="shared", namespace="keptn-system")))
    m = metric("m", "q", namespace="team", provider="shared")
    store.apply(m)
    async with running(store) as (_, states, _sink):
        await eventually(lambda: states.get(m.key) is not None and states.get(m.key).value == 4)  # type: ignore[union-attr]


async def test_timeout_becomes_errmsg(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 1
    api.latency = 1.0
    m = metric("m", "q")
    async with running(store_with(url, m), fetch_timeout=0.1) as (_, states, _sink):
        await eventually(
            lambda: (
                "in time" in (states.get(m.key).error if states.get(m.key) else "")
                or "timed out" in states.get(m.key).error
            )
        )  # type: ignore[union-attr]


async def test_secret_values_never_reach_errmsg(aiohttp_server: Any) -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=401, text=f"denied for {request.headers.get('Authorization')}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    store = IndexedStore()
    store.apply(parse_provider(provider_doc(f"http://127.0.0.1:{server.port}", secret="creds")))
    store.apply(
        parse_secret(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": "default"},
                "stringData": {"token": "super-secret-token-123"},
            }
        )
    )
    m = metric("m", "q")
    store.apply(m)
    async with running(store) as (_, states, _sink):
        await eventually(lambda: bool(states.get(m.key) and states.get(m.key).error))  # type: ignore[union-attr]
        assert "super-secret-token-123" not in states.get(m.key).error  # type: ignore[union-attr]
        assert "HTTP 401" in states.get(m.key).error  # type: ignore[union-attr]


async def test_deleted_metric_disappears_and_spec_change_refetches(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values.update({"old": 1, "new": 2})
    m = metric("m", "old", interval=3600)
    store = store_with(url, m)
    async with running(store) as (_, states, _sink):
        await eventually(lambda: states.get(m.key) is not None and states.get(m.key).value == 1)  # type: ignore[union-attr]
        store.apply(metric("m", "new", interval=3600))
        await eventually(lambda: states.get(m.key).value == 2)  # type: ignore[union-attr]
        store.apply(metric("m", "new", interval=3600), deleted=True)
        assert states.get(m.key) is None


async def test_backoff_grows_exponentially_and_is_capped() -> None:
    store = IndexedStore()
    evaluator = Evaluator(store, MetricStates(), options=EvaluatorOptions(max_backoff=40, backoff_jitter=0))
    now = asyncio.get_running_loop().time()
    delays = [round(evaluator._next_due(now, 10, failures) - now) for failures in range(1, 6)]
    assert delays == [10, 20, 40, 40, 40]


async def test_inactive_evaluator_does_not_fetch(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["q"] = 1
    store = store_with(url, metric("m", "q"))
    evaluator = Evaluator(store, MetricStates())
    evaluator.load()
    task = asyncio.create_task(evaluator.run())
    await asyncio.sleep(0.2)
    assert api.calls["q"] == 0
    evaluator.activate()
    await eventually(lambda: api.calls["q"] == 1)
    evaluator.deactivate()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
