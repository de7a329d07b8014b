"""`keptn-metrics serve` with delegated authentication and authorization, end to end on RBAC.

The process runs as deploy/'s ServiceAccount (only deploy/'s permissions), reads the
front-proxy CA from kube-system/extension-apiserver-authentication, sends its TokenReviews
and SubjectAccessReviews to the stand-in, and the stand-in answers them with kube-apiserver's
RBAC and bootstrap policy, so callers get what a real cluster gives them. The aggregator's
identity without groups (issue 9) is played here through the front-proxy certificate.
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
import trustme

from tests.kube.test_serve_process import exporter
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.kube_standin import KubeStandin
from tests.rbac import User, service_account_user
from tests.serve_process import free_ports, kube_mode_args, serve_process

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parents[2]
HPA_TOKEN = "hpa-token"
AGGREGATOR_TOKEN = "aggregator-token"
ALICE_TOKEN = "alice-token"
FRONT_PROXY_CN = "front-proxy-client"
__all__ = ["exporter"]  # the OpenMetrics endpoint fixture, shared with test_serve_process


@pytest.fixture(scope="module")
def front_proxy_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def delegating_server(
    kube: KubeEnv, standin_only: KubeStandin, front_proxy_ca: trustme.CA, tmp_path: Path
) -> AsyncIterator[int]:
    # what kube-apiserver publishes for aggregated servers (read with deploy/'s RoleBinding)
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication"},
            "data": {
                "requestheader-client-ca-file": front_proxy_ca.cert_pem.bytes().decode(),
                "requestheader-allowed-names": json.dumps([FRONT_PROXY_CN]),
                "requestheader-username-headers": '["X-Remote-User"]',
                "requestheader-group-headers": '["X-Remote-Group"]',
                "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
            },
        },
        namespace="kube-system",
    )
    standin_only.add_user(HPA_TOKEN, service_account_user("kube-system", "horizontal-pod-autoscaler"))
    standin_only.add_user(AGGREGATOR_TOKEN, User("system:kube-aggregator"))
    standin_only.add_user(ALICE_TOKEN, User("alice", ("devs",)))
    ports = free_ports()
    secure = ports["secure"]
    args = kube_mode_args(kube.kubeconfig, kube.namespace, ports)
    args += ["--cert-dir", str(tmp_path / "certs"), "--authorization-mode", "Webhook"]
    args += ["--shutdown-delay", "0"]
    async with serve_process(args):
        yield secure


async def get(
    port: int,
    path: str,
    token: str | None,
    cert: trustme.LeafCert | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, Any]:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    if cert is not None:
        cert.configure_cert(insecure)
    headers = list(headers or []) + ([("Authorization", f"Bearer {token}")] if token else [])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"https://127.0.0.1:{port}{path}", ssl=insecure, headers=headers) as r:
                    body = await r.json() if r.content_type == "application/json" else await r.text()
                    if r.status != 503 or loop.time() > deadline:  # 503: not synced yet
                        return r.status, body
            except aiohttp.ClientConnectionError:
                assert loop.time() < deadline, "server did not start"
            await asyncio.sleep(0.2)


async def test_the_aggregators_own_requests_pass_rbac(
    kube: KubeEnv, front_proxy_ca: trustme.CA, delegating_server: int
) -> None:
    """kube-aggregator proxies its discovery fallback as system:kube-aggregator with no groups
    and OpenAPI as system:aggregator with no groups: RBAC allows them only because the server
    adds system:authenticated (system:discovery); before issue 9 this was a 403."""
    proxy = front_proxy_ca.issue_cert(common_name=FRONT_PROXY_CN)
    port = delegating_server
    for user, path in (
        ("system:kube-aggregator", "/apis/custom.metrics.k8s.io/v1beta2"),
        ("system:kube-aggregator", "/apis/custom.metrics.k8s.io/v1beta1"),
        ("system:aggregator", "/openapi/v2"),
    ):
        status, body = await get(port, path, None, proxy, [("X-Remote-User", user)])
        assert status == 200, (user, path, body)
    # X-Remote-* headers without the front-proxy certificate are not trusted
    status, _ = await get(port, "/apis/custom.metrics.k8s.io/v1beta2", None, None, [("X-Remote-User", "x")])
    assert status == 401
    # metrics need more than discovery: the aggregator's identity has no metrics grant
    status, body = await get(
        port,
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{kube.namespace}/keptnmetrics.metrics.keptn.sh/q/q",
        None,
        proxy,
        [("X-Remote-User", "system:kube-aggregator")],
    )
    assert status == 403, body
    assert not kube.server_denials()


async def test_callers_get_what_rbac_gives_them(kube: KubeEnv, exporter: str, delegating_server: int) -> None:
    await kube.create(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "exporter"},
            "spec": {"type": "openmetrics", "targetServer": exporter},
        }
    )
    await kube.create(metric_doc("queue", provider="exporter", query="queue_depth", interval=2))
    ns, port = kube.namespace, delegating_server
    group_version = "/apis/custom.metrics.k8s.io/v1beta2"
    metric = f"{group_version}/namespaces/{ns}/keptnmetrics.metrics.keptn.sh/queue/queue"

    # the aggregator's discovery fallback: no groups of its own, allowed by system:discovery
    # because the server adds system:authenticated before asking
    status, body = await get(port, group_version, AGGREGATOR_TOKEN)
    assert status == 200 and body["kind"] == "APIResourceList", body
    # the HPA controller's service account reads metrics (bootstrap HPA role, nothing from deploy/)
    status, body = await get(port, metric, HPA_TOKEN)
    assert status == 200 and body["items"][0]["value"] == "42", body
    # an authenticated user without a grant: discovery yes, metrics no
    assert (await get(port, group_version, ALICE_TOKEN))[0] == 200
    status, body = await get(port, metric, ALICE_TOKEN)
    assert status == 403 and body["reason"] == "Forbidden", body
    # no credentials and no --anonymous-auth
    assert (await get(port, metric, None))[0] == 401
    assert (await get(port, metric, "forged"))[0] == 401
    # the server asked the stand-in as its ServiceAccount: deploy/'s auth-delegator binding
    assert kube.standin is not None
    sars = [r for r in kube.standin.requests if r.resource == "subjectaccessreviews"]
    assert sars and not kube.server_denials()
