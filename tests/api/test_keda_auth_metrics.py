"""`--keda-auth` covers `/metrics` on the metrics port too (issue 10, item 3: `:9999/metrics`
listed every KeptnMetric's value to anyone)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apiservice.auth import Authenticator, Authorizer, keda_auth_middleware
from apiservice.certs import CertificateAuthorities
from apiservice.flags import ApiOptions
from metrics_server.http_server import MetricsPortApp
from metrics_server.model import ObjectKey, parse_metric
from metrics_server.state import MetricStates
from metrics_server.store.base import IndexedStore
from tests.api.conftest import KubeReviews, metric_doc, review_client


async def test_metrics_exposition_needs_a_token_allowed_get_on_the_path(
    aiohttp_client: Any, kube: KubeReviews
) -> None:
    reviews = await review_client(kube.url)
    kube.tokens["prometheus"] = {"username": "system:serviceaccount:monitoring:prometheus", "groups": []}
    kube.tokens["tenant"] = {"username": "system:serviceaccount:shop:default", "groups": []}
    kube.policy = lambda spec: (spec["user"].endswith(":prometheus"), "")
    store, states = IndexedStore(), MetricStates()
    store.apply(parse_metric(metric_doc("shop", "revenue")))
    st = states.ensure(ObjectKey("shop", "revenue"), 10)
    st.value, st.value_text = 123456.0, "123456"
    mw = keda_auth_middleware(
        ApiOptions(keda_auth=True),
        Authenticator(CertificateAuthorities(), None, reviews),
        Authorizer("Webhook", reviews),
    )
    app = MetricsPortApp(store, states, ready=lambda: True, middlewares=[mw]).build()
    client = await aiohttp_client(app)
    try:
        assert (await client.get("/healthz")).status == 200
        anonymous = await client.get("/metrics")
        assert anonymous.status == 401 and "123456" not in await anonymous.text()
        denied = await client.get("/metrics", headers={"Authorization": "Bearer tenant"})
        assert denied.status == 403
        scrape = await client.get("/metrics", headers={"Authorization": "Bearer prometheus"})
        assert scrape.status == 200 and "keptn_metric" in await scrape.text()
        assert kube.sars[-1]["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
    finally:
        await reviews.close()


async def test_without_keda_auth_metrics_stay_open(aiohttp_client: Any) -> None:
    """Upstream's default (documented in docs/security.md with how to lock it down)."""
    app = MetricsPortApp(IndexedStore(), MetricStates(), ready=lambda: True).build()
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 200
    assert isinstance(app, web.Application)
