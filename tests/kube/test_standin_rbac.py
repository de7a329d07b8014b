"""The stand-in authenticates and authorizes like kube-apiserver, and the server under test has
exactly deploy/'s permissions there (so a missing verb in deploy/ fails a test, not a cluster)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from metrics_server.kube.client import ApiException
from metrics_server.kube.status_writer import StatusWriter
from metrics_server.model import parse_metric
from metrics_server.state import MetricState
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.kube_standin import ADMIN_TOKEN, KubeStandin
from tests.rbac import User, service_account_user

pytestmark = pytest.mark.kube
SAR = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
TOKEN_REVIEW = "/apis/authentication.k8s.io/v1/tokenreviews"


async def call(
    kube: KubeEnv, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, kube.url + path, headers=headers, json=body) as r,
    ):
        data = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, data


def server_token(standin: KubeStandin, kube: KubeEnv) -> str:
    return next(t for t, u in standin.users.items() if u.name == kube.server_user)


async def test_the_server_identity_is_denied_what_deploy_does_not_grant(
    kube: KubeEnv, standin_only: KubeStandin
) -> None:
    kube.expect_denials = True
    client = await kube.new_client()
    with pytest.raises(ApiException) as denied:
        await client.get(f"/api/v1/namespaces/{kube.namespace}/secrets")  # get by name only, no list
    assert denied.value.status == 403
    status, body = await call(
        kube, "GET", f"/api/v1/namespaces/{kube.namespace}/secrets", server_token(standin_only, kube)
    )
    assert status == 403
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'secrets is forbidden: User "{kube.server_user}" cannot list resource "secrets" '
        f'in API group "" in the namespace "{kube.namespace}"',
        "reason": "Forbidden",
        "details": {"kind": "secrets"},
        "code": 403,
    }
    status, body = await call(
        kube,
        "DELETE",
        f"/apis/metrics.keptn.sh/v1/namespaces/{kube.namespace}/keptnmetrics/cpu",
        server_token(standin_only, kube),
    )
    assert status == 403 and body["message"].startswith('keptnmetrics.metrics.keptn.sh "cpu" is forbidden: ')
    assert body["details"] == {"name": "cpu", "group": "metrics.keptn.sh", "kind": "keptnmetrics"}
    assert len(kube.server_denials()) == 3
    assert kube.server_denials()[0].endswith(f'in the namespace "{kube.namespace}"')


async def test_admin_sets_up_data_the_server_may_only_read(kube: KubeEnv, standin_only: KubeStandin) -> None:
    kube.expect_denials = True
    created = await kube.create(metric_doc("cpu"))  # kube.client is the admin
    assert created["metadata"]["name"] == "cpu"
    client = await kube.new_client()
    assert (await client.get(f"/apis/metrics.keptn.sh/v1/namespaces/{kube.namespace}/keptnmetrics/cpu"))[
        "spec"
    ]["query"] == "up"
    with pytest.raises(ApiException) as denied:
        await client.create_object(
            f"/apis/metrics.keptn.sh/v1/namespaces/{kube.namespace}/keptnmetrics", metric_doc("other")
        )
    assert denied.value.status == 403


async def test_a_verb_missing_from_deploy_fails_the_servers_write(
    kube: KubeEnv, standin_only: KubeStandin
) -> None:
    """Take `patch` on keptnmetrics/status out of deploy/'s ClusterRole: the status write is a 403."""
    kube.expect_denials = True
    role = await kube.client.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/keptn-metrics")
    role["rules"] = [r for r in role["rules"] if "keptnmetrics/status" not in r["resources"]]
    await kube.client.replace("/apis/rbac.authorization.k8s.io/v1/clusterroles/keptn-metrics", role)
    metric = parse_metric(await kube.create(metric_doc("cpu")))
    writer = StatusWriter(await kube.new_client(), retry_delay=60)
    writer.start()
    state = MetricState(key=metric.key, fetch_interval=10)
    state.value, state.value_text, state.last_success, state.last_attempt = 1.0, "1", 1.0, 1.0
    await writer.publish(metric, state, changed=True)
    await writer.flush()
    await writer.stop()
    assert any('cannot patch resource "keptnmetrics/status"' in m for m in kube.server_denials())
    assert "status" not in await kube.get("KeptnMetric", "cpu")


async def test_rbac_changes_apply_at_once(kube: KubeEnv, standin_only: KubeStandin) -> None:
    kube.expect_denials = True
    token = server_token(standin_only, kube)
    path = f"/api/v1/namespaces/{kube.namespace}/configmaps"
    assert (await call(kube, "GET", path, token))[0] == 403
    await kube.client.create_object(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube.namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    await kube.client.create_object(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube.namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "cm-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "keptn-metrics"}],  # the binding's namespace
        },
    )
    assert (await call(kube, "GET", path, token))[0] == 200


