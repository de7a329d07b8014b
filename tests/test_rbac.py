"""Specification of the RBAC evaluator the test doubles use (tests/rbac.py).

Each table row is one authorization question and the answer kube-apiserver's RBAC gives,
following kubernetes plugin/pkg/auth/authorizer/rbac and its bootstrap policy.
"""

from __future__ import annotations

import pytest

from tests.kube_requests import forbidden_status, request_attributes
from tests.rbac import (
    ANONYMOUS,
    Attributes,
    Decision,
    KubeApiserverAuthorizer,
    PolicyRule,
    RBACAuthorizer,
    StaticPolicy,
    User,
    bootstrap_policy,
    deploy_rbac,
    deploy_server_user,
    policy_with_deploy,
    service_account_user,
    with_authenticated_group,
)

AUTHENTICATED = "system:authenticated"
AGGREGATOR = User("system:kube-aggregator")  # what kube-aggregator's discovery fallback sends
AGGREGATOR_AUTHENTICATED = with_authenticated_group(AGGREGATOR)
OPENAPI_DOWNLOADER = with_authenticated_group(User("system:aggregator"))
HPA = service_account_user("kube-system", "horizontal-pod-autoscaler")
SERVER_NS = "keptn-system"
SERVER = deploy_server_user(SERVER_NS)
ADMIN = User("admin", ("system:masters", AUTHENTICATED))
ALICE = with_authenticated_group(User("alice", ("devs",)))
CUSTOM = "custom.metrics.k8s.io"
EXTERNAL = "external.metrics.k8s.io"
KM = "keptnmetrics.metrics.keptn.sh"


def rbac_only(*docs: dict) -> RBACAuthorizer:
    return RBACAuthorizer(StaticPolicy().add(*docs))


def bootstrap() -> RBACAuthorizer:
    return RBACAuthorizer(StaticPolicy.of(bootstrap_policy()))


def path(user: User, url: str, verb: str = "get") -> Attributes:
    return Attributes.path_of(user, verb, url)


def res(
    user: User, verb: str, group: str, resource: str, ns: str = "", name: str = "", sub: str = ""
) -> Attributes:
    return Attributes.resource_of(user, verb, group, resource, ns, name, sub)


