"""Two replicas in Kubernetes mode: one leader fetches and writes status, both serve, failover."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from metrics_server.config import ServeConfig
from metrics_server.kube.client import KubeClient
from metrics_server.kube.runtime import KubernetesRuntime
from metrics_server.model import ObjectKey
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.waiting import until as wait_until

pytestmark = pytest.mark.kube


until = functools.partial(wait_until, within=10.0)


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[dict[str, Any]]:
    box: dict[str, Any] = {"value": 42, "hits": 0}

    async def handler(request: web.Request) -> web.Response:
        box["hits"] += 1
        return web.json_response(box["value"])

    app = web.Application()
    app.router.add_get("/value", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    box["url"] = f"http://127.0.0.1:{port}"
    yield box
    await runner.cleanup()


def serve_args(kube: KubeEnv) -> ServeConfig:
    ns = kube.namespace
    return ServeConfig.from_argv(
        [
            "--kubeconfig",
            kube.kubeconfig,
            "--namespaces",
            ns,
            "--server-namespace",
            ns,
            "--leader-election-namespace",
            ns,
            "--leader-election-lease-duration",
            "1",
            "--leader-election-renew-deadline",
            "0.6",
            "--leader-election-retry-period",
            "0.15",
            "--metrics-port",
            "0",
            "--secure-port",
            "0",
            "--bind-address",
            "127.0.0.1",
            "--status-write-qps",
            "50",
            "--status-refresh-interval",
            "60",
        ]
    )


async def test_two_replicas_leader_writes_both_serve_failover(kube: KubeEnv, backend: dict[str, Any]) -> None:
    await kube.create(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "web"},
            "spec": {"type": "http", "targetServer": backend["url"]},
        }
    )
    await kube.create(metric_doc("m1", provider="web", query="/value", interval=1))
    key = ObjectKey(kube.namespace, "m1")
    clients: list[KubeClient] = [await kube.new_client(), await kube.new_client()]
    a = KubernetesRuntime(serve_args(kube), clients[0], identity="a")
    b = KubernetesRuntime(serve_args(kube), clients[1], identity="b")
    await a.start()
    await until(lambda: a.leading)
    await b.start()

    async def status_value() -> str | None:
        return ((await kube.get("KeptnMetric", "m1")).get("status") or {}).get("value")

    async def wait_status(value: str) -> None:
        for _ in range(500):
            if await status_value() == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"status never became {value}")

    def served(rt: KubernetesRuntime) -> float | None:
        st = rt.states.get(key)
        return None if st is None else st.value

    await wait_status("42")
    await until(lambda: served(b) == 42)  # the standby serves what the leader wrote
    assert not b.leading and b.writer.stats.writes == 0
    backend["value"] = 43
    await wait_status("43")
    await until(lambda: served(b) == 43)

    await a.stop()  # releases the Lease
    took = await until(lambda: b.leading, within=3)
    assert took < 1.0  # released: no need to wait out the lease duration
    backend["value"] = 44
    await wait_status("44")
    assert b.writer.stats.writes >= 1
    await b.stop()
    lease = await kube.get("Lease", "keptn-metrics-leader")
    assert lease["spec"].get("holderIdentity", "") == ""


async def test_run_kubernetes_sigterm_releases_lease(kube: KubeEnv) -> None:
    import os
    import signal

    from metrics_server.kube.runtime import run_kubernetes

    task = asyncio.get_running_loop().create_task(run_kubernetes(serve_args(kube)))

    async def holder() -> str:
        try:
            return str((await kube.get("Lease", "keptn-metrics-leader"))["spec"].get("holderIdentity") or "")
        except Exception:
            return ""

    for _ in range(300):
        if await holder():
            break
        await asyncio.sleep(0.02)
    assert await holder()
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 0
    assert await holder() == ""