async def test_authentication(kube: KubeEnv, standin_only: KubeStandin) -> None:
    status, body = await call(kube, "GET", "/api", "not-a-token")
    assert status == 401 and body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    # anonymous: system:public-info-viewer only
    assert await call(kube, "GET", "/healthz") == (200, "ok")
    assert (await call(kube, "GET", "/version"))[0] == 200
    status, body = await call(kube, "GET", "/apis")
    assert status == 403 and body["message"] == 'forbidden: User "system:anonymous" cannot get path "/apis"'
    standin_only.anonymous_auth = False
    assert (await call(kube, "GET", "/healthz"))[0] == 401
    # every authenticated identity is in system:authenticated, so system:discovery applies
    standin_only.add_user("t", User("someone"))
    assert standin_only.users["t"].groups == ("system:authenticated",)
    assert (await call(kube, "GET", "/apis", "t"))[0] == 200
    assert (await call(kube, "GET", "/api/v1/namespaces/default/secrets", "t"))[0] == 403


async def test_token_review_returns_the_service_accounts_groups(
    kube: KubeEnv, standin_only: KubeStandin
) -> None:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": server_token(standin_only, kube)},
    }
    status, review = await call(kube, "POST", TOKEN_REVIEW, server_token(standin_only, kube), body)
    assert status == 201
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"] == {
        "username": kube.server_user,
        "groups": [
            "system:serviceaccounts",
            f"system:serviceaccounts:{kube.namespace}",
            "system:authenticated",
        ],
    }


def sar(user: str, groups: list[str] | None = None, **attrs: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user}
    if groups is not None:
        spec["groups"] = groups
    spec.update(attrs)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


async def test_subject_access_reviews_are_answered_by_rbac(kube: KubeEnv, standin_only: KubeStandin) -> None:
    token = server_token(standin_only, kube)  # may create SARs: deploy/ binds system:auth-delegator
    discovery: dict[str, Any] = {
        "nonResourceAttributes": {"path": "/apis/custom.metrics.k8s.io/v1beta2", "verb": "get"}
    }
    # kube-aggregator's discovery fallback as the server saw it before it added system:authenticated
    status, review = await call(kube, "POST", SAR, token, sar("system:kube-aggregator", **discovery))
    assert status == 201 and review["status"] == {"allowed": False}
    status, review = await call(
        kube, "POST", SAR, token, sar("system:kube-aggregator", ["system:authenticated"], **discovery)
    )
    assert review["status"] == {
        "allowed": True,
        "reason": 'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" '
        'to Group "system:authenticated"',
    }
    hpa = service_account_user("kube-system", "horizontal-pod-autoscaler")
    metric: dict[str, Any] = {
        "resourceAttributes": {
            "namespace": "shop",
            "verb": "get",
            "group": "custom.metrics.k8s.io",
            "resource": "keptnmetrics.metrics.keptn.sh",
            "subresource": "cpu",
            "name": "cpu",
        }
    }
    review = (await call(kube, "POST", SAR, token, sar(hpa.name, list(hpa.groups), **metric)))[1]
    assert review["status"]["allowed"] is True
    assert "system:controller:horizontal-pod-autoscaler" in review["status"]["reason"]
    review = (await call(kube, "POST", SAR, token, sar("alice", ["system:authenticated"], **metric)))[1]
    assert review["status"] == {"allowed": False}


async def test_malformed_subject_access_reviews_are_invalid(kube: KubeEnv, standin_only: KubeStandin) -> None:
    status, body = await call(kube, "POST", SAR, ADMIN_TOKEN, sar("alice"))
    assert status == 422 and body["reason"] == "Invalid" and "exactly one of" in body["message"]
    status, body = await call(
        kube, "POST", SAR, ADMIN_TOKEN, {"spec": {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}}
    )
    assert status == 422 and body["message"] == (
        'SubjectAccessReview.authorization.k8s.io "" is invalid: '
        'spec.user: Invalid value: "": at least one of user or group must be specified'
    )
    both = sar(
        "alice", resourceAttributes={"verb": "get"}, nonResourceAttributes={"path": "/", "verb": "get"}
    )
    status, body = await call(kube, "POST", SAR, ADMIN_TOKEN, both)
    assert status == 422 and "cannot be specified in combination with resourceAttributes" in body["message"]
    status, body = await call(kube, "POST", TOKEN_REVIEW, ADMIN_TOKEN, {"spec": {}})
    assert status == 400 and body["message"] == "token is required for TokenReview in authentication"


async def test_creating_reviews_needs_auth_delegator(kube: KubeEnv, standin_only: KubeStandin) -> None:
    standin_only.add_user("plain", service_account_user(kube.namespace, "default"))
    status, body = await call(
        kube, "POST", SAR, "plain", sar("x", nonResourceAttributes={"path": "/", "verb": "get"})
    )
    assert status == 403 and body["message"] == (
        "subjectaccessreviews.authorization.k8s.io is forbidden: "
        f'User "system:serviceaccount:{kube.namespace}:default" cannot create resource '
        '"subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope'
    )
    assert (await call(kube, "POST", TOKEN_REVIEW, "plain", {"spec": {"token": "x"}}))[0] == 403


async def test_the_sar_hook_still_overrides_rbac(kube: KubeEnv, standin_only: KubeStandin) -> None:
    standin_only.access_reviewer = lambda spec: (spec["user"] == "alice", "test policy")
    body = sar("alice", nonResourceAttributes={"path": "/metrics", "verb": "get"})
    review = (await call(kube, "POST", SAR, ADMIN_TOKEN, body))[1]
    assert review["status"] == {"allowed": True, "reason": "test policy"}
