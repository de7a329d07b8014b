"""A faithful stand-in for kube-apiserver, for tests (aiohttp, in process).

It answers the way a real kube-apiserver (with Keptn's CRDs installed, status subresource
enabled) answers for the resources the metrics server touches:

- namespaced custom resources (metrics.keptn.sh, lifecycle.keptn.sh), core v1 secrets,
  configmaps, events, coordination.k8s.io/v1 leases, events.k8s.io/v1 events, namespaces;
- create (201, 409 AlreadyExists), get (404 NotFound), list (list resourceVersion,
  labelSelector, fieldSelector metadata.name/metadata.namespace, limit/continue,
  cluster-wide lists), update (409 Conflict on a stale resourceVersion; custom resources
  refuse unconditional updates with 422 like the real CRD strategy), merge patch
  (RFC 7386, null deletes), json patch (RFC 6902), strategic merge patch refused with 415
  for custom resources, delete (with preconditions);
- the `/status` subresource: the main endpoint ignores status, the status endpoint
  ignores everything else; `metadata.generation` increases only when the spec changes;
  writes that change nothing do not bump the resourceVersion (as etcd3 storage);
- one global, monotonically increasing resourceVersion; watch streams with
  ADDED/MODIFIED/DELETED/BOOKMARK events as newline-delimited JSON, label selector
  transitions reported as ADDED/DELETED, an `ERROR` event with a 410 `Expired` Status for
  versions older than the compaction point, `timeoutSeconds`;
- rbac.authorization.k8s.io/v1 Roles, RoleBindings, ClusterRoles, ClusterRoleBindings as
  stored objects, seeded with the bootstrap policy of tests/rbac.py (cluster-admin bound to
  system:masters, system:discovery, system:basic-user, system:public-info-viewer,
  system:auth-delegator, system:kube-aggregator, system:controller:horizontal-pod-autoscaler,
  kube-system/extension-apiserver-authentication-reader);
- **authentication** of every request: `Authorization: Bearer <token>` looked up in `users`
  (unknown token: 401 `Unauthorized` Status), no credentials: `system:anonymous` /
  `system:unauthenticated` (or 401 with `anonymous_auth = False`); client certificates and
  front-proxy headers are not accepted (the stand-in serves plain HTTP);
- **authorization** of every request, discovery and /healthz included, with RBAC over the
  stored roles and bindings (tests/rbac.py; `system:masters` always allowed), attributes
  derived as kube-apiserver's RequestInfoFactory does (tests/kube_requests.py: list vs
  watch, deletecollection, `fieldSelector=metadata.name=x` as the name, namespaces and
  their subresources); a denial is a 403 `Forbidden` Status with kube-apiserver's message
  (`<resource>.<group> "<name>" is forbidden: User "<u>" cannot <verb> resource "<r>" in
  API group "<g>" in the namespace "<ns>"`) and is recorded in `denials`;
- TokenReview answered from `users` (hook `token_reviewer`; the groups include
  `system:authenticated`, as kube-apiserver's do: its TokenReview runs the request
  authenticator chain, AuthenticatedGroupAdder included) and SubjectAccessReview answered by
  the same RBAC authorizer (hook `access_reviewer`; specs failing kube-apiserver's validation
  get 422 Invalid),
  /version, /api, /apis and group discovery.

Test hooks: `requests` (every authorized request: verb, resource, namespace, name,
subresource), `count()`, `compact()`, `drop_watches()`, `fail_next()`, `add_user()`,
`install()` (store objects as an admin would), `users`, `denials`, `token_reviewer`,
`access_reviewer`, `authorizer`, `anonymous_auth`, `bookmark_interval`. `ADMIN_TOKEN`
authenticates as a `system:masters` member for test setup.
Not implemented (a real server has them): server-side apply, protobuf, finalizers and
graceful deletion, CEL validation of custom resources, admission (so no RBAC escalation
check on writing roles or bindings, no ServiceAccount objects or token issuance: tokens are
whatever `users` maps), impersonation, the Node and Webhook authorizers, aggregation of
ClusterRoles happens at evaluation time rather than by writing their `rules`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.kube_requests import UNAUTHORIZED_STATUS, forbidden_status, request_attributes
from tests.rbac import (
    ANONYMOUS,
    RBAC_GROUP,
    SYSTEM_MASTERS,
    Attributes,
    KubeApiserverAuthorizer,
    User,
    bootstrap_policy,
    with_authenticated_group,
)

JSON = dict[str, Any]
ADMIN_TOKEN = "standin-admin-token"
ADMIN = User("standin-admin", (SYSTEM_MASTERS, "system:authenticated"))


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    custom: bool = False  # a CRD-backed resource (generation, no unconditional update, no SMP)
    singular: str = ""
    short_names: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


_KEPTN_VERSIONS = ("v1", "v1beta1", "v1alpha3", "v1alpha2", "v1alpha1")


def _crd(group: str, plural: str, kind: str, versions: tuple[str, ...] = ("v1",)) -> ResourceType:
    return ResourceType(
        group, versions, plural, kind, status_subresource=True, custom=True, singular=kind.lower()
    )


RESOURCES: tuple[ResourceType, ...] = (
    _crd("metrics.keptn.sh", "keptnmetrics", "KeptnMetric", _KEPTN_VERSIONS),
    _crd("metrics.keptn.sh", "keptnmetricsproviders", "KeptnMetricsProvider", _KEPTN_VERSIONS),
    _crd("metrics.keptn.sh", "analyses", "Analysis", ("v1", "v1beta1", "v1alpha3")),
    _crd("metrics.keptn.sh", "analysisdefinitions", "AnalysisDefinition", ("v1", "v1beta1", "v1alpha3")),
    _crd(
        "metrics.keptn.sh", "analysisvaluetemplates", "AnalysisValueTemplate", ("v1", "v1beta1", "v1alpha3")
    ),
    _crd("lifecycle.keptn.sh", "keptnevaluations", "KeptnEvaluation", ("v1", "v1beta1")),
    _crd("lifecycle.keptn.sh", "keptnevaluationdefinitions", "KeptnEvaluationDefinition", ("v1", "v1beta1")),
    ResourceType("", ("v1",), "secrets", "Secret"),
    ResourceType("", ("v1",), "configmaps", "ConfigMap"),
    ResourceType("", ("v1",), "events", "Event"),
    ResourceType("", ("v1",), "namespaces", "Namespace", namespaced=False, status_subresource=True),
    ResourceType("coordination.k8s.io", ("v1",), "leases", "Lease"),
    ResourceType("events.k8s.io", ("v1",), "events", "Event"),
    ResourceType(RBAC_GROUP, ("v1",), "roles", "Role"),
    ResourceType(RBAC_GROUP, ("v1",), "rolebindings", "RoleBinding"),
    ResourceType(RBAC_GROUP, ("v1",), "clusterroles", "ClusterRole", namespaced=False),
    ResourceType(RBAC_GROUP, ("v1",), "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
)

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_SMP = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_APPLY = "application/apply-patch+yaml"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        out: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def _details(rt: ResourceType, name: str) -> JSON:
    d: JSON = {"name": name, "kind": rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(rt, name),
    )


def invalid(rt: ResourceType, name: str, field_path: str, value: Any, detail: str) -> ApiError:
    kind_ref = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    msg = f'{rt.kind} "{name}" is invalid: {field_path}: Invalid value: {json.dumps(value)}: {detail}'
    d = {
        "name": name,
        "group": rt.group,
        "kind": rt.kind,
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(value)}: {detail}",
                "field": field_path,
            }
        ],
    }
    del kind_ref
    return ApiError(422, "Invalid", msg, d)


# -- label selectors --------------------------------------------------------------------------
_SEL_TERM = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<val>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*$"
)


def _split_selector(text: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return terms


def parse_label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    reqs: list[tuple[str, str, set[str]]] = []  # (key, operator, values)
    for term in _split_selector(text or ""):
        m = _SEL_TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: found '{term.strip()}'")
        if m["not"]:
            reqs.append((m["nkey"], "!exists", set()))
        elif m["op"]:
            reqs.append((m["key"], "!=" if m["op"] == "!=" else "=", {m["val"]}))
        elif m["setop"]:
            reqs.append((m["key"], m["setop"], {x.strip() for x in m["vals"].split(",") if x.strip()}))
        else:
            reqs.append((m["key"], "exists", set()))

    def ok(labels: dict[str, str]) -> bool:
        for key, op, vals in reqs:
            have = key in labels
            value = labels.get(key)
            if op == "exists" and not have:
                return False
            if op == "!exists" and have:
                return False
            if op in ("=", "in") and value not in vals:
                return False
            if op in ("!=", "notin") and value in vals:
                return False
        return True

    return ok


def parse_field_selector(text: str, rt: ResourceType) -> Callable[[JSON], bool]:
    checks: list[Callable[[JSON], bool]] = []
    for term in [t for t in (text or "").split(",") if t.strip()]:
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: '{term}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        attr = path.split(".", 1)[1]

        def check(obj: JSON, attr: str = attr, value: str = value, neg: bool = op == "!=") -> bool:
            return (obj["metadata"].get(attr, "") == value) != neg

        checks.append(check)
    del rt
    return lambda obj: all(c(obj) for c in checks)


# -- patches ----------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise KeyError(p)
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ValueError("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ValueError(f"testing value {op.get('path')} failed")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op["from"])
            value = copy.deepcopy(_walk(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, parts, value)
            continue
        if kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            doc = _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        else:
            raise ValueError(f"Unexpected kind: {kind}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last)
        if idx > len(parent) or idx < 0:
            raise ValueError("index out of range")
        parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise ValueError("cannot add to a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return None
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


# -- CRD structural schemas (optional) ----------------------------------------------------------
def load_crd_schemas(paths: Any) -> dict[tuple[str, str, str], JSON]:
    """{(group, plural, version): openAPIV3Schema} from CRD YAML files (e.g. deploy/crds/*.yaml)."""
    import yaml

    out: dict[tuple[str, str, str], JSON] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec.get("versions") or []:
                    schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or None
                    if schema:
                        out[(spec["group"], spec["names"]["plural"], v["name"])] = schema
    return out


def _prune(value: Any, schema: JSON, root: bool = False) -> Any:
    """Drop unknown fields and non-nullable nulls, then apply defaults (as kube-apiserver does)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            return value
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        out: JSON = {}
        for k, v in value.items():
            if root and k in ("apiVersion", "kind", "metadata"):
                out[k] = v
                continue
            sub = props.get(k) if props is not None else (addl if isinstance(addl, dict) else None)
            if sub is None:
                if props is None and (addl is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                    out[k] = v
                continue  # pruned
            if v is None and not sub.get("nullable"):
                continue
            out[k] = _prune(v, sub)
        for k, sub in (props or {}).items():
            if k not in out and "default" in sub:
                out[k] = _prune(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"]) for v in value]
    return value


def _field_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        parts += missing[:1]
    return ".".join(parts) or "<root>"


# -- the server -------------------------------------------------------------------------------
@dataclass
class Request:
    verb: str  # get list watch create update patch delete
    group: str
    resource: str
    namespace: str
    name: str
    subresource: str
    content_type: str = ""


@dataclass
class _Watcher:
    rt: ResourceType
    namespace: str
    label_ok: Callable[[dict[str, str]], bool]
    field_ok: Callable[[JSON], bool]
    version: str
    queue: asyncio.Queue[tuple[str, JSON] | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: JSON) -> bool:
        md = obj["metadata"]
        if self.namespace and md.get("namespace") != self.namespace:
            return False
        return self.label_ok(md.get("labels") or {}) and self.field_ok(obj)


@dataclass
class _Change:
    rv: int
    rt: ResourceType
    type: str
    obj: JSON
    old: JSON | None


TokenReviewer = Callable[[str], JSON | None]  # token -> user info {username, uid, groups, extra} or None
AccessReviewer = Callable[[JSON], tuple[bool, str]]  # SAR spec -> (allowed, reason)


class KubeStandin:
    """State and HTTP handlers of the stand-in. Start it with `aiohttp_server(standin.app)`
    or `await standin.start()`."""

    def __init__(self, crd_schemas: dict[tuple[str, str, str], JSON] | None = None) -> None:
        #: structural schemas of custom resources: when given, objects are pruned, defaulted
        #: and validated like kube-apiserver does (422 Invalid); CEL rules are not evaluated
        self.crd_schemas = crd_schemas or {}
        self.rv = 1
        self.compacted_rv = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], JSON]] = {}
        self.history: list[_Change] = []
        self.watchers: list[_Watcher] = []
        self.requests: list[Request] = []
        self.bookmark_interval = 1.0
        #: bearer token -> identity, for the stand-in's own callers and for TokenReviews
        self.users: dict[str, User] = {ADMIN_TOKEN: ADMIN}
        #: requests without credentials run as system:anonymous (kube-apiserver's default)
        self.anonymous_auth = True
        #: every request is authorized with RBAC over the stored roles and bindings
        self.authorizer = KubeApiserverAuthorizer(self)
        #: (attributes, Status) of every request answered 403, to explain a failing test
        self.denials: list[tuple[Attributes, JSON]] = []
        self.token_reviewer: TokenReviewer = self._review_token
        self.access_reviewer: AccessReviewer = self.authorizer.review
        self._failures: list[tuple[Callable[[Request], bool], int, str]] = []
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        for rt in RESOURCES:
            for v in rt.versions:
                self._by_path[(rt.group, v, rt.plural)] = rt
        for ns in _INITIAL_NAMESPACES:
            self._store(self._rt("", "namespaces"), "", self._new_meta_obj("Namespace", "v1", ns, ""))
        self.install(*bootstrap_policy())
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sock = server.sockets[0]  # type: ignore[attr-defined]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test hooks ------------------------------------------------------------------------------
    def count(
        self,
        verb: str | None = None,
        resource: str | None = None,
        subresource: str | None = None,
        group: str | None = None,
    ) -> int:
        return sum(
            1
            for r in self.requests
            if (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
            and (subresource is None or r.subresource == subresource)
            and (group is None or r.group == group)
        )

    def compact(self, rv: int | None = None) -> None:
        """Forget history up to `rv` (default: now): watches from older versions get 410."""
        self.compacted_rv = self.rv if rv is None else rv
        self.history = [c for c in self.history if c.rv > self.compacted_rv]

    def drop_watches(self) -> None:
        """End every open watch stream (the client sees the connection end)."""
        for w in list(self.watchers):
            w.queue.put_nowait(None)

    def fail_next(
        self,
        predicate: Callable[[Request], bool],
        code: int = 500,
        times: int = 1,
        reason: str = "InternalError",
    ) -> None:
        """Answer the next `times` requests matching `predicate` with a `code` Status."""
        for _ in range(times):
            self._failures.append((predicate, code, reason))

    def add_user(self, token: str, user: User) -> None:
        """Accept `token` as `user` (its groups as a TokenReview would return them)."""
        self.users[token] = with_authenticated_group(user)

    def install(self, *docs: JSON) -> None:
        """Store objects as an admin's `kubectl apply` would (no authorization, no admission)."""
        for doc in docs:
            group, _, version = doc["apiVersion"].rpartition("/")
            rt = next((r for r in RESOURCES if r.group == group and r.kind == doc["kind"]), None)
            if rt is None:
                raise KeyError(f"the stand-in does not serve {doc['apiVersion']} {doc['kind']}")
            obj = copy.deepcopy(doc)
            md = obj.setdefault("metadata", {})
            namespace = (md.get("namespace") or "default") if rt.namespaced else ""
            if rt.namespaced:
                md["namespace"] = namespace
            old = self._bucket(rt).get((namespace, md["name"]))
            md.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            md.setdefault("creationTimestamp", now_rfc3339())
            obj["apiVersion"] = rt.api_version(version or rt.versions[0])
            self._store(rt, namespace, obj, "MODIFIED" if old else "ADDED", old=old)

    # -- the RBAC policy source (tests.rbac.PolicySource) over the stored objects ------------------
    def _rbac(self, plural: str) -> dict[tuple[str, str], JSON]:
        return self.objects.get((RBAC_GROUP, plural), {})

    def cluster_role(self, name: str) -> JSON | None:
        return self._rbac("clusterroles").get(("", name))

    def cluster_roles(self) -> list[JSON]:
        return [o for _, o in sorted(self._rbac("clusterroles").items())]

    def role(self, namespace: str, name: str) -> JSON | None:
        return self._rbac("roles").get((namespace, name))

    def cluster_role_bindings(self) -> list[JSON]:
        return [o for _, o in sorted(self._rbac("clusterrolebindings").items())]

    def role_bindings(self, namespace: str) -> list[JSON]:
        return [o for (ns, _), o in sorted(self._rbac("rolebindings").items()) if ns == namespace]

    def object(self, group: str, resource: str, namespace: str, name: str) -> JSON | None:
        obj = self.objects.get((group, resource), {}).get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    # -- internals -----------------------------------------------------------------------------
    def _rt(self, group: str, plural: str) -> ResourceType:
        for rt in RESOURCES:
            if rt.group == group and rt.plural == plural:
                return rt
        raise KeyError(plural)

    def _new_meta_obj(self, kind: str, api_version: str, name: str, namespace: str) -> JSON:
        md: JSON = {"name": name}
        if namespace:
            md["namespace"] = namespace
        obj: JSON = {"kind": kind, "apiVersion": api_version, "metadata": md}
        if kind == "Namespace":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            md["labels"] = {"kubernetes.io/metadata.name": name}
        md.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        return obj

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], JSON]:
        return self.objects.setdefault((rt.group, rt.plural), {})

    def _store(
        self, rt: ResourceType, namespace: str, obj: JSON, event: str | None = None, old: JSON | None = None
    ) -> JSON:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (namespace, obj["metadata"]["name"])
        if event == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        change = _Change(self.rv, rt, event or "ADDED", copy.deepcopy(obj), old)
        self.history.append(change)
        self._notify(change)
        return obj

    def _notify(self, change: _Change) -> None:
        for w in list(self.watchers):
            if w.rt is not change.rt:
                continue
            ev = self._event_for(w, change)
            if ev is not None:
                w.queue.put_nowait(ev)

    def _event_for(self, w: _Watcher, change: _Change) -> tuple[str, JSON] | None:
        now_ok = w.matches(change.obj)
        if change.type == "MODIFIED" and change.old is not None:
            was_ok = w.matches(change.old)
            if was_ok and not now_ok:
                return "DELETED", self._versioned(change.obj, w.rt, w.version)
            if now_ok and not was_ok:
                return "ADDED", self._versioned(change.obj, w.rt, w.version)
        if not now_ok:
            return None
        return change.type, self._versioned(change.obj, w.rt, w.version)

    @staticmethod
    def _versioned(obj: JSON, rt: ResourceType, version: str) -> JSON:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version(version)
        out["kind"] = rt.kind
        return out

    def _parse_path(self, path: str) -> tuple[str, str, ResourceType | None, str, str, str]:
        """(group, version, type, namespace, name, subresource) of a resource path."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        elif len(rest) >= 2 and rest[0] == "namespaces" and len(rest) == 2:
            # /api/v1/namespaces/{name}
            pass
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self._by_path.get((group, version, rest[0]))
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or rt is None:
            return group, version, None, namespace, name, sub
        if sub and not (sub == "status" and rt.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name and not namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return group, version, rt, namespace, name, sub

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)

    def _authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = self.users.get(token.strip())
            if user is None:
                raise ApiError(401, "Unauthorized", UNAUTHORIZED_STATUS["message"])
            return user
        if header or not self.anonymous_auth:
            raise ApiError(401, "Unauthorized", UNAUTHORIZED_STATUS["message"])
        return ANONYMOUS

    def _authorize(self, request: web.Request) -> None:
        """Authenticate, then authorize with RBAC; 401/403 Status objects as kube-apiserver's."""
        attrs = request_attributes(request.method, request.path, request.query, self._authenticate(request))
        decision = self.authorizer.authorize(attrs)
        if not decision.allowed:
            status = forbidden_status(attrs, decision.reason)
            self.denials.append((attrs, status))
            raise ApiError(403, "Forbidden", status["message"], status["details"])

    async def _route(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        path = request.path.rstrip("/") or "/"
        if path in ("/version", "/api", "/apis", "/healthz", "/readyz", "/livez") or self._is_discovery(path):
            return self._discovery(path)
        if path == "/apis/authentication.k8s.io/v1/tokenreviews" and request.method == "POST":
            return await self._token_review(request)
        if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews" and request.method == "POST":
            return await self._access_review(request)
        group, version, rt, namespace, name, sub = self._parse_path(path)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        m = request.method
        watch = q.get("watch") in ("1", "true", "True")
        verb = {
            "GET": "watch" if watch else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(m, "")
        if not verb or (verb == "create" and name) or (verb in ("update", "patch") and not name):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        ct = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        req = Request(verb, group, rt.plural, namespace, name, sub, ct)
        self.requests.append(req)
        for i, (pred, code, reason) in enumerate(self._failures):
            if pred(req):
                del self._failures[i]
                raise ApiError(code, reason, f"injected failure ({code})")
        if rt.namespaced and namespace and verb in ("create", "update", "patch"):
            if namespace != "" and ("", namespace) not in self._bucket(self._rt("", "namespaces")):
                if verb == "create":
                    raise ApiError(
                        404,
                        "NotFound",
                        f'namespaces "{namespace}" not found',
                        {"name": namespace, "kind": "namespaces"},
                    )
        if verb == "watch":
            return await self._watch(request, rt, version, namespace)
        if verb == "list":
            return web.json_response(self._list(rt, version, namespace, q))
        if verb == "get":
            return web.json_response(self._versioned(self._get(rt, namespace, name), rt, version))
        body = await self._body(request) if m in ("POST", "PUT", "PATCH") or request.can_read_body else None
        if verb == "create":
            return web.json_response(self._create(rt, version, namespace, body, q), status=201)
        if verb == "update":
            return web.json_response(self._update(rt, version, namespace, name, sub, body))
        if verb == "patch":
            return web.json_response(self._patch(rt, version, namespace, name, sub, body, ct))
        if verb == "delete":
            return web.json_response(self._delete(rt, version, namespace, name, body))
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the object provided is unrecognized: {exc}") from None

    def _get(self, rt: ResourceType, namespace: str, name: str) -> JSON:
        obj = self._bucket(rt).get((namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _list(self, rt: ResourceType, version: str, namespace: str, q: Any) -> JSON:
        label_ok = parse_label_selector(q.get("labelSelector", ""))
        field_ok = parse_field_selector(q.get("fieldSelector", ""), rt)
        items = [
            self._versioned(o, rt, version)
            for (ns, _), o in sorted(self._bucket(rt).items())
            if (not namespace or ns == namespace)
            and label_ok(o["metadata"].get("labels") or {})
            and field_ok(o)
        ]
        list_rv = self.rv
        start = 0
        if q.get("continue"):
            try:
                token = json.loads(base64.b64decode(q["continue"]))
                start, list_rv = int(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
        md: JSON = {"resourceVersion": str(list_rv)}
        limit = int(q.get("limit", "0") or 0)
        if limit > 0:
            end = start + limit
            if end < len(items):
                md["continue"] = base64.b64encode(json.dumps({"start": end, "rv": list_rv}).encode()).decode()
                md["remainingItemCount"] = len(items) - end
            items = items[start:end]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version(version),
            "metadata": md,
            "items": items,
        }

    def _check_type(self, rt: ResourceType, body: Any, name_hint: str = "") -> JSON:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the object provided is unrecognized (must be of type object)")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != rt.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rt.api_version(rt.versions[0])})",
            )
        if api_version is not None and api_version not in [rt.api_version(v) for v in rt.versions]:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rt.api_version(rt.versions[0])})",
            )
        del name_hint
        return body

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if rt.group == RBAC_GROUP:  # RBAC names are path segments (ValidateRBACName): "a:b" is fine
            if name in (".", "..") or "/" in name or "%" in name:
                raise invalid(rt, name, "metadata.name", name, 'may not contain "/" or "%"')
            return
        pattern = _DNS1123_LABEL if rt.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name):
            raise invalid(
                rt,
                name,
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )

    def _create(self, rt: ResourceType, version: str, namespace: str, body: Any, q: Any) -> JSON:
        obj = copy.deepcopy(self._check_type(rt, body))
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        name = md.get("name") or ""
        if not name and md.get("generateName"):
            name = md["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not name:
            raise invalid(rt, "", "metadata.name", "", "name or generateName is required")
        self._validate_name(rt, name)
        if rt.namespaced:
            body_ns = md.get("namespace")
            if body_ns and body_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            md["namespace"] = namespace
        if (namespace, name) in self._bucket(rt):
            raise ApiError(
                409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name)
            )
        if q.get("dryRun"):
            return obj
        md["name"] = name
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        for k in ("resourceVersion", "deletionTimestamp", "generation", "selfLink"):
            md.pop(k, None)
        if rt.custom:
            md["generation"] = 1
            if rt.status_subresource:
                obj.pop("status", None)  # create cannot set status when the subresource is enabled
        if rt.plural == "namespaces":
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version(rt.versions[0])
        obj = self._structural(rt, version, obj, name)
        stored = self._store(rt, namespace, obj, "ADDED")
        return self._versioned(stored, rt, version)

    def _apply_update(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        sub: str,
        old: JSON,
        new: Any,
        unconditional_ok: bool,
    ) -> JSON:
        new = copy.deepcopy(self._check_type(rt, new))
        md = new.get("metadata")
        if not isinstance(md, dict):
            md = new["metadata"] = {}
        if md.get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})",
            )
        if rt.namespaced and md.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        sent_rv = md.get("resourceVersion")
        if sent_rv:
            if str(sent_rv) != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
        elif not unconditional_ok:
            raise invalid(rt, name, "metadata.resourceVersion", 0, "must be specified for an update")
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            result["metadata"] = {**md}
            # immutable / system-owned metadata is kept from the stored object
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"):
                if k in old["metadata"]:
                    result["metadata"][k] = old["metadata"][k]
                else:
                    result["metadata"].pop(k, None)
            result["metadata"]["name"] = name
            if rt.namespaced:
                result["metadata"]["namespace"] = namespace
            if rt.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            if rt.custom:
                spec_old = {
                    k: v for k, v in old.items() if k not in ("metadata", "status", "apiVersion", "kind")
                }
                spec_new = {
                    k: v for k, v in result.items() if k not in ("metadata", "status", "apiVersion", "kind")
                }
                if spec_old != spec_new:
                    result["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        result["kind"], result["apiVersion"] = rt.kind, rt.api_version(rt.versions[0])
        result = self._structural(rt, version, result, name)
        if result == {**old, "apiVersion": result["apiVersion"]}:
            return self._versioned(old, rt, version)  # a no-op write does not bump the resourceVersion
        stored = self._store(rt, namespace, result, "MODIFIED", old=copy.deepcopy(old))
        return self._versioned(stored, rt, version)

    def _structural(self, rt: ResourceType, version: str, obj: JSON, name: str) -> JSON:
        schema = self.crd_schemas.get((rt.group, rt.plural, version)) or self.crd_schemas.get(
            (rt.group, rt.plural, rt.versions[0])
        )
        if not rt.custom or schema is None:
            return obj
        import jsonschema

        obj = _prune(obj, schema, root=True)
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            causes = [
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {e.message}",
                    "field": _field_path(e),
                }
                for e in errors
            ]
            summary = ", ".join(f"{c['field']}: Invalid value: {c['message'][15:]}" for c in causes)
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind}.{rt.group} "{name}" is invalid: {summary}',
                {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
            )
        return obj

    def _update(self, rt: ResourceType, version: str, namespace: str, name: str, sub: str, body: Any) -> JSON:
        old = self._get(rt, namespace, name)
        return self._apply_update(
            rt, version, namespace, name, sub, old, body, unconditional_ok=not rt.custom
        )

    def _patch(
        self, rt: ResourceType, version: str, namespace: str, name: str, sub: str, body: Any, ct: str
    ) -> JSON:
        accepted = [_JSON_PATCH, _MERGE, _APPLY] + ([] if rt.custom else [_SMP])
        if ct not in (_JSON_PATCH, _MERGE, _SMP) or (ct == _SMP and rt.custom):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(accepted)}",
            )
        old = self._get(rt, namespace, name)
        current = self._versioned(old, rt, version)
        try:
            if ct == _JSON_PATCH:
                patched = json_patch(current, body)
            else:
                if not isinstance(body, dict):
                    raise ValueError("merge patch body must be a JSON object")
                patched = merge_patch(current, body)  # strategic merge ~ merge patch for our core types
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            if ct == _JSON_PATCH and "testing value" in str(exc):
                raise ApiError(422, "Invalid", str(exc)) from None
            raise ApiError(
                422 if ct == _JSON_PATCH else 400,
                "Invalid" if ct == _JSON_PATCH else "BadRequest",
                f"the server rejected our request due to an error in our request: {exc}",
            ) from None
        if not isinstance(patched, dict):
            raise ApiError(400, "BadRequest", "patch produced a non-object")
        patched_md = patched.setdefault("metadata", {})
        if patched_md.get("resourceVersion") == old["metadata"].get("resourceVersion"):
            patched_md.pop("resourceVersion", None)  # a patch is unconditional unless it names a version
        return self._apply_update(rt, version, namespace, name, sub, old, patched, unconditional_ok=True)

    def _delete(self, rt: ResourceType, version: str, namespace: str, name: str, body: Any) -> JSON:
        old = self._get(rt, namespace, name)
        pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{old['metadata']['uid']}",
                _details(rt, name),
            )
        if rt.plural == "namespaces":
            for (grp, plural), bucket in list(self.objects.items()):
                inner = self._rt(grp, plural)
                if not inner.namespaced:
                    continue
                for (ns, n), obj in list(bucket.items()):
                    if ns == name:
                        self._store(inner, ns, copy.deepcopy(obj), "DELETED")
                        del n
        gone = self._store(rt, namespace, copy.deepcopy(old), "DELETED")
        if rt.custom:
            return self._versioned(gone, rt, version)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**_details(rt, name), "uid": old["metadata"]["uid"]},
        }

    async def _watch(
        self, request: web.Request, rt: ResourceType, version: str, namespace: str
    ) -> web.StreamResponse:
        q = request.query
        label_ok = parse_label_selector(q.get("labelSelector", ""))
        field_ok = parse_field_selector(q.get("fieldSelector", ""), rt)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = float(q.get("timeoutSeconds") or random.uniform(1800, 3600))
        rv_text = q.get("resourceVersion", "")
        w = _Watcher(rt, namespace, label_ok, field_ok, version)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(ev_type: str, obj: JSON) -> None:
            await resp.write(json.dumps({"type": ev_type, "object": obj}).encode() + b"\n")

        if rv_text in ("", "0"):
            initial = [
                ("ADDED", self._versioned(o, rt, version)) for o in self._bucket(rt).values() if w.matches(o)
            ]
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise ApiError(400, "BadRequest", f'invalid resource version "{rv_text}"') from None
            if since < self.compacted_rv:
                status = ApiError(
                    410, "Expired", f"too old resource version: {since} ({self.compacted_rv})"
                ).status()
                await send("ERROR", status)
                await resp.write_eof()
                return resp
            initial = []
            for change in self.history:
                if change.rv > since and change.rt is rt:
                    ev = self._event_for(w, change)
                    if ev is not None:
                        initial.append(ev)
        self.watchers.append(w)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for ev_type, obj in initial:
                await send(ev_type, obj)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                try:
                    item = await asyncio.wait_for(w.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version(version),
                                "metadata": {"resourceVersion": str(self.rv)},
                            },
                        )
                    continue
                if item is None:  # dropped by the test
                    transport = request.transport
                    if transport is not None:
                        transport.abort()
                    return resp
                await send(*item)
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if w in self.watchers:
                self.watchers.remove(w)
        return resp

    # -- auth reviews ------------------------------------------------------------------------------
    def _review_token(self, token: str) -> JSON | None:
        user = self.users.get(token)
        return user.to_json() if user is not None else None

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        self.requests.append(Request("create", "authentication.k8s.io", "tokenreviews", "", "", ""))
        token = ((body.get("spec") or {}).get("token")) or ""
        if not token:
            raise ApiError(400, "BadRequest", "token is required for TokenReview in authentication")
        user = self.token_reviewer(token)
        status: JSON = {"authenticated": True, "user": user} if user else {"error": "invalid bearer token"}
        if not user:
            status["user"] = {}
        return web.json_response(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": body.get("spec") or {},
                "status": status,
            },
            status=201,
        )

    async def _access_review(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        self.requests.append(Request("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""))
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, "BadRequest", "the object provided is unrecognized (spec must be an object)")
        # pkg/apis/authorization/validation.ValidateSubjectAccessReviewSpec
        problems = []
        res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if res is not None and non is not None:
            problems.append(
                "spec.nonResourceAttributes: Invalid value: "
                f"{json.dumps(non)}: cannot be specified in combination with resourceAttributes"
            )
        if res is None and non is None:
            problems.append(
                'spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or '
                "resourceAttributes must be specified"
            )
        if not spec.get("user") and not spec.get("groups"):
            problems.append(
                f"spec.user: Invalid value: {json.dumps(spec.get('user') or '')}: "
                "at least one of user or group must be specified"
            )
        if problems:
            joined = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
            raise ApiError(
                422,
                "Invalid",
                f'SubjectAccessReview.authorization.k8s.io "" is invalid: {joined}',
                {"group": "authorization.k8s.io", "kind": "SubjectAccessReview"},
            )
        allowed, reason = self.access_reviewer(spec)
        status: JSON = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        return web.json_response(
            {
                "kind": "SubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    # -- discovery -----------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in RESOURCES:
            if rt.group:
                vs = out.setdefault(rt.group, [])
                vs.extend(v for v in rt.versions if v not in vs)
        out.setdefault("authentication.k8s.io", ["v1"])
        out.setdefault("authorization.k8s.io", ["v1"])
        return out

    def _is_discovery(self, path: str) -> bool:
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "v1"]:
            return True
        return (
            len(parts) in (2, 3)
            and parts[0] == "apis"
            and parts[1] in self._groups()
            and (len(parts) == 2 or parts[2] in self._groups()[parts[1]])
        )

    def _discovery(self, path: str) -> web.Response:
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(
                {
                    "major": "1",
                    "minor": "30",
                    "gitVersion": "v1.30.0-standin",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2024-04-17T00:00:00Z",
                    "goVersion": "go1.22.2",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path == "/api":
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
                    ],
                }
            )
        groups = self._groups()

        def group_entry(g: str) -> JSON:
            vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in groups[g]]
            return {"name": g, "versions": vs, "preferredVersion": vs[0]}

        if path == "/apis":
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [group_entry(g) for g in sorted(groups)],
                }
            )
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis":
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group_entry(parts[1])})
        group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        resources: list[JSON] = []
        for rt in RESOURCES:
            if rt.group != group or version not in rt.versions:
                continue
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular or rt.kind.lower(),
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": verbs,
                }
            )
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if group == "authentication.k8s.io":
            resources.append(
                {
                    "name": "tokenreviews",
                    "singularName": "tokenreview",
                    "namespaced": False,
                    "kind": "TokenReview",
                    "verbs": ["create"],
                }
            )
        if group == "authorization.k8s.io":
            resources.append(
                {
                    "name": "subjectaccessreviews",
                    "singularName": "subjectaccessreview",
                    "namespaced": False,
                    "kind": "SubjectAccessReview",
                    "verbs": ["create"],
                }
            )
        gv = f"{group}/{version}" if group else version
        return web.json_response(
            {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
        )
