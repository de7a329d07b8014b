"""`keptn-metrics serve` in Kubernetes mode behind the kube-aggregator player (tests/aggregator.py).

The server runs as a process with its default authorization (SubjectAccessReview webhook)
against the `kube` fixture: the stand-in, where it holds only deploy/'s RBAC and every review
is answered by RBAC with kube-apiserver's bootstrap policy, or a real API server when
KUBE_APISERVER_URL and KUBECONFIG are set (whose own RBAC then answers). The player brings its
own front-proxy CA (a test cannot hold the cluster's), given to the server as flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.aggregator import Aggregator, APIService, HorizontalPodAutoscaler, MetricsClientError
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.rbac import DEFAULT_SERVER_NAMESPACE, deploy_objects
from tests.serve_process import free_ports, kube_mode_args, serve_process, start_exporter

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parents[2]
RES = "keptnmetrics.metrics.keptn.sh"
APISERVICES = tuple(
    APIService.from_manifest(d)
    for d in deploy_objects(values={"externalMetrics": {"enabled": True}})
    if d["kind"] == "APIService"
)


@pytest.fixture
async def exporter(aiohttp_server: Any) -> str:
    return await start_exporter(aiohttp_server, "# TYPE queue_depth gauge\nqueue_depth 7\n")


@pytest.fixture
async def served(
    kube: KubeEnv, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Aggregator]]:
    serving_ca, front_proxy_ca = trustme.CA(), trustme.CA()
    serving = tmp_path / "serving.pem"
    serving_ca.issue_cert(
        f"keptn-metrics.{DEFAULT_SERVER_NAMESPACE}.svc", "127.0.0.1"
    ).private_key_and_cert_chain_pem.write_to_path(str(serving))
    fp_ca, fp_client = tmp_path / "front-proxy-ca.crt", tmp_path / "front-proxy-client.pem"
    front_proxy_ca.cert_pem.write_to_path(str(fp_ca))
    front_proxy_ca.issue_cert(common_name="front-proxy-client").private_key_and_cert_chain_pem.write_to_path(
        str(fp_client)
    )
    ports = free_ports()
    secure = ports["secure"]
    args = kube_mode_args(kube.kubeconfig, kube.namespace, ports)
    args += [
        "--tls-cert-file", str(serving), "--tls-private-key-file", str(serving),
        "--requestheader-client-ca-file", str(fp_ca), "--requestheader-allowed-names", "front-proxy-client",
        "--shutdown-delay", "0",
    ]  # fmt: skip
    async with (
        serve_process(args) as proc,
        Aggregator(
            f"https://127.0.0.1:{secure}", serving_ca.cert_pem.bytes(), str(fp_client), APISERVICES
        ) as agg,
    ):
        yield proc, agg


async def _eventually(check: Any, proc: asyncio.subprocess.Process, limit: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        try:
            return await check()
        except (AssertionError, MetricsClientError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                proc.kill()
                out = (await proc.communicate())[0].decode()[-3000:]
                raise AssertionError(f"{exc}\n--- server output ---\n{out}") from None
        await asyncio.sleep(0.3)


async def test_the_aggregator_finds_every_version_current_and_the_hpa_scales_on_it(
    kube: KubeEnv, exporter: str, served: tuple[asyncio.subprocess.Process, Aggregator]
) -> None:
    proc, agg = served
    reviewed: list[tuple[dict[str, Any], bool]] = []
    if kube.standin is not None:  # record what RBAC was asked and answered
        review = kube.standin.access_reviewer

        def recording(spec: Any) -> tuple[bool, str]:
            allowed, reason = review(spec)
            reviewed.append((dict(spec), allowed))
            return allowed, reason

        kube.standin.access_reviewer = recording
    provider = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": "exporter"},
        "spec": {"type": "openmetrics", "targetServer": exporter},
    }
    await kube.create(provider)
    await kube.create(metric_doc("queue", provider="exporter", query="queue_depth", interval=1))

    async def all_current() -> dict[str, Any]:
        agg.errors.clear()
        await agg.sync()
        doc = agg.discovery_document()
        fresh = {
            f"{g['metadata']['name']}/{v['version']}": v["freshness"]
            for g in doc["items"]
            for v in g["versions"]
        }
        assert set(fresh.values()) == {"Current"} and len(fresh) == 3, (fresh, agg.conditions, agg.errors)
        assert agg.errors == []
        return doc

    doc = await _eventually(all_current, proc)
    custom = doc["items"][0]["versions"][0]
    assert custom["version"] == "v1beta2"
    assert [s["subresource"] for s in custom["resources"][0]["subresources"]] == ["queue"]

    hpa = HorizontalPodAutoscaler(agg)
    ns = kube.namespace

    async def object_metric() -> dict[str, Any]:
        return await hpa.object_metric(ns, RES, "queue", "queue")

    item = await _eventually(object_metric, proc)
    assert item["value"] == "7" and item["describedObject"]["namespace"] == ns
    assert [i["value"] for i in await hpa.external_metric(ns, "queue")] == ["7"]
    if kube.standin is not None:
        asked = {(spec["user"], tuple(spec.get("groups") or ()), allowed) for spec, allowed in reviewed}
        assert ("system:aggregator", ("system:authenticated",), True) in asked  # OpenAPI downloads
        assert all(allowed for _, allowed in reviewed), [s for s, a in reviewed if not a]