# -- the bootstrap policy -----------------------------------------------------------------------
BOOTSTRAP_CASES = [
    # system:public-info-viewer: health and version for everyone, anonymous included
    ("anonymous /healthz", path(ANONYMOUS, "/healthz"), True, "system:public-info-viewer"),
    ("anonymous /livez", path(ANONYMOUS, "/livez"), True, "system:public-info-viewer"),
    ("anonymous /readyz", path(ANONYMOUS, "/readyz"), True, "system:public-info-viewer"),
    ("anonymous /version", path(ANONYMOUS, "/version"), True, "system:public-info-viewer"),
    ("anonymous discovery", path(ANONYMOUS, "/apis"), False, ""),
    ("anonymous openapi", path(ANONYMOUS, "/openapi/v2"), False, ""),
    ("anonymous POST /healthz", path(ANONYMOUS, "/healthz", "post"), False, ""),
    # kube-aggregator's fallback discovery and the OpenAPI downloader carry no groups:
    # denied, unless the aggregated server adds system:authenticated as k8s.io/apiserver does
    ("aggregator, no groups, group-version", path(AGGREGATOR, f"/apis/{CUSTOM}/v1beta2"), False, ""),
    ("aggregator, no groups, /apis", path(AGGREGATOR, "/apis"), False, ""),
    ("aggregator, no groups, /openapi/v2", path(User("system:aggregator"), "/openapi/v2"), False, ""),
    ("aggregator, no groups, /healthz", path(AGGREGATOR, "/healthz"), False, ""),
    ("aggregator authenticated, /apis", path(AGGREGATOR_AUTHENTICATED, "/apis"), True, "system:discovery"),
    (
        "aggregator authenticated, group-version",
        path(AGGREGATOR_AUTHENTICATED, f"/apis/{CUSTOM}/v1beta2"),
        True,
        "system:discovery",
    ),
    (
        "downloader authenticated, /openapi/v2",
        path(OPENAPI_DOWNLOADER, "/openapi/v2"),
        True,
        "system:discovery",
    ),
    (
        "downloader authenticated, /openapi/v3",
        path(OPENAPI_DOWNLOADER, "/openapi/v3"),
        True,
        "system:discovery",
    ),
    (
        "downloader authenticated, /openapi/v3 group-version",
        path(OPENAPI_DOWNLOADER, f"/openapi/v3/apis/{CUSTOM}/v1beta2"),
        True,
        "system:discovery",
    ),
    ("authenticated /api/v1", path(ALICE, "/api/v1"), True, "system:discovery"),
    ("authenticated /version/", path(ALICE, "/version/"), True, "system:discovery"),
    ("authenticated /healthz", path(ALICE, "/healthz"), True, "system:discovery"),
    ("authenticated /metrics is not discovery", path(ALICE, "/metrics"), False, ""),
    ("/apis* is a prefix of /apis/ only", path(ALICE, "/apisx"), False, ""),
    ("discovery is get only", path(ALICE, "/apis", "post"), False, ""),
    # system:basic-user
    (
        "authenticated self access review",
        res(ALICE, "create", "authorization.k8s.io", "selfsubjectaccessreviews"),
        True,
        "system:basic-user",
    ),
    (
        "authenticated whoami",
        res(ALICE, "create", "authentication.k8s.io", "selfsubjectreviews"),
        True,
        "system:basic-user",
    ),
    (
        "anonymous self access review",
        res(ANONYMOUS, "create", "authorization.k8s.io", "selfsubjectaccessreviews"),
        False,
        "",
    ),
    # system:controller:horizontal-pod-autoscaler bound to kube-system/horizontal-pod-autoscaler
    (
        "HPA gets an object metric",
        res(HPA, "get", CUSTOM, KM, "shop", "cpu", "cpu"),
        True,
        "system:controller:horizontal-pod-autoscaler",
    ),
    (
        "HPA lists custom metrics",
        res(HPA, "list", CUSTOM, KM, "shop", "*", "cpu"),
        True,
        "horizontal-pod-autoscaler",
    ),
    (
        "HPA lists an external metric",
        res(HPA, "list", EXTERNAL, "queue", "shop"),
        True,
        "horizontal-pod-autoscaler",
    ),
    (
        "HPA gets an external metric",
        res(HPA, "get", EXTERNAL, "queue", "shop"),
        True,
        "horizontal-pod-autoscaler",
    ),
    ("HPA cannot create metrics", res(HPA, "create", CUSTOM, KM, "shop"), False, ""),
    (
        "HPA scales any */scale",
        res(HPA, "update", "apps", "deployments", "shop", "web", "scale"),
        True,
        "horizontal-pod-autoscaler",
    ),
    (
        "HPA cannot update the deployment itself",
        res(HPA, "update", "apps", "deployments", "shop", "web"),
        False,
        "",
    ),
    (
        "HPA writes events",
        res(HPA, "create", "events.k8s.io", "events", "shop"),
        True,
        "horizontal-pod-autoscaler",
    ),
    (
        "another kube-system SA is not the HPA",
        res(service_account_user("kube-system", "default"), "get", CUSTOM, KM, "shop", "cpu", "cpu"),
        False,
        "",
    ),
    (
        "the HPA's name in another namespace is not the HPA",
        res(
            service_account_user("shop", "horizontal-pod-autoscaler"), "get", CUSTOM, KM, "shop", "cpu", "cpu"
        ),
        False,
        "",
    ),
    (
        "an authenticated user reads no metrics",
        res(ALICE, "get", CUSTOM, KM, "shop", "cpu", "cpu"),
        False,
        "",
    ),
    # cluster-admin bound to system:masters (by RBAC alone here, no privileged-group shortcut)
    ("system:masters anything", res(ADMIN, "deletecollection", "*", "secrets", "x"), True, "cluster-admin"),
    ("system:masters any path", path(ADMIN, "/debug/pprof", "post"), True, "cluster-admin"),
    # system:auth-delegator exists but nothing binds it by default
    (
        "auth-delegator is not bound by default",
        res(SERVER, "create", "authorization.k8s.io", "subjectaccessreviews"),
        False,
        "",
    ),
]


