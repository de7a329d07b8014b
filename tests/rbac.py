"""RBAC authorization as kube-apiserver evaluates it, for the test doubles.

Semantics read from kubernetes/kubernetes (facts only, no code copied):
- plugin/pkg/auth/authorizer/rbac/rbac.go: deny unless one rule of one applicable binding
  allows (`RuleAllows`: resource requests match verb, API group, `resource[/subresource]`,
  resourceName; non-resource requests match verb and URL); the allow reason
  `RBAC: allowed by <binding>`; a denial is "no opinion" whose reason lists only the
  errors met while resolving role references (`RBAC: <error>`), usually "".
- pkg/apis/rbac/v1/evaluation_helpers.go: `*` verbs/groups/resources/URLs match anything;
  `*/<subresource>` matches that subresource of any resource; an empty resourceNames
  matches every name; a non-resource URL ending in `*` is a prefix match.
- pkg/registry/rbac/validation/rule.go: ClusterRoleBindings apply in every namespace and
  cluster-wide; RoleBindings only to requests in their own namespace and may reference a
  Role of that namespace or a ClusterRole; subjects User (name), Group (any group of the
  user), ServiceAccount (username `system:serviceaccount:<ns>:<name>`; a RoleBinding's
  subject without namespace means the binding's namespace, a ClusterRoleBinding's matches
  nothing); the binding descriptions used in reasons.
- pkg/controller/clusterroleaggregation: a ClusterRole with `aggregationRule` has the union
  of the rules of every ClusterRole selected by its label selectors.
- k8s.io/apiserver pkg/authorization/authorizerfactory (privileged groups): kube-apiserver
  allows `system:masters` before RBAC is asked, with an empty reason.

The bootstrap policy (`bootstrap_policy()`) holds the objects a kube-apiserver 1.36 creates
at start that matter to an aggregated metrics server, with the rules of
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go (cluster-admin, system:discovery,
system:basic-user, system:public-info-viewer, system:auth-delegator, system:kube-aggregator),
controller_policy.go (system:controller:horizontal-pod-autoscaler and its binding to
kube-system/horizontal-pod-autoscaler) and namespace_policy.go
(kube-system/extension-apiserver-authentication-reader), as their golden files
bootstrappolicy/testdata/{cluster-roles,cluster-role-bindings,controller-roles,
controller-role-bindings,namespace-roles}.yaml list them.

Not modelled: other authorizers (Node, Webhook, ABAC), the escalation checks on writing
roles and bindings, and every other bootstrap role.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

JSON = dict[str, Any]

SYSTEM_MASTERS = "system:masters"
ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS = "system:serviceaccounts"
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def _q(text: str) -> str:
    """Go's %q for the strings that occur here."""
    return json.dumps(text)


# -- identities and requests ------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> JSON:
        """The `user` of a TokenReview status."""
        out: JSON = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_user(namespace: str, name: str, uid: str = "") -> User:
    """A service account as its token authenticates: its groups plus `system:authenticated`."""
    return User(
        service_account_username(namespace, name),
        (ALL_SERVICE_ACCOUNTS, f"{ALL_SERVICE_ACCOUNTS}:{namespace}", ALL_AUTHENTICATED),
        uid,
    )


ANONYMOUS = User(ANONYMOUS_USER, (ALL_UNAUTHENTICATED,))


def with_authenticated_group(user: User) -> User:
    """k8s.io/apiserver's AuthenticatedGroupAdder: every authenticated user gets the group."""
    if user.name == ANONYMOUS_USER or ALL_AUTHENTICATED in user.groups or ALL_UNAUTHENTICATED in user.groups:
        return user
    return User(user.name, (*user.groups, ALL_AUTHENTICATED), user.uid, user.extra)


@dataclass(frozen=True)
class Attributes:
    """What a request asks for (k8s.io/apiserver authorizer.Attributes)."""

    user: User
    verb: str
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    @classmethod
    def resource_of(
        cls,
        user: User,
        verb: str,
        group: str,
        resource: str,
        namespace: str = "",
        name: str = "",
        subresource: str = "",
        version: str = "",
    ) -> Attributes:
        return cls(user, verb, True, namespace, group, version, resource, subresource, name)

    @classmethod
    def path_of(cls, user: User, verb: str, path: str) -> Attributes:
        return cls(user, verb, False, path=path)

    @classmethod
    def from_sar_spec(cls, spec: Mapping[str, Any]) -> Attributes:
        """The attributes a SubjectAccessReview spec describes (authorization/v1 field names)."""
        extra = tuple(sorted((k, tuple(v)) for k, v in (spec.get("extra") or {}).items()))
        user = User(spec.get("user") or "", tuple(spec.get("groups") or ()), spec.get("uid") or "", extra)
        res = spec.get("resourceAttributes")
        if res:
            return cls(
                user,
                res.get("verb") or "",
                True,
                res.get("namespace") or "",
                res.get("group") or "",
                res.get("version") or "",
                res.get("resource") or "",
                res.get("subresource") or "",
                res.get("name") or "",
            )
        non = spec.get("nonResourceAttributes") or {}
        return cls(user, non.get("verb") or "", False, path=non.get("path") or "")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


