"""The API asks one MetricsSource for everything it serves (apiservice/source.py): a source
that is not the local store answers every route the same way."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from apiservice.api import MetricsApi
from apiservice.auth import Authenticator, Authorizer
from apiservice.certs import CertificateAuthorities
from apiservice.source import LabelMatcher
from metrics_server.model import KeptnMetric, ObjectKey, parse_metric
from metrics_server.state import MetricState, MetricStates
from metrics_server.store.base import IndexedStore
from tests.api.conftest import metric_doc


class RemoteOwners:
    """A MetricsSource whose metrics and values live elsewhere (here: plain dicts)."""

    def __init__(self, metrics: list[KeptnMetric], now: float) -> None:
        self.metrics = {m.key: m for m in metrics}
        self.states: dict[ObjectKey, MetricState] = {}
        for m in metrics:
            st = MetricState(key=m.key, fetch_interval=10)
            st.value, st.value_text, st.last_success, st.last_attempt = 2000.0, "2000", now - 1, now - 1
            self.states[m.key] = st
        self.asked: list[str] = []

    @property
    def synced(self) -> bool:
        return True

    def get_metric(self, key: ObjectKey) -> KeptnMetric | None:
        self.asked.append("get")
        return self.metrics.get(key)

    def select(self, namespace: str | None = None, matches: LabelMatcher | None = None) -> list[KeptnMetric]:
        self.asked.append("select")
        return sorted(
            (
                m
                for m in self.metrics.values()
                if (namespace is None or m.key.namespace == namespace)
                and (matches is None or matches(m.meta.labels))
            ),
            key=lambda m: m.key,
        )

    def names(self) -> list[str]:
        self.asked.append("names")
        return sorted({m.meta.name for m in self.metrics.values()})

    def state(self, key: ObjectKey) -> MetricState | None:
        return self.states.get(key)


def _app(api: MetricsApi) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app


async def test_every_route_reads_the_source_not_the_store(aiohttp_client: Any) -> None:
    now = time.time()
    remote = RemoteOwners([parse_metric(metric_doc("a", "rps")), parse_metric(metric_doc("b", "rps"))], now)
    empty_store = IndexedStore()  # the API must not look here
    await empty_store.start()
    api = MetricsApi(
        empty_store,
        MetricStates(),
        Authenticator(CertificateAuthorities(), anonymous=True),
        Authorizer("AlwaysAllow"),
        source=remote,
        clock=lambda: now,
    )
    client = await aiohttp_client(_app(api))
    base = "/apis/custom.metrics.k8s.io/v1beta2"

    one = await client.get(f"{base}/namespaces/a/keptnmetrics.metrics.keptn.sh/rps/rps")
    assert one.status == 200, await one.text()
    assert [i["value"] for i in (await one.json())["items"]] == ["2k"]

    every = await client.get(f"{base}/keptnmetrics.metrics.keptn.sh/*/rps")
    assert [i["describedObject"]["namespace"] for i in (await every.json())["items"]] == ["a", "b"]

    external = await client.get("/apis/external.metrics.k8s.io/v1beta1/namespaces/b/rps")
    assert (await external.json())["items"][0]["value"] == "2k"

    discovery = await client.get(base)
    assert [r["name"] for r in (await discovery.json())["resources"]] == ["keptnmetrics.metrics.keptn.sh/rps"]
    assert {"get", "select", "names"} <= set(remote.asked)