@pytest.mark.parametrize(
    ("attrs", "allowed", "role"), [c[1:] for c in BOOTSTRAP_CASES], ids=[c[0] for c in BOOTSTRAP_CASES]
)
def test_bootstrap_policy(attrs: Attributes, allowed: bool, role: str) -> None:
    decision = bootstrap().authorize(attrs)
    assert decision.allowed is allowed, decision
    if allowed:
        assert role in decision.reason
    else:
        assert decision == Decision(False, "")  # "no opinion" without resolution errors has no reason


def test_allow_reason_names_binding_role_and_subject_as_kube_apiserver_does() -> None:
    assert bootstrap().authorize(path(AGGREGATOR_AUTHENTICATED, "/apis")).reason == (
        'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" '
        'to Group "system:authenticated"'
    )
    assert bootstrap().authorize(res(HPA, "list", EXTERNAL, "queue", "shop")).reason == (
        'RBAC: allowed by ClusterRoleBinding "system:controller:horizontal-pod-autoscaler" of '
        'ClusterRole "system:controller:horizontal-pod-autoscaler" '
        'to ServiceAccount "horizontal-pod-autoscaler/kube-system"'
    )


# -- deploy/'s RBAC for the server's own service account ----------------------------------------------
def server(verb: str, group: str, resource: str, ns: str = "", name: str = "", sub: str = "") -> Attributes:
    return res(SERVER, verb, group, resource, ns, name, sub)


MK = "metrics.keptn.sh"
LC = "lifecycle.keptn.sh"
AUTH_CM = "extension-apiserver-authentication"
DEPLOY_CASES = [
    # watch the Keptn resources, everywhere
    ("list KeptnMetrics cluster-wide", server("list", MK, "keptnmetrics"), True),
    ("watch KeptnMetrics in a namespace", server("watch", MK, "keptnmetrics", "shop"), True),
    ("get a KeptnMetricsProvider", server("get", MK, "keptnmetricsproviders", "shop", "prom"), True),
    ("watch Analyses", server("watch", MK, "analyses", "shop"), True),
    ("watch AnalysisDefinitions", server("watch", MK, "analysisdefinitions", "shop"), True),
    ("watch AnalysisValueTemplates", server("watch", MK, "analysisvaluetemplates", "shop"), True),
    ("watch KeptnEvaluations", server("watch", LC, "keptnevaluations", "shop"), True),
    ("watch KeptnEvaluationDefinitions", server("watch", LC, "keptnevaluationdefinitions", "shop"), True),
    # write only status
    ("patch KeptnMetric status", server("patch", MK, "keptnmetrics", "shop", "cpu", "status"), True),
    ("patch Analysis status", server("patch", MK, "analyses", "shop", "a", "status"), True),
    ("patch KeptnEvaluation status", server("patch", LC, "keptnevaluations", "shop", "e", "status"), True),
    ("never patch a KeptnMetric's spec", server("patch", MK, "keptnmetrics", "shop", "cpu"), False),
    ("never create KeptnMetrics", server("create", MK, "keptnmetrics", "shop"), False),
    ("never delete KeptnMetrics", server("delete", MK, "keptnmetrics", "shop", "cpu"), False),
    ("no status of providers", server("patch", MK, "keptnmetricsproviders", "shop", "p", "status"), False),
    # Secrets by name only
    ("get a provider Secret", server("get", "", "secrets", "shop", "creds"), True),
    ("no list of Secrets", server("list", "", "secrets", "shop"), False),
    ("no watch of Secrets", server("watch", "", "secrets"), False),
    ("create the serving CA Secret in its own namespace", server("create", "", "secrets", SERVER_NS), True),
    ("no Secret creation elsewhere", server("create", "", "secrets", "shop"), False),
    ("no Secret updates", server("update", "", "secrets", SERVER_NS, "keptn-metrics-serving-ca"), False),
    # Events
    ("create core Events", server("create", "", "events", "shop"), True),
    ("it writes no events.k8s.io Events", server("create", "events.k8s.io", "events", "shop"), False),
    ("no Event deletion", server("delete", "", "events", "shop", "e"), False),
    ("no Event patches", server("patch", "", "events", "shop", "e"), False),
    ("no status get or update", server("update", MK, "keptnmetrics", "shop", "cpu", "status"), False),
    (
        "no Lease deletion",
        server("delete", "coordination.k8s.io", "leases", SERVER_NS, "keptn-metrics"),
        False,
    ),
    # leader election in its own namespace
    ("get its Lease", server("get", "coordination.k8s.io", "leases", SERVER_NS, "keptn-metrics"), True),
    ("update its Lease", server("update", "coordination.k8s.io", "leases", SERVER_NS, "keptn-metrics"), True),
    ("no Leases elsewhere", server("get", "coordination.k8s.io", "leases", "kube-system", "x"), False),
    # the aggregation layer's CA and delegated auth
    ("read the auth ConfigMap", server("get", "", "configmaps", "kube-system", AUTH_CM), True),
    ("watch the auth ConfigMap by name", server("watch", "", "configmaps", "kube-system", AUTH_CM), True),
    (
        "no other ConfigMap in kube-system",
        server("get", "", "configmaps", "kube-system", "kubeadm-config"),
        False,
    ),
    ("no list of all kube-system ConfigMaps", server("list", "", "configmaps", "kube-system"), False),
    ("that name in another namespace is not it", server("get", "", "configmaps", "shop", AUTH_CM), False),
    ("TokenReview", server("create", "authentication.k8s.io", "tokenreviews"), True),
    ("SubjectAccessReview", server("create", "authorization.k8s.io", "subjectaccessreviews"), True),
    (
        "patch its APIService's caBundle",
        server("patch", "apiregistration.k8s.io", "apiservices", "", "v1beta2.custom.metrics.k8s.io"),
        True,
    ),
    (
        "not another APIService",
        server("patch", "apiregistration.k8s.io", "apiservices", "", "v1beta1.metrics.k8s.io"),
        False,
    ),
    (
        "never delete its APIService",
        server("delete", "apiregistration.k8s.io", "apiservices", "", "v1beta2.custom.metrics.k8s.io"),
        False,
    ),
    # discovery through system:discovery, as every authenticated identity
    ("discovery", path(SERVER, "/apis/metrics.keptn.sh/v1"), True),
]


