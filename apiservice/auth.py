"""Delegated authentication and authorization, as Kubernetes aggregated API servers do it.

Authentication, in order (the first that yields a user wins):
1. a client certificate issued by the *front-proxy* CA (`--requestheader-client-ca-file`)
   whose CN is in `--requestheader-allowed-names` (empty list: any CN): the identity is
   taken from `X-Remote-User` / `X-Remote-Group` / `X-Remote-Extra-*`. Those headers are
   ignored on every other connection;
2. a client certificate issued by `--client-ca-file`: user = CN, groups = O;
3. `Authorization: Bearer <token>`: TokenReview (answers cached briefly);
4. `--anonymous-auth`: system:anonymous; otherwise 401.

Every authenticated identity then gets the group `system:authenticated` (anonymous keeps
`system:unauthenticated`), as k8s.io/apiserver's AuthenticatedGroupAdder does: RBAC's
bootstrap `system:discovery` and `system:public-info-viewer` roles are bound to that group,
and the aggregator's discovery and OpenAPI requests carry no group of their own.

Authorization: `system:masters` is always allowed; then AlwaysAllow or a
SubjectAccessReview (Webhook) whose answers, denials too, are cached with short TTLs in a
bounded cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web
from cachetools import TTLCache

from apiservice.certs import CertificateAuthorities
from apiservice.status import ApiError

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def extra_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.extra}


ANONYMOUS_USER = "system:anonymous"
ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = UserInfo(ANONYMOUS_USER, groups=(ALL_UNAUTHENTICATED,))


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """`user` plus `system:authenticated`, unless anonymous or already in either virtual group.

    The same rule as k8s.io/apiserver/pkg/authentication/group.AuthenticatedGroupAdder.
    """
    if user.name == ANONYMOUS_USER or ALL_AUTHENTICATED in user.groups or ALL_UNAUTHENTICATED in user.groups:
        return user
    return UserInfo(user.name, user.uid, (*user.groups, ALL_AUTHENTICATED), user.extra)


@dataclass(frozen=True)
class Attributes:
    """What a request wants: resource attributes, or a non-resource `path`."""

    verb: str = "get"
    namespace: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # set for non-resource requests (discovery, OpenAPI, /metrics)

    def describe(self) -> str:
        if self.path:
            return f'{self.verb} path "{self.path}"'
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        name = f' "{self.name}"' if self.name else ""
        return f'{self.verb} resource "{what}" in API group "{self.group}"{name}{where}'

    def to_sar_spec(self) -> dict[str, Any]:
        if self.path:
            return {"nonResourceAttributes": {"path": self.path, "verb": self.verb}}
        attrs = {
            "namespace": self.namespace,
            "verb": self.verb,
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "subresource": self.subresource,
            "name": self.name,
        }
        return {"resourceAttributes": {k: v for k, v in attrs.items() if v}}


# -- review backends ------------------------------------------------------------------------
class TokenReviewer(Protocol):
    async def review_token(self, token: str) -> UserInfo | None:
        """The user a token belongs to, None if not authenticated; raise on transport errors."""


class AccessReviewer(Protocol):
    async def review_access(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason); raise on transport errors."""


def sar_body(user: UserInfo, attrs: Attributes) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = user.extra_dict()
    spec.update(attrs.to_sar_spec())
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def token_review_body(token: str) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