# -- rules ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyRule:
    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PolicyRule:
        def strings(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in (doc.get(key) or ()))

        return cls(
            strings("verbs"),
            strings("apiGroups"),
            strings("resources"),
            strings("resourceNames"),
            strings("nonResourceURLs"),
        )

    def allows(self, attrs: Attributes) -> bool:
        if not ("*" in self.verbs or attrs.verb in self.verbs):
            return False
        if not attrs.resource_request:
            return any(
                url == "*"
                or url == attrs.path
                or (url.endswith("*") and attrs.path.startswith(url.rstrip("*")))
                for url in self.non_resource_urls
            )
        if not ("*" in self.api_groups or attrs.api_group in self.api_groups):
            return False
        combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        if not any(
            res == "*" or res == combined or (bool(attrs.subresource) and res == f"*/{attrs.subresource}")
            for res in self.resources
        ):
            return False
        return not self.resource_names or attrs.name in self.resource_names


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or ())
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- where roles and bindings come from ----------------------------------------------------------
class PolicySource(Protocol):
    """Read access to the four RBAC kinds (the listers the real authorizer uses)."""

    def cluster_role(self, name: str) -> JSON | None: ...
    def cluster_roles(self) -> Iterable[JSON]: ...
    def role(self, namespace: str, name: str) -> JSON | None: ...
    def cluster_role_bindings(self) -> Iterable[JSON]: ...
    def role_bindings(self, namespace: str) -> Iterable[JSON]: ...


@dataclass
class StaticPolicy:
    """Roles and bindings held in memory, e.g. read from manifests."""

    objects: dict[tuple[str, str, str], JSON] = field(default_factory=dict)  # (kind, ns, name)

    @classmethod
    def of(cls, *docs: Iterable[JSON]) -> StaticPolicy:
        policy = cls()
        for group in docs:
            policy.add(*group)
        return policy

    def add(self, *docs: JSON) -> StaticPolicy:
        for doc in docs:
            if doc.get("kind") in RBAC_KINDS and str(doc.get("apiVersion", "")).startswith(RBAC_GROUP):
                md = doc.get("metadata") or {}
                ns = "" if doc["kind"].startswith("Cluster") else md.get("namespace") or "default"
                self.objects[(doc["kind"], ns, md["name"])] = doc
        return self

    def remove(self, kind: str, name: str, namespace: str = "") -> None:
        self.objects.pop((kind, namespace, name), None)

    def _of_kind(self, kind: str, namespace: str | None = None) -> list[JSON]:
        return [
            doc
            for (k, ns, _), doc in sorted(self.objects.items(), key=lambda item: item[0])
            if k == kind and (namespace is None or ns == namespace)
        ]

    def cluster_role(self, name: str) -> JSON | None:
        return self.objects.get(("ClusterRole", "", name))

    def cluster_roles(self) -> Iterable[JSON]:
        return self._of_kind("ClusterRole")

    def role(self, namespace: str, name: str) -> JSON | None:
        return self.objects.get(("Role", namespace, name))

    def cluster_role_bindings(self) -> Iterable[JSON]:
        return self._of_kind("ClusterRoleBinding")

    def role_bindings(self, namespace: str) -> Iterable[JSON]:
        return self._of_kind("RoleBinding", namespace)


# -- the authorizer ---------------------------------------------------------------------------
class _RoleNotFound(Exception):
    pass


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f"{kind} {_q(name + '/' + (subject.get('namespace') or binding_namespace))}"
    return f"{kind} {_q(name)}"