@pytest.mark.parametrize(
    ("attrs", "allowed"), [c[1:] for c in DEPLOY_CASES], ids=[c[0] for c in DEPLOY_CASES]
)
def test_deploy_rbac_for_the_server_service_account(attrs: Attributes, allowed: bool) -> None:
    decision = RBACAuthorizer(policy_with_deploy(SERVER_NS)).authorize(attrs)
    assert decision.allowed is allowed, decision


def test_deploy_rbac_follows_the_release_namespace() -> None:
    """Installed into another namespace, its Role, bindings and ServiceAccount move with it."""
    other = deploy_server_user("metrics")
    assert other.name == "system:serviceaccount:metrics:keptn-metrics"
    authz = RBACAuthorizer(policy_with_deploy("metrics"))
    assert authz.authorize(res(other, "update", "coordination.k8s.io", "leases", "metrics", "l")).allowed
    assert not authz.authorize(res(other, "update", "coordination.k8s.io", "leases", SERVER_NS, "l")).allowed
    assert not authz.authorize(server("list", MK, "keptnmetrics")).allowed  # keptn-system's SA is not bound
    kinds = sorted((d["kind"], d["metadata"].get("namespace", "")) for d in deploy_rbac("metrics"))
    assert ("Role", "metrics") in kinds and ("RoleBinding", "kube-system") in kinds


def test_kube_apiserver_allows_system_masters_before_rbac() -> None:
    authz = KubeApiserverAuthorizer(StaticPolicy())  # no roles at all
    assert authz.authorize(
        res(User("root", ("system:masters",)), "delete", "", "namespaces", name="x")
    ) == Decision(True, "")
    assert not authz.authorize(res(User("root"), "get", "", "pods", "x")).allowed


# -- rule matching (pkg/apis/rbac/v1/evaluation_helpers.go) ------------------------------------------
RULE_CASES = [
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, ("get", "", "pods", "", ""), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, ("list", "", "pods", "", ""), False),
    (
        {"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]},
        ("deletecollection", "", "pods", "", ""),
        True,
    ),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, ("get", "apps", "pods", "", ""), False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}, ("get", "apps", "pods", "", ""), True),
    # a resource does not cover its subresources, `*` does, `*/sub` covers that subresource only
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, ("get", "", "pods", "log", "p"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, ("get", "", "pods", "log", "p"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, ("get", "", "pods", "", "p"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, ("get", "", "pods", "log", "p"), True),
    (
        {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]},
        ("get", "apps", "deployments", "scale", "d"),
        True,
    ),
    (
        {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]},
        ("get", "apps", "deployments", "", "d"),
        False,
    ),
    (
        {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]},
        ("get", "apps", "deployments", "status", "d"),
        False,
    ),
    # resourceNames: empty means all; otherwise the request must name one of them
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]},
        ("get", "", "secrets", "", "a"),
        True,
    ),
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]},
        ("get", "", "secrets", "", "b"),
        False,
    ),
    (
        {"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]},
        ("list", "", "secrets", "", ""),
        False,
    ),
]