class KubeReviewClient:
    """TokenReview and SubjectAccessReview through kubernetes-asyncio ApiClients."""

    def __init__(self, authn_client: Any, authz_client: Any | None = None, timeout: float = 5.0) -> None:
        from kubernetes_asyncio import client

        self._authn = client.AuthenticationV1Api(authn_client)
        self._authz = client.AuthorizationV1Api(authz_client or authn_client)
        self._clients = [authn_client] + ([authz_client] if authz_client is not None else [])
        self.timeout = timeout

    async def review_token(self, token: str) -> UserInfo | None:
        body: Any = token_review_body(token)
        resp = await self._authn.create_token_review(body, _request_timeout=self.timeout)
        status = resp.status
        if status is None or not status.authenticated or status.user is None:
            return None
        u = status.user
        extra = tuple(sorted((k, tuple(v or ())) for k, v in (u.extra or {}).items()))
        return UserInfo(u.username or "", u.uid or "", tuple(u.groups or ()), extra)

    async def review_access(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        body: Any = sar_body(user, attrs)
        resp = await self._authz.create_subject_access_review(body, _request_timeout=self.timeout)
        status = resp.status
        if status is None:
            return False, "no status in SubjectAccessReview"
        return bool(status.allowed) and not bool(status.denied), status.reason or ""

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


async def kube_api_client(kubeconfig: str | None, fallback_kubeconfig: str | None = None) -> Any:
    """An ApiClient for reviews: `kubeconfig` (--authentication/authorization-kubeconfig), else the
    server's own configuration (--kubeconfig, in-cluster, default kubeconfig) from the one
    function that builds Kubernetes clients."""
    from metrics_server.kube.client import api_client

    return await api_client(kubeconfig or fallback_kubeconfig)


# -- authentication -------------------------------------------------------------------------
@dataclass
class RequestHeaderConfig:
    """Front-proxy settings; mutable so the authentication ConfigMap can update them."""

    allowed_names: list[str] = field(default_factory=list)
    username_headers: list[str] = field(default_factory=lambda: ["X-Remote-User"])
    #: none by default, as k8s.io/apiserver: the ConfigMap's `requestheader-uid-headers` names them
    uid_headers: list[str] = field(default_factory=list)
    group_headers: list[str] = field(default_factory=lambda: ["X-Remote-Group"])
    extra_headers_prefixes: list[str] = field(default_factory=lambda: ["X-Remote-Extra-"])


def _token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    def __init__(
        self,
        cas: CertificateAuthorities,
        requestheader: RequestHeaderConfig | None = None,
        token_reviewer: TokenReviewer | None = None,
        *,
        anonymous: bool = False,
        token_ttl: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.cas = cas
        self.requestheader = requestheader or RequestHeaderConfig()
        self.token_reviewer = token_reviewer
        self.anonymous = anonymous
        self._tokens: TTLCache[bytes, UserInfo | None] = TTLCache(maxsize=4096, ttl=token_ttl, timer=clock)

    def _from_headers(
        self, headers: Mapping[str, str], getall: Callable[[str], list[str]]
    ) -> UserInfo | None:
        rh = self.requestheader
        name = ""
        for h in rh.username_headers:
            value = headers.get(h, "")
            if value:
                name = value
                break
        if not name:
            return None
        uid = next((v for v in (headers.get(h, "") for h in rh.uid_headers) if v), "")
        groups: list[str] = []
        for h in rh.group_headers:
            groups.extend(getall(h))
        extra: dict[str, list[str]] = {}
        lowered = [p.lower() for p in rh.extra_headers_prefixes]
        for h, v in headers.items():
            hl = h.lower()
            for p in lowered:
                if hl.startswith(p) and len(hl) > len(p):
                    extra.setdefault(unquote(hl[len(p) :]), []).append(v)
                    break
        return UserInfo(name, uid, tuple(groups), tuple(sorted((k, tuple(v)) for k, v in extra.items())))

    async def authenticate(self, request: web.Request) -> UserInfo:
        user = await self._authenticate(request)
        return user if user is ANONYMOUS else with_authenticated_group(user)

    async def _authenticate(self, request: web.Request) -> UserInfo:
        problems: list[str] = []
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der:
            peer = self.cas.classify(der)
            if peer.issuer == "requestheader":
                allowed = self.requestheader.allowed_names
                if allowed and peer.common_name not in allowed:
                    problems.append(
                        f"front-proxy client certificate CN {peer.common_name!r} is not in the allowed names"
                    )
                else:
                    headers = request.headers
                    user = self._from_headers(headers, lambda h: list(headers.getall(h, [])))
                    if user is not None:
                        return user
            elif peer.issuer == "client":
                return UserInfo(peer.common_name, "", peer.organizations)
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            if token:
                user = await self.review_token(token)
                if user is not None:
                    return user
                problems.append("invalid bearer token")
        if self.anonymous and not problems:
            return ANONYMOUS
        raise ApiError(401, "Unauthorized" + (f": {'; '.join(problems)}" if problems else ""))

    async def review_token(self, token: str) -> UserInfo | None:
        if self.token_reviewer is None:
            return None
        key = _token_key(token)
        try:
            return self._tokens[key]
        except KeyError:
            pass
        try:
            user = await self.token_reviewer.review_token(token)
        except Exception as exc:  # an unreachable API server authenticates nobody; not cached
            log.warning("TokenReview failed: %s", describe_failure(exc))
            return None
        self._tokens[key] = user
        return user


def describe_failure(exc: BaseException) -> str:
    """A review failure without the response's headers and body (an ApiException prints both,
    and a TokenReview's body carries the caller's token)."""
    status = getattr(exc, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return type(exc).__name__ + (f": {exc}" if isinstance(exc, OSError | TimeoutError) else "")


# -- authorization --------------------------------------------------------------------------
class Authorizer:
    """`mode` is "AlwaysAllow" (any authenticated user) or "Webhook" (SubjectAccessReview)."""

    def __init__(
        self,
        mode: str = "AlwaysAllow",
        reviewer: AccessReviewer | None = None,
        *,
        allowed_ttl: float = 10.0,
        denied_ttl: float = 10.0,
        maxsize: int = 10000,
        clock: Clock = time.monotonic,
    ) -> None:
        if mode not in ("AlwaysAllow", "Webhook"):
            raise ValueError(f"unknown authorization mode {mode!r}")
        if mode == "Webhook" and reviewer is None:
            raise ValueError("Webhook authorization needs a SubjectAccessReview client")
        self.mode = mode
        self.reviewer = reviewer
        self._allowed: TTLCache[tuple[UserInfo, Attributes], str] = TTLCache(
            maxsize, allowed_ttl, timer=clock
        )
        self._denied: TTLCache[tuple[UserInfo, Attributes], str] = TTLCache(maxsize, denied_ttl, timer=clock)
        self._inflight: dict[tuple[UserInfo, Attributes], asyncio.Future[tuple[bool, str]]] = {}
        self.reviews = 0  # SubjectAccessReviews sent (tests and benchmarks read it)

    async def authorize(self, user: UserInfo, attrs: Attributes) -> None:
        if "system:masters" in user.groups or self.mode == "AlwaysAllow":
            return
        key = (user, attrs)
        if key in self._allowed:
            return
        reason = self._denied.get(key)
        if reason is None:
            allowed, reason = await self._review(key)
            if allowed:
                return
        msg = f'{attrs.describe()}: user "{user.name}" cannot {attrs.verb} this'
        raise ApiError(403, msg + (f": {reason}" if reason else ""))

    async def _review(self, key: tuple[UserInfo, Attributes]) -> tuple[bool, str]:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            assert self.reviewer is not None
            self.reviews += 1
            try:
                allowed, reason = await self.reviewer.review_access(*key)
            except Exception as exc:  # not cached: the next request asks again
                log.warning("SubjectAccessReview failed: %s", describe_failure(exc))
                result = (False, f"authorization webhook unavailable: {describe_failure(exc)}")
                fut.set_result(result)
                return result
            (self._allowed if allowed else self._denied)[key] = reason
            fut.set_result((allowed, reason))
            return allowed, reason
        finally:
            self._inflight.pop(key, None)


# -- KEDA REST endpoint guard ---------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def keda_auth_middleware(options: Any, authenticator: Authenticator, authorizer: Authorizer) -> Any:
    """aiohttp middleware guarding `GET /api/v1/metrics/{namespace}/{name}` (KEDA metrics-api).

    A bearer token is required (TokenReview); the user must be allowed to `get` the
    KeptnMetric (`keptnmetrics.metrics.keptn.sh`, SubjectAccessReview). `/metrics` (every
    KeptnMetric's value as a gauge) needs a token allowed `get` on the non-resource path
    `/metrics`, as kube-rbac-proxy and metrics-server ask: a Prometheus ServiceMonitor sends
    its service account's token (`bearerTokenFile`, or `authorization` from a Secret), and
    ClusterRole `keptn-metrics-scraper` grants it. Health paths pass. Add it only when
    `options.keda_auth` is on.
    """
    from apiservice.status import error_response

    prefix = "/api/v1/metrics/"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        exposition = request.path.rstrip("/") == "/metrics"
        if not exposition and not request.path.startswith(prefix):
            return await handler(request)
        try:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() != "bearer " or not auth[7:].strip():
                raise ApiError(401, "Unauthorized: a bearer token is required (--keda-auth is on)")
            user = await authenticator.authenticate(request)
            if exposition:
                attrs = Attributes(verb="get", path="/metrics")
            else:
                parts = request.path[len(prefix) :].split("/")
                attrs = Attributes(
                    verb="get",
                    namespace=parts[0] if parts else "",
                    group="metrics.keptn.sh",
                    version="v1",
                    resource="keptnmetrics",
                    name=parts[1] if len(parts) > 1 else "",
                )
            await authorizer.authorize(user, attrs)
        except ApiError as err:
            return error_response(err)
        return await handler(request)

    return middleware
