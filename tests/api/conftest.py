"""Fixtures for the aggregated API tests: a PKI made per test session, a store with
KeptnMetrics, a small local server speaking TokenReview/SubjectAccessReview JSON, and the
whole API server started over real TLS with real client certificates."""

from __future__ import annotations

import argparse
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from apiservice.auth import KubeReviewClient
from apiservice.flags import ApiOptions, add_arguments
from apiservice.server import ApiRunner, start_api
from metrics_server.model import ObjectKey, parse_metric
from metrics_server.state import MetricStates
from metrics_server.store.base import IndexedStore
from tests.rbac import DEFAULT_SERVER_NAMESPACE, StaticPolicy, policy_with_deploy, sar_policy

FRONT_PROXY_CN = "front-proxy-client"


@dataclass
class Pki:
    server_ca: trustme.CA
    front_proxy_ca: trustme.CA
    client_ca: trustme.CA
    other_ca: trustme.CA
    dir: Path
    issued: dict[tuple[int, str, str | None], trustme.LeafCert] = field(default_factory=dict)

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def front_proxy_ca_file(self) -> Path:
        return self.dir / "front-proxy-ca.pem"

    @property
    def client_ca_file(self) -> Path:
        return self.dir / "client-ca.pem"

    def client_ctx(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.server_ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx

    def front_proxy(self, cn: str = FRONT_PROXY_CN) -> trustme.LeafCert:
        return self._issue(self.front_proxy_ca, cn, None)

    def user(self, cn: str, org: str | None = None, ca: trustme.CA | None = None) -> trustme.LeafCert:
        return self._issue(ca or self.client_ca, cn, org)

    def _issue(self, ca: trustme.CA, cn: str, org: str | None) -> trustme.LeafCert:
        key = (id(ca), cn, org)
        if key not in self.issued:  # key generation is slow: one certificate per identity
            self.issued[key] = ca.issue_cert(common_name=cn, organization_name=org)
        return self.issued[key]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    p = Pki(trustme.CA(), trustme.CA(), trustme.CA(), trustme.CA(), d)
    p.server_ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(p.server_cert)
    )
    p.front_proxy_ca.cert_pem.write_to_path(str(p.front_proxy_ca_file))
    p.client_ca.cert_pem.write_to_path(str(p.client_ca_file))
    return p


def metric_doc(
    ns: str,
    name: str,
    labels: dict[str, str] | None = None,
    interval: int = 10,
    rng: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"provider": {"name": "prom"}, "query": "up", "fetchIntervalSeconds": interval}
    if rng:
        spec["range"] = rng
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
        "spec": spec,
    }


@dataclass
class World:
    store: IndexedStore
    states: MetricStates
    now: float = field(default_factory=time.time)

    def add(
        self,
        ns: str,
        name: str,
        value: float | None = 1.5,
        *,
        labels: dict[str, str] | None = None,
        age: float = 1.0,
        interval: int = 10,
        error: str = "",
        rng: dict[str, Any] | None = None,
    ) -> None:
        self.store.apply(parse_metric(metric_doc(ns, name, labels, interval, rng)))
        st = self.states.ensure(ObjectKey(ns, name), interval)
        st.value = value
        st.value_text = "" if value is None else repr(value)
        st.last_success = None if value is None else self.now - age
        st.last_attempt = self.now - age
        st.error = error


@pytest.fixture
def world() -> World:
    store = IndexedStore()
    store.mark_synced()
    return World(store, MetricStates())


# -- a tiny stand-in for the Kubernetes API: TokenReview and SubjectAccessReview -----------
def metrics_reader_grant(*subjects: dict[str, Any]) -> list[dict[str, Any]]:
    """What a cluster admin grants metric consumers: read both metrics APIs (and KeptnMetrics,
    for the KEDA REST route), bound to `subjects` (default: every authenticated identity)."""
    rbac = "rbac.authorization.k8s.io"
    who = list(subjects) or [{"apiGroup": rbac, "kind": "Group", "name": "system:authenticated"}]
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "test:metrics-reader"},
            "rules": [
                {
                    "apiGroups": ["custom.metrics.k8s.io", "external.metrics.k8s.io"],
                    "resources": ["*"],
                    "verbs": ["get", "list"],
                },
                {"apiGroups": ["metrics.keptn.sh"], "resources": ["keptnmetrics"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"test:metrics-reader:{who[0]['name']}"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "test:metrics-reader"},
            "subjects": who,
        },
    ]


def cluster_rbac() -> StaticPolicy:
    """kube-apiserver's bootstrap policy, deploy/'s RBAC and `metrics_reader_grant()`."""
    return policy_with_deploy(DEFAULT_SERVER_NAMESPACE, *metrics_reader_grant())


@dataclass
class KubeReviews:
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the cluster's roles and bindings; add to it to grant more
    rbac: StaticPolicy = field(default_factory=cluster_rbac)
    #: decides SARs: spec -> (allowed, reason); default: RBAC over `rbac`, as kube-apiserver
    policy: Callable[[dict[str, Any]], tuple[bool, str]] = field(init=False)
    token_reviews: list[str] = field(default_factory=list)
    sars: list[dict[str, Any]] = field(default_factory=list)
    patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        self.policy = sar_policy(self.rbac)