@pytest.mark.parametrize(("rule", "request_", "allowed"), RULE_CASES)
def test_resource_rule_matching(rule: dict, request_: tuple[str, str, str, str, str], allowed: bool) -> None:
    verb, group, resource, sub, name = request_
    assert PolicyRule.from_json(rule).allows(res(ALICE, verb, group, resource, "ns", name, sub)) is allowed


@pytest.mark.parametrize(
    ("urls", "url", "allowed"),
    [
        (["/healthz"], "/healthz", True),
        (["/healthz"], "/healthz/etcd", False),
        (["/healthz/*"], "/healthz/etcd", True),
        (["/healthz/*"], "/healthz", False),
        (["/apis*"], "/apisx", True),
        (["*"], "/anything/at/all", True),
    ],
)
def test_non_resource_url_matching(urls: list[str], url: str, allowed: bool) -> None:
    rule = PolicyRule.from_json({"verbs": ["get"], "nonResourceURLs": urls})
    assert rule.allows(path(ALICE, url)) is allowed
    assert not rule.allows(res(ALICE, "get", "", "pods"))  # a URL rule never grants resources


# -- bindings and subjects (pkg/registry/rbac/validation/rule.go) ---------------------------------------
def cluster_role(name: str, *rules: dict, labels: dict | None = None, aggregate: list | None = None) -> dict:
    doc: dict = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": list(rules),
    }
    if aggregate is not None:
        doc["aggregationRule"] = {"clusterRoleSelectors": aggregate}
    return doc


def role(ns: str, name: str, *rules: dict) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": list(rules),
    }


def binding(kind: str, name: str, ref_kind: str, ref: str, subjects: list[dict], ns: str = "") -> dict:
    md = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": md,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": subjects,
    }


READ_PODS = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
BOB = with_authenticated_group(User("bob", ("devs",)))
SA_SHOP = service_account_user("shop", "runner")


def test_role_binding_to_a_cluster_role_grants_only_in_its_namespace() -> None:
    authz = rbac_only(
        cluster_role("pod-reader", READ_PODS),
        binding(
            "RoleBinding", "read", "ClusterRole", "pod-reader", [{"kind": "User", "name": "bob"}], "shop"
        ),
    )
    assert authz.authorize(res(BOB, "get", "", "pods", "shop", "p")).reason == (
        'RBAC: allowed by RoleBinding "read/shop" of ClusterRole "pod-reader" to User "bob"'
    )
    assert not authz.authorize(res(BOB, "get", "", "pods", "other", "p")).allowed
    assert not authz.authorize(res(BOB, "get", "", "pods", "", "p")).allowed  # cluster scope


