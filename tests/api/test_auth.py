"""Delegated authentication (front proxy, client CA, TokenReview) and authorization (SAR)."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from apiservice.auth import Authorizer
from tests.api.conftest import KubeReviews, Pki, World, metrics_reader_grant

RES = "keptnmetrics.metrics.keptn.sh"
OBJ = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/cpu/cpu"
WILD = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/{RES}/*/cpu"
EXT = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/cpu"


@pytest.fixture(autouse=True)
def metrics(world: World) -> None:
    world.add("shop", "cpu", 2.5, labels={"app": "web"})


async def test_front_proxy_identity_reaches_sar(start, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    status, data, _ = await api.get(
        OBJ, api.proxy("alice", ("devs", "ops"), Scopes="read", **{"Acme%2Fteam": "x"})
    )
    assert status == 200, data
    spec = kube.sars[-1]
    assert spec["user"] == "alice" and spec["groups"] == ["devs", "ops", "system:authenticated"]
    assert spec["extra"] == {"scopes": ["read"], "acme/team": ["x"]}
    assert spec["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "get",
        "group": "custom.metrics.k8s.io",
        "version": "v1beta2",
        "resource": RES,
        "subresource": "cpu",
        "name": "cpu",
    }


async def test_sar_attributes_for_wildcard_external_and_discovery(start, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    assert (await api.get(WILD))[0] == 200
    assert kube.sars[-1]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "get",
        "group": "custom.metrics.k8s.io",
        "version": "v1beta1",
        "resource": RES,
        "subresource": "cpu",
        "name": "*",
    }
    assert (await api.get(EXT))[0] == 200
    assert kube.sars[-1]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "list",
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "resource": "cpu",
    }
    for path in ("/apis/custom.metrics.k8s.io/v1beta2", "/openapi/v2", "/apis"):
        assert (await api.get(path))[0] == 200
        assert kube.sars[-1]["nonResourceAttributes"] == {"path": path, "verb": "get"}


async def test_spoofed_headers_without_front_proxy_cert_are_ignored(start, pki: Pki, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    spoof = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    # no client certificate at all: 401
    status, data, _ = await api.get(OBJ, api.session(headers=spoof))
    assert status == 401 and data["reason"] == "Unauthorized"
    # a client-ca certificate: the identity is the certificate's, never the headers'
    status, _, _ = await api.get(OBJ, api.session(pki.user("bob", "devs"), headers=spoof))
    assert status == 200
    assert kube.sars[-1]["user"] == "bob" and kube.sars[-1]["groups"] == ["devs", "system:authenticated"]


async def test_front_proxy_cert_with_cn_not_allowed(start, pki: Pki, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    s = api.session(
        pki.front_proxy("intruder"),
        headers={"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"},
    )
    status, data, _ = await api.get(OBJ, s)
    assert status == 401 and "not in the allowed names" in data["message"]
    assert kube.sars == []


async def test_any_cn_allowed_when_allowed_names_empty(start, pki: Pki):
    api = await start("--requestheader-allowed-names", "")
    s = api.session(pki.front_proxy("whatever"), headers={"X-Remote-User": "carol"})
    assert (await api.get(OBJ, s))[0] == 200


async def test_cert_from_unknown_ca_is_refused_at_handshake(start, pki: Pki):
    api = await start()
    s = api.session(pki.user("mallory", ca=pki.other_ca))
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await api.get(OBJ, s)


async def test_custom_requestheader_names(start, pki: Pki, kube: KubeReviews):
    api = await start(
        "--authorization-mode",
        "Webhook",
        "--requestheader-username-headers",
        "X-User",
        "--requestheader-group-headers",
        "X-Groups",
    )
    s = api.session(pki.front_proxy(), headers={"X-User": "dave", "X-Groups": "g1", "X-Remote-User": "eve"})
    assert (await api.get(OBJ, s))[0] == 200
    assert kube.sars[-1]["user"] == "dave" and kube.sars[-1]["groups"] == ["g1", "system:authenticated"]


async def test_bearer_token_via_token_review(start, kube: KubeReviews):
    kube.tokens["good"] = {
        "username": "system:serviceaccount:kube-system:hpa",
        "uid": "u1",
        "groups": ["system:serviceaccounts"],
        "extra": {"k": ["v"]},
    }
    api = await start("--authorization-mode", "Webhook")
    s = api.session(headers={"Authorization": "Bearer good"})
    for _ in range(3):
        assert (await api.get(OBJ, s))[0] == 200
    assert kube.token_reviews == ["good"]  # cached
    assert kube.sars[-1]["user"] == "system:serviceaccount:kube-system:hpa" and kube.sars[-1]["uid"] == "u1"
    assert kube.sars[-1]["extra"] == {"k": ["v"]}
    assert kube.sars[-1]["groups"] == ["system:serviceaccounts", "system:authenticated"]
    status, data, _ = await api.get(OBJ, api.session(headers={"Authorization": "Bearer bad"}))
    assert status == 401 and "invalid bearer token" in data["message"]


async def test_sar_denial_is_403_and_cached(start, kube: KubeReviews):
    kube.policy = lambda spec: (spec.get("user") != "alice", "no metrics for alice")
    api = await start("--authorization-mode", "Webhook")
    status, data, _ = await api.get(OBJ, api.proxy("alice"))
    assert status == 403 and data["reason"] == "Forbidden" and data["code"] == 403
    assert "no metrics for alice" in data["message"] and "alice" in data["message"]
    n = len(kube.sars)
    assert (await api.get(OBJ, api.proxy("alice")))[0] == 403
    assert len(kube.sars) == n  # denial cached
    assert (await api.get(OBJ, api.proxy("bob")))[0] == 200


async def test_sar_cache_expiry_with_injected_clock(start, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    now = [1000.0]
    api.runner.api.authorizer = Authorizer(
        "Webhook", api.runner.authorizer.reviewer, allowed_ttl=10, denied_ttl=5, clock=lambda: now[0]
    )
    allowed = [True]
    kube.policy = lambda spec: (allowed[0], "")
    assert (await api.get(OBJ))[0] == 200
    assert (await api.get(OBJ))[0] == 200
    assert len(kube.sars) == 1
    allowed[0] = False
    now[0] += 9
    assert (await api.get(OBJ))[0] == 200  # still cached
    now[0] += 2
    assert (await api.get(OBJ))[0] == 403  # expired: asked again, now denied
    assert len(kube.sars) == 2
    allowed[0] = True
    now[0] += 4
    assert (await api.get(OBJ))[0] == 403  # denial cached for 5 s
    now[0] += 2
    assert (await api.get(OBJ))[0] == 200
    assert len(kube.sars) == 3


async def test_system_masters_skip_sar(start, kube: KubeReviews):
    kube.policy = lambda spec: (False, "nobody")
    api = await start("--authorization-mode", "Webhook")
    assert (await api.get(OBJ, api.proxy("root", ("system:masters",))))[0] == 200
    assert kube.sars == []


async def test_always_allow_mode_needs_authentication_only(start, kube: KubeReviews):
    kube.policy = lambda spec: (False, "nobody")
    api = await start()  # local mode default: AlwaysAllow
    assert (await api.get(OBJ))[0] == 200
    assert kube.sars == []
    assert (await api.get(OBJ, api.session()))[0] == 401


async def test_anonymous_auth(start, kube: KubeReviews):
    api = await start("--anonymous-auth", "--authorization-mode", "Webhook")
    assert (await api.get(EXT, api.session()))[0] == 403  # RBAC grants anonymous nothing by default
    kube.rbac.add(*metrics_reader_grant({"kind": "User", "name": "system:anonymous"}))
    assert (await api.get(OBJ, api.session()))[0] == 200
    assert kube.sars[-1]["user"] == "system:anonymous" and kube.sars[-1]["groups"] == [
        "system:unauthenticated"
    ]


async def test_always_allow_paths_flag(start):
    api = await start("--authorization-always-allow-paths", "/healthz,/openapi/*")
    s = api.session()
    assert (await api.get("/healthz", s))[0] == 200
    assert (await api.get("/openapi/v2", s))[0] == 200
    assert (await api.get("/livez", s))[0] == 401


async def test_sar_webhook_unreachable_is_403_not_cached(start, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")

    def boom(spec):
        raise RuntimeError("down")

    kube.policy = boom
    status, _data, _ = await api.get(OBJ)
    assert status in (403,)
    kube.policy = lambda spec: (True, "")
    assert (await api.get(OBJ))[0] == 200


async def test_insecure_http_local_mode(start):
    api = await start("--insecure-http", "--anonymous-auth")
    assert api.runner.scheme == "http"
    status, data, _ = await api.get(OBJ, api.session())
    assert status == 200 and data["items"][0]["value"] == "2500m"
    # headers are never trusted without a front-proxy certificate
    status, _, _ = await api.get(OBJ, api.session(headers={"X-Remote-User": "admin"}))
    assert status == 200


def test_insecure_http_refused_in_kubernetes_mode(pki: Pki):
    from tests.api.conftest import options

    with pytest.raises(SystemExit):
        options(pki, "--insecure-http", kubernetes_mode=True)


# -- KEDA REST guard -----------------------------------------------------------------------
async def test_keda_auth_middleware(aiohttp_client, kube: KubeReviews):
    from aiohttp import web

    from apiservice.auth import Authenticator, Authorizer, keda_auth_middleware
    from apiservice.certs import CertificateAuthorities
    from apiservice.flags import ApiOptions
    from tests.api.conftest import review_client

    reviews = await review_client(kube.url)
    kube.tokens["keda"] = {"username": "system:serviceaccount:keda:keda-operator", "groups": []}
    kube.tokens["nosy"] = {"username": "nosy", "groups": []}
    kube.policy = lambda spec: (spec["user"] != "nosy", "")
    mw = keda_auth_middleware(
        ApiOptions(keda_auth=True),
        Authenticator(CertificateAuthorities(), None, reviews),
        Authorizer("Webhook", reviews),
    )

    async def metric(request: web.Request) -> web.Response:
        return web.json_response({"metric": "cpu", "namespace": "shop", "value": "2.5"})

    app = web.Application(middlewares=[mw])
    app.router.add_get("/api/v1/metrics/{namespace}/{name}", metric)
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/api/v1/metrics/shop/cpu")
    assert resp.status == 401 and (await resp.json())["kind"] == "Status"
    resp = await client.get("/api/v1/metrics/shop/cpu", headers={"Authorization": "Bearer keda"})
    assert resp.status == 200 and (await resp.json())["value"] == "2.5"
    assert kube.sars[-1]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "get",
        "group": "metrics.keptn.sh",
        "version": "v1",
        "resource": "keptnmetrics",
        "name": "cpu",
    }
    resp = await client.get("/api/v1/metrics/shop/cpu", headers={"Authorization": "Bearer nosy"})
    assert resp.status == 403
    resp = await client.get("/api/v1/metrics/shop/cpu", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    await reviews.close()


async def test_keda_auth_middleware_for_cli_args(aiohttp_client, kube: KubeReviews):
    import argparse

    from aiohttp import web
    from kubernetes_asyncio import client

    from apiservice.flags import ApiOptions, add_arguments
    from apiservice.server import keda_auth_middleware_for

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = ApiOptions.from_args(parser.parse_args(["--keda-auth"]), kubernetes_mode=False)
    api_client = client.ApiClient(client.Configuration(host=kube.url))
    kube.tokens["keda"] = {"username": "keda", "groups": []}
    keda_auth = await keda_auth_middleware_for(options, api_client)
    app = web.Application(middlewares=[keda_auth.middleware])
    app.router.add_get("/api/v1/metrics/{namespace}/{name}", lambda r: web.json_response({"value": "1"}))
    c = await aiohttp_client(app)
    assert (await c.get("/api/v1/metrics/shop/cpu")).status == 401
    assert (await c.get("/api/v1/metrics/shop/cpu", headers={"Authorization": "Bearer keda"})).status == 200
    assert kube.sars[-1]["user"] == "keda"
    await keda_auth.close()
    await api_client.close()


async def test_configmap_source_passed_as_kube_auth_and_shared_api_client(start, pki: Pki, kube: KubeReviews):
    from kubernetes_asyncio import client

    from tests.api.test_tls import ConfigMapSource

    source = ConfigMapSource(
        {
            "requestheader-client-ca-file": pki.front_proxy_ca.cert_pem.bytes().decode(),
            "requestheader-allowed-names": "[]",
        }
    )
    api_client = client.ApiClient(client.Configuration(host=kube.url))
    try:
        api = await start(
            "--tls-cert-file",
            str(pki.server_cert),
            "--tls-private-key-file",
            str(pki.server_cert),
            kubernetes_mode=True,
            pki_flags=False,
            with_kube=False,
            kube_auth=source,
            api_client=api_client,
        )
        assert (await api.get(OBJ, api.proxy("zoe")))[0] == 200
        assert kube.sars[-1]["user"] == "zoe"  # Webhook mode through the shared ApiClient
    finally:
        await api_client.close()


def test_authenticated_group_is_added_as_k8s_apiserver_does():
    """AuthenticatedGroupAdder: every authenticated user is in system:authenticated, once."""
    from apiservice.auth import ANONYMOUS, UserInfo, with_authenticated_group

    aggregator = with_authenticated_group(UserInfo("system:kube-aggregator"))
    assert aggregator.groups == ("system:authenticated",)
    already = UserInfo("u", groups=("a", "system:authenticated"))
    assert with_authenticated_group(already) is already
    assert with_authenticated_group(ANONYMOUS).groups == ("system:unauthenticated",)
    assert with_authenticated_group(UserInfo("system:anonymous")).groups == ()


async def test_front_proxy_uid_header_reaches_sar_only_when_configured(start, kube: KubeReviews):
    """kube-apiserver 1.33+ forwards X-Remote-Uid; Go servers read it via requestheader-uid-headers."""
    api = await start("--authorization-mode", "Webhook", "--requestheader-uid-headers", "X-Remote-Uid")
    session = api.proxy("alice", ("devs",))
    session._default_headers.add("X-Remote-Uid", "uid-123")
    assert (await api.get(OBJ, session))[0] == 200
    assert kube.sars[-1]["uid"] == "uid-123"


async def test_front_proxy_uid_header_is_ignored_by_default(start, kube: KubeReviews):
    api = await start("--authorization-mode", "Webhook")
    session = api.proxy("alice", ("devs",))
    session._default_headers.add("X-Remote-Uid", "uid-123")
    assert (await api.get(OBJ, session))[0] == 200
    assert "uid" not in kube.sars[-1]
