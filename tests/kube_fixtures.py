"""The `kube` fixture: a Kubernetes API for Kubernetes-mode tests.

With `KUBE_APISERVER_URL` and `KUBECONFIG` set (an envtest-style cluster with deploy/'s
CRDs applied), tests run against that cluster, each in a fresh random namespace deleted
afterwards. Otherwise an in-process stand-in (tests/kube_standin.py) is started on
127.0.0.1 and kubeconfigs are written for it. Tests use the same client code for both;
`kube.standin` is None on a real cluster (request counting is only possible on the stand-in).

On the stand-in the test namespace is where deploy/ is installed: its ClusterRoles, Roles and
bindings are applied (rendered into that namespace) and `kube.kubeconfig` / `new_client()`
authenticate as the server's service account, so the code under test has exactly deploy/'s
permissions and a missing verb is a 403. `kube.client` / `kube.admin_kubeconfig` are a
`system:masters` admin for setting up data. Any 403 the server's identity gets fails the
test at teardown (deploy/ lacks a verb) unless the test sets `kube.expect_denials`. On a
real cluster all of them are KUBECONFIG's identity (that cluster does its own RBAC, and the
tests do not install cluster-scoped RBAC there).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from metrics_server.kube.client import ApiException, KubeClient, resource_path
from tests.kube_standin import ADMIN_TOKEN, KubeStandin, load_crd_schemas
from tests.rbac import deploy_rbac, deploy_server_user

METRICS = ("metrics.keptn.sh", "v1")
_PLURALS = {
    "KeptnMetric": ("metrics.keptn.sh", "keptnmetrics"),
    "KeptnMetricsProvider": ("metrics.keptn.sh", "keptnmetricsproviders"),
    "Secret": ("", "secrets"),
    "ConfigMap": ("", "configmaps"),
    "Lease": ("coordination.k8s.io", "leases"),
    "Event": ("", "events"),
}


@functools.cache
def deploy_crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]] | None:
    """The structural schemas of deploy/crds (the stand-in prunes, defaults and validates with them)."""
    crds = sorted((Path(__file__).resolve().parent.parent / "deploy" / "crds").glob("*.yaml"))
    return load_crd_schemas(crds) if crds else None


def real_cluster() -> bool:
    return bool(os.environ.get("KUBE_APISERVER_URL") and os.environ.get("KUBECONFIG"))


def write_kubeconfig(path: Path, url: str, token: str = "standin-token") -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "standin", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
        "current-context": "standin",
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


@dataclass
class KubeEnv:
    url: str
    kubeconfig: str  # the server's identity (deploy/'s service account on the stand-in)
    namespace: str
    standin: KubeStandin | None
    client: KubeClient  # admin, for test setup
    admin_kubeconfig: str = ""
    #: the server's user on the stand-in; any 403 it gets fails the test unless expect_denials
    server_user: str = ""
    expect_denials: bool = False
    _clients: list[KubeClient] = field(default_factory=list)

    def server_denials(self) -> list[str]:
        """The stand-in's 403 messages to the server's identity (deploy/'s RBAC said no)."""
        if self.standin is None:
            return []
        denials = self.standin.denials
        return [status["message"] for attrs, status in denials if attrs.user.name == self.server_user]

    @property
    def real(self) -> bool:
        return self.standin is None

    async def new_client(self) -> KubeClient:
        c = await KubeClient.create(self.kubeconfig)
        self._clients.append(c)
        return c

    @staticmethod
    def path_of(obj: dict[str, Any], namespace: str, name: bool = False, sub: str | None = None) -> str:
        group, plural = _PLURALS[obj["kind"]]
        version = obj["apiVersion"].rpartition("/")[2]
        return resource_path(
            group, version, plural, namespace, obj["metadata"]["name"] if name else None, sub
        )

    async def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or obj["metadata"].get("namespace") or self.namespace
        return await self.client.create_object(self.path_of(obj, ns), obj)

    async def get(
        self, kind: str, name: str, namespace: str | None = None, version: str = "v1"
    ) -> dict[str, Any]:
        group, plural = _PLURALS[kind]
        return await self.client.get(resource_path(group, version, plural, namespace or self.namespace, name))

    async def delete(self, kind: str, name: str, namespace: str | None = None, version: str = "v1") -> None:
        group, plural = _PLURALS[kind]
        await self.client.delete(resource_path(group, version, plural, namespace or self.namespace, name))

    async def patch(
        self, kind: str, name: str, body: dict[str, Any], namespace: str | None = None, sub: str | None = None
    ) -> dict[str, Any]:
        group, plural = _PLURALS[kind]
        return await self.client.merge_patch(
            resource_path(group, "v1", plural, namespace or self.namespace, name, sub), body
        )


def metric_doc(
    name: str,
    provider: str = "prom",
    query: str = "up",
    interval: int = 10,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": md,
        "spec": {"provider": {"name": provider}, "query": query, "fetchIntervalSeconds": interval},
    }


def provider_doc(
    name: str, target: str = "http://prometheus:9090", secret: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "prometheus", "targetServer": target}
    if secret:
        spec["secretKeyRef"] = {"name": secret, "key": "password"}
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": name},
        "spec": spec,
    }


async def install_deploy_rbac(admin: KubeClient, namespace: str) -> None:
    """`kubectl apply` of deploy/'s RBAC as installed into `namespace`, through the API."""
    for doc in deploy_rbac(namespace):
        plural = {
            "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings",
            "Role": "roles",
            "RoleBinding": "rolebindings",
        }[doc["kind"]]
        ns = doc["metadata"].get("namespace")
        await admin.create_object(resource_path("rbac.authorization.k8s.io", "v1", plural, ns), doc)


@pytest.fixture
def standin_only(kube: KubeEnv) -> KubeStandin:
    if kube.standin is None:
        pytest.skip("needs the stand-in (request counting / fault injection)")
    return kube.standin


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeEnv]:
    standin: KubeStandin | None = None
    namespace = f"km-test-{secrets.token_hex(4)}"
    server_user = ""
    if real_cluster():
        admin_kubeconfig = kubeconfig = os.environ["KUBECONFIG"]
        url = os.environ["KUBE_APISERVER_URL"]
    else:
        standin = KubeStandin(crd_schemas=deploy_crd_schemas())
        standin.bookmark_interval = 0.2
        url = await standin.start()
        admin_kubeconfig = str(write_kubeconfig(tmp_path / "admin.kubeconfig", url, ADMIN_TOKEN))
        server_token = f"server-sa-token-{secrets.token_hex(8)}"
        server = deploy_server_user(namespace)
        standin.add_user(server_token, server)
        server_user = server.name
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", url, server_token))
    client = await KubeClient.create(admin_kubeconfig)
    await client.create_object(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    if standin is not None:
        await install_deploy_rbac(client, namespace)
    env = KubeEnv(
        url=url,
        kubeconfig=kubeconfig,
        namespace=namespace,
        standin=standin,
        client=client,
        admin_kubeconfig=admin_kubeconfig,
        server_user=server_user,
    )
    try:
        yield env
    finally:
        try:
            await client.delete(f"/api/v1/namespaces/{namespace}")
        except ApiException:
            pass
        for c in env._clients:
            await c.close()
        await client.close()
        if standin is not None:
            await standin.stop()
    if not env.expect_denials:
        denied = env.server_denials()
        assert not denied, "deploy/'s RBAC refused the server:\n" + "\n".join(denied)