def test_role_binding_to_a_role_of_its_namespace() -> None:
    authz = rbac_only(
        role("shop", "pods", READ_PODS),
        role("other", "pods", {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        binding("RoleBinding", "rb", "Role", "pods", [{"kind": "Group", "name": "devs"}], "shop"),
    )
    assert authz.authorize(res(BOB, "get", "", "pods", "shop", "p")).allowed
    assert not authz.authorize(res(BOB, "delete", "", "pods", "shop", "p")).allowed  # the Role of "shop"


def test_service_account_subjects() -> None:
    authz = rbac_only(
        cluster_role("pod-reader", READ_PODS),
        # no namespace on a RoleBinding's ServiceAccount subject: the binding's namespace
        binding(
            "RoleBinding",
            "rb",
            "ClusterRole",
            "pod-reader",
            [{"kind": "ServiceAccount", "name": "runner"}],
            "shop",
        ),
        # ... and on a ClusterRoleBinding: nobody
        binding(
            "ClusterRoleBinding",
            "crb",
            "ClusterRole",
            "pod-reader",
            [{"kind": "ServiceAccount", "name": "runner"}],
        ),
    )
    assert authz.authorize(res(SA_SHOP, "get", "", "pods", "shop", "p")).reason.endswith(
        'to ServiceAccount "runner/shop"'
    )
    assert not authz.authorize(res(SA_SHOP, "get", "", "pods", "other", "p")).allowed
    impostor = User("system:serviceaccount:shop:runner-2", SA_SHOP.groups)
    assert not authz.authorize(res(impostor, "get", "", "pods", "shop", "p")).allowed


def test_group_subjects_and_service_account_groups() -> None:
    authz = rbac_only(
        cluster_role("pod-reader", READ_PODS),
        binding(
            "ClusterRoleBinding",
            "sas",
            "ClusterRole",
            "pod-reader",
            [{"kind": "Group", "name": "system:serviceaccounts:shop"}],
        ),
    )
    assert authz.authorize(res(SA_SHOP, "get", "", "pods", "x", "p")).allowed
    assert not authz.authorize(
        res(service_account_user("other", "runner"), "get", "", "pods", "x", "p")
    ).allowed
    assert not authz.authorize(res(BOB, "get", "", "pods", "x", "p")).allowed


def test_missing_role_is_a_denial_with_the_resolution_error_as_reason() -> None:
    authz = rbac_only(
        binding("ClusterRoleBinding", "dangling", "ClusterRole", "gone", [{"kind": "User", "name": "bob"}]),
        binding("RoleBinding", "dangling", "Role", "gone", [{"kind": "User", "name": "bob"}], "shop"),
    )
    assert authz.authorize(res(BOB, "get", "", "pods", "", "p")) == Decision(
        False, 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
    )
    assert authz.authorize(res(BOB, "get", "", "pods", "shop", "p")) == Decision(
        False,
        'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
        'role.rbac.authorization.k8s.io "gone" not found]',
    )


def test_aggregated_cluster_role_has_the_rules_of_the_selected_roles() -> None:
    authz = rbac_only(
        cluster_role("metrics-view", aggregate=[{"matchLabels": {"aggregate-to-metrics": "true"}}]),
        cluster_role(
            "custom",
            {"verbs": ["get"], "apiGroups": [CUSTOM], "resources": ["*"]},
            labels={"aggregate-to-metrics": "true"},
        ),
        cluster_role(
            "external",
            {"verbs": ["list"], "apiGroups": [EXTERNAL], "resources": ["*"]},
            labels={"aggregate-to-metrics": "false"},
        ),
        binding("ClusterRoleBinding", "b", "ClusterRole", "metrics-view", [{"kind": "User", "name": "bob"}]),
    )
    assert authz.authorize(res(BOB, "get", CUSTOM, KM, "shop", "cpu", "cpu")).allowed
    assert not authz.authorize(res(BOB, "list", EXTERNAL, "queue", "shop")).allowed


def test_deploy_uses_no_aggregated_roles() -> None:
    """If deploy/ ever aggregates, the evaluator above already resolves it; today it does not."""
    assert not any(d.get("aggregationRule") for d in deploy_rbac())


# -- SubjectAccessReview and request attributes --------------------------------------------------------
def test_subject_access_review_spec_is_evaluated_like_a_request() -> None:
    authz = KubeApiserverAuthorizer(StaticPolicy.of(bootstrap_policy()))
    spec = {
        "user": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "groups": list(HPA.groups),
        "resourceAttributes": {
            "namespace": "shop",
            "verb": "get",
            "group": CUSTOM,
            "version": "v1beta2",
            "resource": KM,
            "subresource": "cpu",
            "name": "cpu",
        },
    }
    allowed, reason = authz.review(spec)
    assert allowed and "system:controller:horizontal-pod-autoscaler" in reason
    assert authz.review(
        {"user": "system:kube-aggregator", "nonResourceAttributes": {"path": "/apis", "verb": "get"}}
    ) == (
        False,
        "",
    )
    assert authz.review(
        {
            "user": "system:kube-aggregator",
            "groups": [AUTHENTICATED],
            "nonResourceAttributes": {"path": "/apis", "verb": "get"},
        }
    )[0]


@pytest.mark.parametrize(
    ("method", "url", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/shop/secrets/creds", {}, ("get", "", "shop", "secrets", "", "creds")),
        ("GET", "/api/v1/namespaces/shop/secrets", {}, ("list", "", "shop", "secrets", "", "")),
        ("GET", "/api/v1/secrets", {"watch": "true"}, ("watch", "", "", "secrets", "", "")),
        ("GET", "/api/v1/secrets", {"watch": "false"}, ("list", "", "", "secrets", "", "")),
        (
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            {"fieldSelector": "metadata.name=extension-apiserver-authentication", "watch": "1"},
            ("watch", "", "kube-system", "configmaps", "", "extension-apiserver-authentication"),
        ),
        (
            "PATCH",
            "/apis/metrics.keptn.sh/v1/namespaces/shop/keptnmetrics/cpu/status",
            {},
            ("patch", "metrics.keptn.sh", "shop", "keptnmetrics", "status", "cpu"),
        ),
        (
            "DELETE",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
            {},
            ("deletecollection", "coordination.k8s.io", "ns", "leases", "", ""),
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {},
            ("create", "authorization.k8s.io", "", "subjectaccessreviews", "", ""),
        ),
        ("GET", "/api/v1/namespaces/shop", {}, ("get", "", "shop", "namespaces", "", "shop")),
        ("PUT", "/api/v1/namespaces/shop/status", {}, ("update", "", "shop", "namespaces", "status", "shop")),
        (
            "GET",
            "/apis/apps/v1/watch/namespaces/shop/deployments/web",
            {},
            ("watch", "apps", "shop", "deployments", "", "web"),
        ),
    ],
)
def test_request_attributes_as_request_info_factory(
    method: str, url: str, query: dict, expected: tuple
) -> None:
    a = request_attributes(method, url, query, ALICE)
    assert a.resource_request
    assert (a.verb, a.api_group, a.namespace, a.resource, a.subresource, a.name) == expected


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/api",
        "/api/v1",
        "/apis",
        f"/apis/{CUSTOM}",
        f"/apis/{CUSTOM}/v1beta2",
        "/openapi/v2",
        "/healthz",
    ],
)
def test_discovery_and_health_are_non_resource_requests(url: str) -> None:
    a = request_attributes("GET", url, {}, ALICE)
    assert not a.resource_request and a.verb == "get" and a.path == url


