"""`keptn-metrics serve` in Kubernetes mode, run as a process exactly as the Deployment runs it.

Against the stand-in, or a real API server when KUBE_APISERVER_URL and KUBECONFIG are set:
the process watches, fetches, writes status, serves every API from it, holds the Lease,
and on SIGTERM turns unready, drains and releases the Lease.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kube_fixtures import KubeEnv, metric_doc
from tests.serve_process import free_ports, kube_mode_args, serve_process, start_exporter

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def exporter(aiohttp_server: Any) -> str:
    return await start_exporter(aiohttp_server, "# TYPE queue_depth gauge\nqueue_depth 42\n")


@pytest.fixture
async def server(
    kube: KubeEnv, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, int]]]:
    ports = free_ports()
    args = [
        *kube_mode_args(kube.kubeconfig, kube.namespace, ports),
        "--leader-election-lease-duration", "3", "--leader-election-renew-deadline", "2",
        "--leader-election-retry-period", "0.5", "--cert-dir", str(tmp_path / "certs"),
        "--authorization-mode", "AlwaysAllow", "--anonymous-auth", "--shutdown-delay", "0.5",
    ]  # fmt: skip
    async with serve_process(args) as proc:
        yield proc, ports


async def until(check: Any, limit: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def test_serve_watches_fetches_writes_status_serves_and_releases_the_lease(
    kube: KubeEnv, exporter: str, server: tuple[asyncio.subprocess.Process, dict[str, int]]
) -> None:
    proc, ports = server
    provider = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": "exporter"},
        "spec": {"type": "openmetrics", "targetServer": exporter},
    }
    await kube.create(provider)
    await kube.create(metric_doc("queue", provider="exporter", query="queue_depth", interval=2))

    async def status() -> dict[str, Any] | None:
        found = (await kube.get("KeptnMetric", "queue")).get("status") or {}
        return found if found.get("value") else None

    try:
        written = await until(status)
    except AssertionError:
        proc.kill()
        raise AssertionError((await proc.communicate())[0].decode()[-3000:]) from None
    assert written["value"] == "42" and written["errMsg"] == "" and written["lastUpdated"].endswith("Z")

    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    ns = kube.namespace
    async with aiohttp.ClientSession() as http:
        path = (
            f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/keptnmetrics.metrics.keptn.sh/queue/queue"
        )
        async with http.get(f"https://127.0.0.1:{ports['secure']}{path}", ssl=insecure) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            item = (await resp.json())["items"][0]
            assert item["value"] == "42" and item["describedObject"]["namespace"] == ns
        async with http.get(f"http://127.0.0.1:{ports['metrics']}/api/v1/metrics/{ns}/queue") as resp:
            assert await resp.json() == {"metric": "queue", "namespace": ns, "value": "42"}
        lease = await kube.client.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/keptn-metrics-leader"
        )
        assert lease["spec"]["holderIdentity"].startswith("replica-a")

        proc.terminate()
        ready = await until(lambda: _readyz(http, ports["secure"], insecure), limit=5)
        assert ready == 503  # unready first, then drain
    output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 0, output[-2000:]
    assert all(json.loads(line)["level"] != "error" for line in output.splitlines() if line.startswith("{"))
    lease = await kube.client.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/keptn-metrics-leader")
    assert not lease["spec"].get("holderIdentity")  # released for the next replica


async def _readyz(http: aiohttp.ClientSession, port: int, ctx: ssl.SSLContext) -> int | None:
    try:
        async with http.get(f"https://127.0.0.1:{port}/readyz", ssl=ctx) as resp:
            return resp.status if resp.status == 503 else None
    except aiohttp.ClientError:
        return None