@pytest.fixture
async def kube(aiohttp_server: Any) -> KubeReviews:
    state = KubeReviews()

    async def token_review(request: web.Request) -> web.Response:
        body = await request.json()
        token = body["spec"]["token"]
        state.token_reviews.append(token)
        user = state.tokens.get(token)
        body["status"] = {"authenticated": True, "user": user} if user else {"authenticated": False}
        return web.json_response(body, status=201)

    async def sar(request: web.Request) -> web.Response:
        body = await request.json()
        state.sars.append(body["spec"])
        allowed, reason = state.policy(body["spec"])
        body["status"] = {"allowed": allowed, "reason": reason}
        return web.json_response(body, status=201)

    async def patch_apiservice(request: web.Request) -> web.Response:
        body = await request.json()
        name = request.match_info["name"]
        state.patches.append((name, request.content_type, body))
        return web.json_response(
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name},
                "spec": {**body["spec"], "service": None},
            }
        )

    def not_found(what: str) -> web.Response:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"{what} not found",
            "reason": "NotFound",
            "code": 404,
        }
        return web.json_response(status, status=404)

    async def get_secret(request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        return (
            web.json_response(state.secrets[key]) if key in state.secrets else not_found(f"secret {key[1]}")
        )

    async def create_secret(request: web.Request) -> web.Response:
        body = await request.json()
        state.secrets[(request.match_info["ns"], body["metadata"]["name"])] = body
        return web.json_response(body, status=201)

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/secrets/{name}", get_secret)
    app.router.add_post("/api/v1/namespaces/{ns}/secrets", create_secret)
    app.router.add_patch("/apis/apiregistration.k8s.io/v1/apiservices/{name}", patch_apiservice)
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", token_review)
    app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("")).rstrip("/")
    return state


async def review_client(url: str) -> KubeReviewClient:
    from kubernetes_asyncio import client

    cfg = client.Configuration(host=url)
    return KubeReviewClient(client.ApiClient(configuration=cfg))


def options(pki: Pki, *argv: str, kubernetes_mode: bool = False, pki_flags: bool = True) -> ApiOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    if not pki_flags:
        return ApiOptions.from_args(
            parser.parse_args(
                ["--secure-port", "0", "--grpc-port", "0", "--bind-address", "127.0.0.1", *argv]
            ),
            kubernetes_mode,
        )
    base = [
        "--secure-port",
        "0",
        "--grpc-port",
        "0",
        "--bind-address",
        "127.0.0.1",
        "--tls-cert-file",
        str(pki.server_cert),
        "--tls-private-key-file",
        str(pki.server_cert),
        "--requestheader-client-ca-file",
        str(pki.front_proxy_ca_file),
        "--requestheader-allowed-names",
        FRONT_PROXY_CN,
        "--client-ca-file",
        str(pki.client_ca_file),
    ]
    return ApiOptions.from_args(parser.parse_args(base + list(argv)), kubernetes_mode)


@dataclass
class Running:
    runner: ApiRunner
    pki: Pki
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _default: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"{self.runner.scheme}://127.0.0.1:{self.runner.port}"

    def session(
        self, cert: trustme.LeafCert | None = None, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientSession:
        conn = aiohttp.TCPConnector(ssl=self.pki.client_ctx(cert)) if self.runner.scheme == "https" else None
        s = aiohttp.ClientSession(connector=conn, headers=headers)
        self.sessions.append(s)
        return s

    def proxy(
        self, user: str = "alice", groups: tuple[str, ...] = ("team",), **extra: str
    ) -> aiohttp.ClientSession:
        """A session like kube-apiserver's aggregator: front-proxy certificate plus X-Remote-* headers."""
        headers = {"X-Remote-User": user}
        s = self.session(self.pki.front_proxy(), headers)
        s._default_headers.extend(("X-Remote-Group", g) for g in groups)  # repeated header
        for k, v in extra.items():
            s._default_headers.add(f"X-Remote-Extra-{k}", v)
        return s

    async def get(
        self, path: str, session: aiohttp.ClientSession | None = None, **kw: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        if session is None:
            if self._default is None:
                self._default = self.proxy()
            session = self._default
        s = session
        async with s.get(self.base + path, **kw) as resp:
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            data: Any = body
            if ctype.startswith("application/json"):
                import orjson

                data = orjson.loads(body)
            resp._body = body
            return resp.status, data, resp


StartFn = Callable[..., Any]


@pytest.fixture
async def start(world: World, pki: Pki, kube: KubeReviews) -> AsyncIterator[StartFn]:
    running: list[Running] = []

    async def _start(
        *argv: str, kubernetes_mode: bool = False, with_kube: bool = True, pki_flags: bool = True, **kw: Any
    ) -> Running:
        opts = options(pki, *argv, kubernetes_mode=kubernetes_mode, pki_flags=pki_flags)
        kube_auth = await review_client(kube.url) if with_kube else kw.pop("kube_auth", None)
        kw.setdefault("clock", lambda: world.now)
        runner = await start_api(world.store, world.states, opts, kube_auth=kube_auth, **kw)
        if with_kube and kube_auth is not None:
            runner._closers.append(kube_auth.close)
        r = Running(runner, pki)
        running.append(r)
        return r

    yield _start
    for r in running:
        for s in r.sessions:
            await s.close()
        await r.runner.stop(grace=0.5)