def test_forbidden_status_as_kube_apiserver_writes_it() -> None:
    a = request_attributes("GET", "/api/v1/namespaces/shop/secrets", {}, SERVER)
    assert forbidden_status(a) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'secrets is forbidden: User "system:serviceaccount:keptn-system:keptn-metrics" '
        'cannot list resource "secrets" in API group "" in the namespace "shop"',
        "reason": "Forbidden",
        "details": {"kind": "secrets"},
        "code": 403,
    }
    named = request_attributes(
        "PATCH", "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io", {}, SERVER
    )
    assert forbidden_status(named, "RBAC: x")["message"] == (
        'apiservices.apiregistration.k8s.io "v1beta1.metrics.k8s.io" is forbidden: User '
        '"system:serviceaccount:keptn-system:keptn-metrics" cannot patch resource "apiservices" in API group '
        '"apiregistration.k8s.io" at the cluster scope: RBAC: x'
    )
    anon = forbidden_status(request_attributes("GET", "/apis", {}, ANONYMOUS))
    assert (
        anon["message"] == 'forbidden: User "system:anonymous" cannot get path "/apis"'
        and anon["details"] == {}
    )


@pytest.mark.parametrize(
    ("values", "may_patch"),
    [
        ({}, {"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}),
        (
            {"externalMetrics": {"enabled": True}},
            {
                "v1beta2.custom.metrics.k8s.io",
                "v1beta1.custom.metrics.k8s.io",
                "v1beta1.external.metrics.k8s.io",
            },
        ),
        ({"certManager": {"enabled": True}}, set()),  # cert-manager injects the CA: no APIService rights
    ],
)
def test_apiservice_rights_follow_the_chart_toggles(values: dict, may_patch: set[str]) -> None:
    authz = RBACAuthorizer(StaticPolicy.of(bootstrap_policy(), deploy_rbac(SERVER_NS, values)))
    names = {
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
        "v1beta1.metrics.k8s.io",
    }
    allowed = {
        n
        for n in names
        if authz.authorize(server("patch", "apiregistration.k8s.io", "apiservices", "", n)).allowed
    }
    assert allowed == may_patch
