"""The in-cluster controller against the Kubernetes API stand-in (or a real API server when
KUBE_APISERVER_URL/KUBECONFIG are set): KeptnEvaluations and Analyses reach upstream-shaped
final statuses; retries follow an injected clock, so no test waits out a retry interval."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from metrics_server.controller.flags import ControllerOptions
from metrics_server.controller.gauges import AnalysisGauges
from metrics_server.controller.runtime import run_controller
from metrics_server.kube.client import resource_path
from metrics_server.kube.store import KubernetesStore
from metrics_server.model import ObjectKey
from metrics_server.state import rfc3339
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.promapi import PromAPI

pytestmark = pytest.mark.kube

PLURALS = {
    "KeptnEvaluation": ("lifecycle.keptn.sh", "keptnevaluations"),
    "KeptnEvaluationDefinition": ("lifecycle.keptn.sh", "keptnevaluationdefinitions"),
    "Analysis": ("metrics.keptn.sh", "analyses"),
    "AnalysisDefinition": ("metrics.keptn.sh", "analysisdefinitions"),
    "AnalysisValueTemplate": ("metrics.keptn.sh", "analysisvaluetemplates"),
    "KeptnMetric": ("metrics.keptn.sh", "keptnmetrics"),
    "KeptnMetricsProvider": ("metrics.keptn.sh", "keptnmetricsproviders"),
}


class FakeClock:
    """Wall-clock `now` that only moves when the test says so; `sleep` waits for `advance`."""

    def __init__(self) -> None:
        self.t = time.time()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._ids), fut))
        await fut

    @property
    def pending(self) -> list[float]:
        return sorted(d - self.t for d, _i, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        self.t += seconds
        while self._sleepers and self._sleepers[0][0] <= self.t:
            _d, _i, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


@dataclass
class Env:
    kube: KubeEnv
    clock: FakeClock
    store: KubernetesStore
    registry: CollectorRegistry

    @property
    def ns(self) -> str:
        return self.kube.namespace

    def path(self, kind: str, name: str | None = None, sub: str | None = None) -> str:
        group, plural = PLURALS[kind]
        return resource_path(group, "v1", plural, self.ns, name, sub)

    async def create(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        group, _ = PLURALS[kind]
        body = {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
        return await self.kube.client.create_object(self.path(kind), body)

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        return await self.kube.client.get(self.path(kind, name))

    async def metric(
        self, name: str, value: str | None, *, age: float = 0.0, err: str = "", interval: int = 10
    ) -> None:
        try:
            await self.kube.client.create_object(
                self.path("KeptnMetric"), metric_doc(name, interval=interval)
            )
        except Exception:
            pass
        status: dict[str, Any] = {
            "value": value or "",
            "errMsg": err,
            "lastUpdated": rfc3339(self.clock.now() - age),
        }
        await self.kube.client.merge_patch(self.path("KeptnMetric", name, "status"), {"status": status})
        # the store (the controller's view of KeptnMetrics) must have seen it
        await until(
            lambda: (
                (m := self.store.get_metric(ObjectKey(self.ns, name))) is not None
                and m.status.get("value") == (value or "")
                and m.status.get("errMsg", "") == err
            )
        )

    async def wait_status(
        self, kind: str, name: str, check: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def probe() -> bool:
            nonlocal last
            last = (await self.get(kind, name)).get("status") or {}
            return check(last)

        await until_async(probe, what=lambda: f"{kind} {name} status {last}")
        return last

    async def events(self, name: str) -> list[dict[str, Any]]:
        items = (await self.kube.client.list(resource_path("", "v1", "events", self.ns))).get("items") or []
        return [e for e in items if e["involvedObject"]["name"] == name]


async def until(check: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def until_async(check: Callable[[], Any], limit: float = 5.0, what: Callable[[], str] = str) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"condition not reached: {what()}"
        await asyncio.sleep(0.02)


async def settle() -> None:
    """Let the controller finish whatever it can do without time passing."""
    await asyncio.sleep(0.2)


@pytest_asyncio.fixture
async def env(kube: KubeEnv) -> AsyncIterator[Env]:
    clock = FakeClock()
    store = KubernetesStore(
        kube.client, namespaces=[kube.namespace], server_namespace=kube.namespace, watch_auth_configmap=False
    )
    await store.start()
    # a convenience the tests use to wait for the store's copy of a metric
    store.get_metric_by_name = lambda ns, name: store.get_metric(ObjectKey(ns, name))  # type: ignore[attr-defined]
    registry = CollectorRegistry()
    options = ControllerOptions(server_namespace=kube.namespace, analysis_max_retries=3, workers=2)
    task = asyncio.create_task(
        run_controller(
            kube.client,
            store,
            None,
            options,
            clock=clock,
            gauges=AnalysisGauges(registry),
            namespaces=[kube.namespace],
        )
    )
    try:
        yield Env(kube, clock, store, registry)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await store.stop()


def ked_spec(*objectives: tuple[str, str], retries: int = 3, interval: str = "5s") -> dict[str, Any]:
    return {
        "objectives": [{"keptnMetricRef": {"name": m}, "evaluationTarget": t} for m, t in objectives],
        "retries": retries,
        "retryInterval": interval,
    }


def ke_spec(definition: str, retries: int = 3, interval: str = "5s") -> dict[str, Any]:
    return {
        "evaluationDefinition": definition,
        "workload": "app-frontend",
        "workloadVersion": "1.0.0",
        "appName": "app",
        "appVersion": "1.0.0",
        "checkType": "pre-eval",
        "retries": retries,
        "retryInterval": interval,
    }


# -- KeptnEvaluation ------------------------------------------------------------------------


async def test_evaluation_passes(env: Env) -> None:
    await env.metric("cpus", "6")
    await env.metric("errors", "0")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">4"), ("errors", "==0")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate"))
    status = await env.wait_status(
        "KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Succeeded"
    )
    assert status["retryCount"] == 1
    assert status["evaluationStatus"] == {
        "cpus": {"value": "6", "status": "Succeeded", "message": "value '6' met objective '>4'"},
        "errors": {"value": "0", "status": "Succeeded", "message": "value '0' met objective '==0'"},
    }
    assert status["startTime"] and status["endTime"]
    reasons = [e["reason"] for e in await env.events("run-1")]
    assert "EvaluationSucceeded" in reasons
    event = next(e for e in await env.events("run-1") if e["reason"] == "EvaluationSucceeded")
    assert event["type"] == "Normal" and event["involvedObject"]["kind"] == "KeptnEvaluation"


async def test_evaluation_fails_after_retries_with_time_control(env: Env) -> None:
    await env.metric("cpus", "2")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">4")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=3, interval="30s"))
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("retryCount") == 1)
    assert status["overallStatus"] == "Progressing"
    assert status["evaluationStatus"]["cpus"]["message"] == "value '2' did not meet objective '>4'"
    # nothing happens until the retry interval has passed on the injected clock
    await settle()
    env.clock.advance(29)
    await settle()
    assert (await env.get("KeptnEvaluation", "run-1"))["status"]["retryCount"] == 1
    env.clock.advance(1)
    await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("retryCount") == 2)
    await until(lambda: bool(env.clock.pending))
    env.clock.advance(30)
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Failed")
    assert status["retryCount"] == 3 and status["endTime"]
    failed = [e for e in await env.events("run-1") if e["reason"] == "EvaluationFailed"]
    assert failed and failed[0]["type"] == "Warning" and "retryCount exceeded" in failed[0]["message"]


async def test_evaluation_recovers_on_a_retry(env: Env) -> None:
    await env.metric("cpus", "2")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">=4")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=5))
    await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("retryCount") == 1)
    await env.metric("cpus", "4")
    await until(lambda: bool(env.clock.pending))
    env.clock.advance(5)
    status = await env.wait_status(
        "KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Succeeded"
    )
    assert status["retryCount"] == 2


async def test_missing_metric(env: Env) -> None:
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("nope", ">1"), retries=1))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=1))
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Failed")
    assert status["evaluationStatus"]["nope"]["message"] == 'keptnmetrics.metrics.keptn.sh "nope" not found'


async def test_stale_metric_never_passes(env: Env) -> None:
    await env.metric("cpus", "6", age=600, interval=10)  # 10 minutes old, fetched every 10s
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">4")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=1))
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Failed")
    item = status["evaluationStatus"]["cpus"]
    assert item["status"] == "Failed" and "is stale" in item["message"] and item["value"] == "6"


async def test_erroring_metric_never_passes(env: Env) -> None:
    await env.metric("cpus", "6", err="connection refused")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">4")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=1))
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Failed")
    assert "reports an error: connection refused" in status["evaluationStatus"]["cpus"]["message"]


async def test_invalid_target_fails_at_once(env: Env) -> None:
    await env.metric("cpus", "6")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", "about 4")))
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate", retries=10))
    status = await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Failed")
    assert status["retryCount"] == 0
    events = [e for e in await env.events("run-1") if e["reason"] == "InvalidEvaluationDefinition"]
    assert events and "evaluationTarget" in events[0]["message"]


async def test_definition_created_later(env: Env) -> None:
    await env.metric("cpus", "6")
    await env.create("KeptnEvaluation", "run-1", ke_spec("gate"))
    await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Pending")
    await env.create("KeptnEvaluationDefinition", "gate", ked_spec(("cpus", ">4")))
    await until(lambda: bool(env.clock.pending))
    env.clock.advance(10)
    await env.wait_status("KeptnEvaluation", "run-1", lambda s: s.get("overallStatus") == "Succeeded")


# -- Analysis -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def prom(aiohttp_server: Any) -> AsyncIterator[tuple[PromAPI, str]]:
    api = PromAPI()
    server = await aiohttp_server(api.app())
    yield api, str(server.make_url("")).rstrip("/")


async def analysis_setup(env: Env, url: str, timeframe: dict[str, str]) -> None:
    await env.create("KeptnMetricsProvider", "prom", {"type": "prometheus", "targetServer": url})
    await until(lambda: env.store.get_provider(ObjectKey(env.ns, "prom")) is not None)
    await env.create(
        "AnalysisValueTemplate", "latency", {"provider": {"name": "prom"}, "query": 'latency{job="{{.job}}"}'}
    )
    await env.create("AnalysisValueTemplate", "errors", {"provider": {"name": "prom"}, "query": "errors"})
    await env.create(
        "AnalysisDefinition",
        "slo",
        {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "latency"},
                    "target": {
                        "failure": {"greaterThan": {"fixedValue": "500m"}},
                        "warning": {"greaterThan": {"fixedValue": "300m"}},
                    },
                    "weight": 2,
                },
                {
                    "analysisValueTemplateRef": {"name": "errors"},
                    "target": {"failure": {"greaterThan": {"fixedValue": 0}}},
                    "keyObjective": True,
                },
            ],
            "totalScore": {"passPercentage": 90, "warningPercentage": 50},
        },
    )
    await env.create(
        "Analysis",
        "release-1",
        {"analysisDefinition": {"name": "slo"}, "timeframe": timeframe, "args": {"job": "api"}},
    )


PAST = {"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T10:05:00Z"}


def gauge(env: Env, metric: str, labels: dict[str, str]) -> float | None:
    return env.registry.get_sample_value(metric, labels)


async def test_analysis_completes_and_gauges_follow(env: Env, prom: tuple[PromAPI, str]) -> None:
    api, url = prom
    api.values.update({'latency{job="api"}': 0.1, "errors": 0})
    await analysis_setup(env, url, PAST)
    status = await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Completed")
    assert status["pass"] is True and status["warning"] is False
    assert status["timeframe"] == {"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T10:05:00Z"}
    assert status["storedValues"]["latency"] == {
        "objectiveReference": {"name": "latency"},
        "query": 'latency{job="api"}',
        "value": "0.1",
    }
    raw = json.loads(status["raw"])
    assert (raw["totalScore"], raw["maximumScore"], raw["pass"]) == (3, 3, True)
    labels = {
        "name": "release-1",
        "namespace": env.ns,
        "from": "2024-05-01 10:00:00 +0000 UTC",
        "to": "2024-05-01 10:05:00 +0000 UTC",
    }
    assert gauge(env, "keptn_analysis_result", labels) == 100.0
    olabels = {
        "name": "latency",
        "namespace": "",
        "analysis_name": "release-1",
        "analysis_namespace": env.ns,
        "key_objective": "false",
        "weight": "2",
        "from": labels["from"],
        "to": labels["to"],
    }
    assert gauge(env, "keptn_objective_result", olabels) == 0.1
    assert any(e["reason"] == "AnalysisCompleted" for e in await env.events("release-1"))
    # deleting the Analysis removes its series
    await env.kube.client.delete(env.path("Analysis", "release-1"))
    await until(lambda: gauge(env, "keptn_analysis_result", labels) is None)
    assert gauge(env, "keptn_objective_result", olabels) is None


async def test_analysis_key_objective_fails(env: Env, prom: tuple[PromAPI, str]) -> None:
    api, url = prom
    api.values.update({'latency{job="api"}': 0.1, "errors": 3})
    await analysis_setup(env, url, PAST)
    status = await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Completed")
    assert status["pass"] is False and status["warning"] is False
    assert any(e["reason"] == "AnalysisFailed" for e in await env.events("release-1"))


async def test_analysis_retries_with_backoff_then_passes(env: Env, prom: tuple[PromAPI, str]) -> None:
    api, url = prom
    api.values.update({'latency{job="api"}': 0.4, "errors": 0})
    api.fail_with["errors"] = 503
    await analysis_setup(env, url, {"recent": "10m"})
    status = await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Progressing")
    assert (
        "errMsg" in status["storedValues"]["errors"] and status["storedValues"]["latency"]["value"] == "0.4"
    )
    assert any(e["reason"] == "AnalysisRetry" for e in await env.events("release-1"))
    frozen = status["timeframe"]
    api.fail_with.clear()
    await until(lambda: bool(env.clock.pending))
    assert env.clock.pending[0] == pytest.approx(10.0)  # --analysis-retry-interval
    env.clock.advance(10)
    status = await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Completed")
    assert status["timeframe"] == frozen  # a recent timeframe is fixed at the first attempt
    assert status["pass"] is False and status["warning"] is True  # latency warns: 1 + 1 of 3 = 66.7%
    assert api.calls['latency{job="api"}'] == 1  # the stored value was not fetched again


async def test_analysis_gives_up_after_the_retry_limit(env: Env, prom: tuple[PromAPI, str]) -> None:
    api, url = prom
    api.values.update({'latency{job="api"}': 0.1})
    api.fail_with["errors"] = 500
    await analysis_setup(env, url, PAST)
    await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Progressing")
    for delay in (10, 20):  # doubling backoff, limit 3 attempts
        await until(lambda: bool(env.clock.pending))
        assert env.clock.pending[0] == pytest.approx(delay)
        env.clock.advance(delay)
    status = await env.wait_status("Analysis", "release-1", lambda s: s.get("state") == "Completed")
    assert status["pass"] is False
    raw = json.loads(status["raw"])
    assert raw["objectiveResults"][1]["score"] == 0 and "error" in raw["objectiveResults"][1]