def _applies_to(user: User, subject: Mapping[str, Any], binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and user.name == service_account_username(ns, name)
    return False


class RBACAuthorizer:
    """plugin/pkg/auth/authorizer/rbac.RBACAuthorizer over a `PolicySource`."""

    def __init__(self, source: PolicySource) -> None:
        self.source = source

    def rules_of(self, role_ref: Mapping[str, Any], binding_namespace: str) -> list[PolicyRule]:
        kind, name = role_ref.get("kind"), role_ref.get("name", "")
        if kind == "Role":
            role = self.source.role(binding_namespace, name)
            if role is None:
                raise _RoleNotFound(f'role.{RBAC_GROUP} "{name}" not found')
            return [PolicyRule.from_json(r) for r in role.get("rules") or ()]
        if kind == "ClusterRole":
            cluster_role = self.source.cluster_role(name)
            if cluster_role is None:
                raise _RoleNotFound(f'clusterrole.{RBAC_GROUP} "{name}" not found')
            return self._cluster_role_rules(cluster_role)
        raise _RoleNotFound(f"unsupported role reference kind: {_q(str(kind))}")

    def _cluster_role_rules(self, role: JSON) -> list[PolicyRule]:
        aggregation = role.get("aggregationRule")
        if not aggregation:
            return [PolicyRule.from_json(r) for r in role.get("rules") or ()]
        name = role["metadata"]["name"]
        rules: list[PolicyRule] = []
        for other in self.source.cluster_roles():
            if other["metadata"]["name"] == name or other.get("aggregationRule"):
                continue
            labels = other["metadata"].get("labels") or {}
            if any(_selector_matches(sel, labels) for sel in aggregation.get("clusterRoleSelectors") or ()):
                for rule in other.get("rules") or ():
                    parsed = PolicyRule.from_json(rule)
                    if parsed not in rules:
                        rules.append(parsed)
        return rules

    def authorize(self, attrs: Attributes) -> Decision:
        errors: list[str] = []
        candidates: list[tuple[JSON, str, str]] = [
            (b, "", "ClusterRoleBinding") for b in self.source.cluster_role_bindings()
        ]
        if attrs.namespace:
            candidates += [
                (b, attrs.namespace, "RoleBinding") for b in self.source.role_bindings(attrs.namespace)
            ]
        for binding, ns, kind in candidates:
            subject = next((s for s in binding.get("subjects") or () if _applies_to(attrs.user, s, ns)), None)
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            try:
                rules = self.rules_of(ref, ns)
            except _RoleNotFound as exc:
                errors.append(str(exc))
                continue
            if any(rule.allows(attrs) for rule in rules):
                name = binding["metadata"]["name"] + (f"/{ns}" if ns else "")
                return Decision(
                    True,
                    f"RBAC: allowed by {kind} {_q(name)} of {ref.get('kind')} {_q(ref.get('name', ''))} "
                    f"to {_describe_subject(subject, ns)}",
                )
        if not errors:
            return Decision(False, "")
        return Decision(False, "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"))


class KubeApiserverAuthorizer:
    """kube-apiserver's authorizer chain as far as it matters here: `system:masters`, then RBAC."""

    def __init__(self, source: PolicySource) -> None:
        self.rbac = RBACAuthorizer(source)

    def authorize(self, attrs: Attributes) -> Decision:
        if SYSTEM_MASTERS in attrs.user.groups:
            return Decision(True, "")
        return self.rbac.authorize(attrs)

    def review(self, spec: Mapping[str, Any]) -> tuple[bool, str]:
        """A SubjectAccessReview spec -> (status.allowed, status.reason)."""
        decision = self.authorize(Attributes.from_sar_spec(spec))
        return decision.allowed, decision.reason


def sar_policy(source: PolicySource) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    """A SubjectAccessReview answerer for test doubles that take `spec -> (allowed, reason)`."""
    return KubeApiserverAuthorizer(source).review


# -- the bootstrap policy of kube-apiserver 1.36 -----------------------------------------------------
_BOOTSTRAP_META: JSON = {
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
}
_EVENTS_RULE: JSON = {
    "apiGroups": ["", "events.k8s.io"],
    "resources": ["events"],
    "verbs": ["create", "update", "patch"],
}


def _cluster_role(name: str, *rules: JSON) -> JSON:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": {"name": name, **_BOOTSTRAP_META},
        "rules": list(rules),
    }


def _binding(
    kind: str, name: str, role_kind: str, role: str, subjects: list[JSON], namespace: str = ""
) -> JSON:
    md: JSON = {"name": name, **_BOOTSTRAP_META}
    if namespace:
        md["namespace"] = namespace
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": kind,
        "metadata": md,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
        "subjects": subjects,
    }


def _group(name: str) -> JSON:
    return {"apiGroup": RBAC_GROUP, "kind": "Group", "name": name}


def _user(name: str) -> JSON:
    return {"apiGroup": RBAC_GROUP, "kind": "User", "name": name}


