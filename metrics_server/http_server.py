"""The plain-HTTP metrics port (9999): health, our /metrics, and upstream's KEDA REST endpoint.

`GET /api/v1/metrics/{namespace}/{name}` answers `{"metric","namespace","value"}` exactly as
upstream Keptn does for KEDA's metrics-api scaler (value as a string). Errors are JSON
`{"error": ..., "code": ...}`: 404 unknown metric, 503 no value yet or stale (same rule as the APIs).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from apiservice.selfmetrics import observe  # one request counter for every API, this port's too
from apiservice.status import JSON_CONTENT_TYPE
from metrics_server.model import ObjectKey
from metrics_server.selfmetrics import exposition
from metrics_server.state import MetricStates, Unavailable, servable_value
from metrics_server.store.base import Store

Readiness = Callable[[], bool]


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON_CONTENT_TYPE)


def json_error(status: int, message: str) -> web.Response:
    return json_response({"error": message, "code": status}, status)


class MetricsPortApp:
    """Builds the aiohttp application for the metrics port."""

    def __init__(
        self,
        store: Store,
        states: MetricStates,
        *,
        ready: Readiness | None = None,
        max_staleness: float | None = None,
        middlewares: Iterable[Callable[..., Awaitable[web.StreamResponse]]] = (),
    ) -> None:
        self.store = store
        self.states = states
        self.ready = ready or (lambda: store.synced)
        self.max_staleness = max_staleness
        self.middlewares = list(middlewares)
        self.shutting_down = False

    def build(self) -> web.Application:
        app = web.Application(middlewares=self.middlewares)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/livez", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api/v1/metrics/{namespace}/{name}", self.observed_keda_metric)
        return app

    async def observed_keda_metric(self, request: web.Request) -> web.Response:
        """The KEDA REST answer, counted in the API request metrics as route `keda/rest`."""
        started = time.perf_counter()
        response = await self.keda_metric(request)
        observe("keda/rest", response.status, time.perf_counter() - started)
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.shutting_down:
            return web.Response(status=503, text="shutting down")
        if not self.ready():
            return web.Response(status=503, text="not ready: store not synced")
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        body = exposition(self.states)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def keda_metric(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        key = ObjectKey(namespace, name)
        if self.store.get_metric(key) is None:
            return json_error(404, f"KeptnMetric {namespace}/{name} not found")
        try:
            servable_value(
                self.states.get(key), f"KeptnMetric {namespace}/{name}", time.time(), self.max_staleness
            )
        except Unavailable as exc:
            return json_error(503, exc.message)
        state = self.states.get(key)
        assert state is not None
        return json_response({"metric": name, "namespace": namespace, "value": state.value_text})