def _sa(namespace: str, name: str) -> JSON:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def bootstrap_policy() -> list[JSON]:
    """The bootstrap roles and bindings that matter to an aggregated metrics server."""
    hpa = "system:controller:horizontal-pod-autoscaler"
    return [
        _cluster_role(
            "cluster-admin",
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ),
        _binding(
            "ClusterRoleBinding", "cluster-admin", "ClusterRole", "cluster-admin", [_group(SYSTEM_MASTERS)]
        ),
        _cluster_role(
            "system:discovery",
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                "verbs": ["get"],
            },
        ),
        _binding(
            "ClusterRoleBinding",
            "system:discovery",
            "ClusterRole",
            "system:discovery",
            [_group(ALL_AUTHENTICATED)],
        ),
        _cluster_role(
            "system:basic-user",
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ),
        _binding(
            "ClusterRoleBinding",
            "system:basic-user",
            "ClusterRole",
            "system:basic-user",
            [_group(ALL_AUTHENTICATED)],
        ),
        _cluster_role(
            "system:public-info-viewer",
            {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]},
        ),
        _binding(
            "ClusterRoleBinding",
            "system:public-info-viewer",
            "ClusterRole",
            "system:public-info-viewer",
            [_group(ALL_AUTHENTICATED), _group(ALL_UNAUTHENTICATED)],
        ),
        _cluster_role(
            "system:auth-delegator",
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["subjectaccessreviews"],
                "verbs": ["create"],
            },
        ),
        # a role only (nothing binds it by default); the aggregator's own calls are proxied as
        # system:kube-aggregator and reach aggregated servers through SubjectAccessReviews
        _cluster_role(
            "system:kube-aggregator",
            {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["get", "list", "watch"]},
        ),
        _cluster_role(
            hpa,
            {
                "apiGroups": ["autoscaling"],
                "resources": ["horizontalpodautoscalers"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["autoscaling"],
                "resources": ["horizontalpodautoscalers/status"],
                "verbs": ["update"],
            },
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["custom.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
            _EVENTS_RULE,
        ),
        _binding(
            "ClusterRoleBinding", hpa, "ClusterRole", hpa, [_sa("kube-system", "horizontal-pod-autoscaler")]
        ),
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": {
                "name": "extension-apiserver-authentication-reader",
                "namespace": "kube-system",
                **_BOOTSTRAP_META,
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["extension-apiserver-authentication"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    ]


# -- this project's deploy/ ------------------------------------------------------------------------
DEFAULT_SERVER_NAMESPACE = "keptn-system"
_DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
_RELEASE_NS = "release-namespace-placeholder"


@functools.cache
def _rendered(values_json: str) -> str:
    spec = importlib.util.spec_from_file_location("deploy_render_for_rbac", _DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    docs = render.render_chart(json.loads(values_json), namespace=_RELEASE_NS)
    return json.dumps([d for d in docs if d.get("kind") != "CustomResourceDefinition"])


def deploy_objects(
    namespace: str = DEFAULT_SERVER_NAMESPACE, values: Mapping[str, Any] | None = None
) -> list[JSON]:
    """What deploy/ installs (CRDs aside) into `namespace`, rendered by the project's own chart
    renderer (the chart is generated from deploy/base and proven equal to `kustomize build`;
    `{{ .Release.Namespace }}` is textual there, so rendering once and substituting is the same)."""
    text = _rendered(json.dumps(dict(values or {}), sort_keys=True))
    docs: list[JSON] = json.loads(text.replace(_RELEASE_NS, namespace))
    return docs


def deploy_rbac(
    namespace: str = DEFAULT_SERVER_NAMESPACE, values: Mapping[str, Any] | None = None
) -> list[JSON]:
    """deploy/'s Roles, ClusterRoles and bindings, installed into `namespace`."""
    return [d for d in deploy_objects(namespace, values) if d.get("kind") in RBAC_KINDS]


def deploy_server_user(namespace: str = DEFAULT_SERVER_NAMESPACE) -> User:
    """The identity the server's pods run as: the Deployment's serviceAccountName in `namespace`."""
    for doc in deploy_objects(namespace):
        if doc.get("kind") == "Deployment":
            sa = doc["spec"]["template"]["spec"].get("serviceAccountName") or "default"
            return service_account_user(namespace, sa)
    raise LookupError("deploy/ has no Deployment")


def policy_with_deploy(namespace: str = DEFAULT_SERVER_NAMESPACE, *extra: JSON) -> StaticPolicy:
    """The bootstrap policy plus deploy/'s RBAC installed into `namespace` (plus `extra` objects)."""
    return StaticPolicy.of(bootstrap_policy(), deploy_rbac(namespace), extra)
