"""The HTTP side of custom.metrics.k8s.io (v1beta2, v1beta1) and external.metrics.k8s.io (v1beta1).

One request handler parses the path itself (so every miss is a proper `Status`), then
authenticates, authorizes with the attributes listed in docs/api.md ("Authentication and
authorization"), and answers with bytes encoded by orjson. Each KeptnMetric is one metric.
Discovery names it after the KeptnMetric itself (as Keptn's HPA documentation uses it), and,
as upstream Keptn does, an Object request answers whatever metric name it asks for (the item
echoes that name):

    GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/keptnmetrics.metrics.keptn.sh/{name}/{name}

A wildcard object (`*`, also `%2A`) lists every KeptnMetric of the namespace that matches
`labelSelector`, whatever the metric segment (`*/*` is Keptn's documented form); items
name each KeptnMetric's own metric for `*`, else the metric asked for.

Values are served only while fresh: no value yet, a value older than the staleness bound,
or a value that is not a finite number HPA can read gives 503 for a single metric and is
left out of a wildcard list (see docs/api.md, "Staleness").
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from apiservice import aggregated_discovery
from apiservice.auth import Attributes, Authenticator, Authorizer, UserInfo
from apiservice.openapi_endpoints import OpenApiV2, OpenApiV3
from apiservice.quantity import QuantityError, format_quantity
from apiservice.selectors import Selector, SelectorError, parse_selector
from apiservice.selfmetrics import observe
from apiservice.source import LocalMetricsSource, MetricsSource
from apiservice.status import ApiError, bytes_response, error_response, status_response
from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.state import MetricStates, Unavailable, rfc3339, servable_value, staleness_bound
from metrics_server.store.base import EventType, Store, StoreEvent

CUSTOM_GROUP = "custom.metrics.k8s.io"
EXTERNAL_GROUP = "external.metrics.k8s.io"
CUSTOM_VERSIONS = ("v1beta2", "v1beta1")
EXTERNAL_VERSIONS = ("v1beta1",)
RESOURCE = "keptnmetrics.metrics.keptn.sh"
#: Spellings of the KeptnMetric resource accepted in paths: HPA's, Keptn's docs', and bare.
RESOURCE_SPELLINGS = frozenset({RESOURCE, "keptnmetrics.metrics.sh", "keptnmetrics"})
KEPTN_API_VERSION = "metrics.keptn.sh/v1"
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")

Clock = Callable[[], float]


@functools.lru_cache(maxsize=8192)
def _quantity(value: float) -> str:
    return format_quantity(value)


def _group_json(group: str, versions: tuple[str, ...]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


@dataclass(frozen=True)
class Served:
    """A value that may be served: canonical Quantity text and its timestamp."""

    quantity: str
    timestamp: str
    window: int | None


class MetricsApi:
    def __init__(
        self,
        store: Store,
        states: MetricStates,
        authenticator: Authenticator,
        authorizer: Authorizer,
        *,
        max_staleness: float | None = None,
        discovery_limit: int = 1000,
        always_allow_paths: list[str] | None = None,
        clock: Clock = time.time,
        source: MetricsSource | None = None,
    ) -> None:
        self.store = store
        self.states = states
        #: every KeptnMetric and value the answers use come from here (see apiservice/source.py)
        self.source: MetricsSource = source or LocalMetricsSource(store, states)
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.max_staleness = max_staleness
        self.discovery_limit = discovery_limit
        self.clock = clock
        self.shutting_down = False  # /readyz turns false first on SIGTERM, before connections drain
        paths = always_allow_paths if always_allow_paths is not None else list(HEALTH_PATHS)
        self._allow_exact = frozenset(p for p in paths if not p.endswith("*"))
        self._allow_prefix = tuple(p[:-1] for p in paths if p.endswith("*"))
        self._discovery: dict[str, bytes] = {}
        #: raw path (with query) -> (route label, attributes, answer, always allowed)
        self._routes: dict[str, tuple[str, Attributes, Callable[[], web.Response], bool]] = {}
        #: single-metric answers by raw path: (key, metric, state, value, fetched, valid until, body)
        self._bodies: dict[str, tuple[ObjectKey, Any, Any, float, float, float, bytes]] = {}
        self._request_key: str | None = None
        self._request: web.Request | None = None  # the request being answered (content negotiation)
        self._aggregated: aggregated_discovery.Document | None = None
        self._openapi_v2 = OpenApiV2()
        self._openapi_v3 = OpenApiV3()
        self._static = {
            "/apis": orjson.dumps(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        _group_json(CUSTOM_GROUP, CUSTOM_VERSIONS),
                        _group_json(EXTERNAL_GROUP, EXTERNAL_VERSIONS),
                    ],
                }
            ),
            f"/apis/{CUSTOM_GROUP}": orjson.dumps(
                {"kind": "APIGroup", "apiVersion": "v1", **_group_json(CUSTOM_GROUP, CUSTOM_VERSIONS)}
            ),
            f"/apis/{EXTERNAL_GROUP}": orjson.dumps(
                {"kind": "APIGroup", "apiVersion": "v1", **_group_json(EXTERNAL_GROUP, EXTERNAL_VERSIONS)}
            ),
        }
        store.subscribe(self._on_store_event)

    # -- plumbing ---------------------------------------------------------------------------
    def _on_store_event(self, event: StoreEvent) -> None:
        # Discovery lists names only: status updates (MODIFIED) never change it.
        if event.type is not EventType.MODIFIED and isinstance(event.obj, KeptnMetric):
            self._discovery.clear()
            self._aggregated = None

    def always_allowed(self, path: str) -> bool:
        return path in self._allow_exact or (bool(self._allow_prefix) and path.startswith(self._allow_prefix))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        route = "unknown"
        try:
            if request.method not in ("GET", "HEAD"):
                raise ApiError(
                    405,
                    f"the server does not allow this method on the requested resource: "
                    f"{request.method} {request.path}",
                )
            raw = request.raw_path
            resolved = self._routes.get(raw)
            if resolved is None:
                path = request.path
                route, attrs, answer = self.resolve(path, request)
                resolved = (route, attrs, answer, self.always_allowed(path))
                if len(self._routes) >= 4096:
                    self._routes.clear()
                self._routes[raw] = resolved
            route, attrs, answer, open_path = resolved
            if not open_path:
                user: UserInfo = await self.authenticator.authenticate(request)
                await self.authorizer.authorize(user, attrs)
            body = self._memo(raw)
            if body is not None:
                response = bytes_response(body)
            else:
                self._request_key = raw
                self._request = request
                try:
                    response = answer()
                finally:
                    self._request = None
        except ApiError as err:
            response = error_response(err)
        observe(route, response.status, time.perf_counter() - start)
        return response

    def _memo(self, raw: str) -> bytes | None:
        """A memoized single-metric answer if the metric, its value and its freshness are unchanged."""
        hit = self._bodies.get(raw)
        if hit is None:
            return None
        key, obj, state, value, fetched, until, body = hit
        if (
            self.source.get_metric(key) is obj
            and self.source.state(key) is state
            and state is not None
            and state.value == value
            and state.last_success == fetched
            and self.clock() <= until
        ):
            return body
        del self._bodies[raw]
        return None

    # -- routing ----------------------------------------------------------------------------
    def resolve(self, path: str, request: web.Request) -> tuple[str, Attributes, Callable[[], web.Response]]:
        """(route label, authorization attributes, answer) for a path. Never raises for a
        miss: unknown paths are authorized as non-resource requests, then answer 404."""
        nonresource = Attributes(verb="get", path=path)
        if path in HEALTH_PATHS:
            return "health", nonresource, functools.partial(self.health, path)
        if path == "/metrics":
            return "metrics", nonresource, self.prometheus
        if path == "/apis":
            return "discovery", nonresource, self.apis
        if path == "/openapi/v2":
            return "openapi", nonresource, lambda: self._openapi_v2.serve(self._current())
        if path == "/openapi/v3":
            return "openapi", nonresource, lambda: self._openapi_v3.serve_root(self._current())
        if path.startswith("/openapi/v3/"):
            key = path[len("/openapi/v3/") :]
            return "openapi", nonresource, lambda: self._openapi_v3.serve_group_version(key, self._current())
        static = self._static.get(path)
        if static is not None:
            return "discovery", nonresource, (lambda: bytes_response(static))
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
            query = request.query
            if group == CUSTOM_GROUP and version in CUSTOM_VERSIONS:
                if not rest:
                    return "custom/discovery", nonresource, functools.partial(self.custom_discovery, version)
                return self._resolve_custom(
                    version, rest, query.get("labelSelector"), query.get("metricLabelSelector"), path
                )
            if group == EXTERNAL_GROUP and version in EXTERNAL_VERSIONS:
                if not rest:
                    return (
                        "external/discovery",
                        nonresource,
                        functools.partial(self.external_discovery, version),
                    )
                if len(rest) == 3 and rest[0] == "namespaces" and rest[1] and rest[2]:
                    ns, metric = rest[1], rest[2]
                    attrs = Attributes(
                        verb="list", namespace=ns, group=EXTERNAL_GROUP, version=version, resource=metric
                    )
                    return (
                        "external/value",
                        attrs,
                        functools.partial(
                            self.external_value, version, ns, metric, query.get("labelSelector")
                        ),
                    )
        return "unknown", nonresource, functools.partial(self.not_found, None)

    def _resolve_custom(
        self, version: str, rest: list[str], label_sel: str | None, metric_sel: str | None, path: str
    ) -> tuple[str, Attributes, Callable[[], web.Response]]:
        def attrs(ns: str, resource: str, name: str, sub: str) -> Attributes:
            # RBAC matches strings: every spelling of KeptnMetrics is authorized as the canonical
            # one (HPA's form), so a rule for keptnmetrics.metrics.keptn.sh covers the aliases
            return Attributes(
                verb="get",
                namespace=ns,
                group=CUSTOM_GROUP,
                version=version,
                resource=RESOURCE if resource in RESOURCE_SPELLINGS else resource,
                name=name,
                subresource=sub,
            )

        if len(rest) == 5 and rest[0] == "namespaces" and all(rest):
            ns, resource, name, metric = rest[1], rest[2], rest[3], rest[4]
            route = "custom/wildcard" if name == "*" else "custom/object"
            return (
                route,
                attrs(ns, resource, name, metric),
                functools.partial(
                    self.custom_objects, version, ns, resource, name, metric, label_sel, metric_sel
                ),
            )
        if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "metrics" and rest[1] and rest[3]:
            ns, metric = rest[1], rest[3]
            return (
                "custom/namespace",
                attrs(ns, "metrics", metric, ""),
                functools.partial(self.namespace_metric, version, [ns], metric, label_sel, metric_sel, False),
            )
        if len(rest) == 3 and all(rest):
            resource, name, metric = rest
            if resource == "namespaces":
                namespaces = None if name == "*" else [name]
                return (
                    "custom/namespace",
                    attrs("", "namespaces", name, metric),
                    functools.partial(
                        self.namespace_metric, version, namespaces, metric, label_sel, metric_sel, name == "*"
                    ),
                )
            route = "custom/wildcard" if name == "*" else "custom/object"
            return (
                route,
                attrs("", resource, name, metric),
                functools.partial(
                    self.custom_objects, version, None, resource, name, metric, label_sel, metric_sel
                ),
            )
        return "unknown", Attributes(verb="get", path=path), functools.partial(self.not_found, None)

    # -- answers ----------------------------------------------------------------------------
    def not_found(self, message: str | None) -> web.Response:
        return status_response(404, message or "the server could not find the requested resource")

    def health(self, path: str) -> web.Response:
        if path == "/readyz" and self.shutting_down:
            return web.Response(status=503, text="not ready: shutting down\n")
        if path == "/readyz" and not self.source.synced:
            return web.Response(status=503, text="not ready: the store has not synced yet\n")
        return web.Response(text="ok")

    def prometheus(self) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        from metrics_server.selfmetrics import exposition

        resp = web.Response(body=exposition(self.states))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    def _current(self) -> web.Request:
        assert self._request is not None
        return self._request

    def apis(self) -> web.Response:
        """`/apis`: the aggregated document when Accept asks for it, else the APIGroupList."""
        headers = self._current().headers
        version = aggregated_discovery.requested_version(headers.get("Accept", ""))
        if version is None:
            return bytes_response(self._static["/apis"])
        doc = self._aggregated
        if doc is None:
            names = self._names()
            custom = [(v, self._resources(f"{RESOURCE}/", "MetricValueList", names)) for v in CUSTOM_VERSIONS]
            external = [(v, self._resources("", "ExternalMetricValueList", names)) for v in EXTERNAL_VERSIONS]
            doc = self._aggregated = aggregated_discovery.build(
                [(CUSTOM_GROUP, custom), (EXTERNAL_GROUP, external)]
            )
        return aggregated_discovery.respond(doc, version, headers.get("If-None-Match", ""))

    def _names(self) -> list[str]:
        names = self.source.names()
        return names[: self.discovery_limit]

    def custom_discovery(self, version: str) -> web.Response:
        return self._discovery_answer(CUSTOM_GROUP, version, f"{RESOURCE}/", "MetricValueList")

    def external_discovery(self, version: str) -> web.Response:
        return self._discovery_answer(EXTERNAL_GROUP, version, "", "ExternalMetricValueList")

    def _discovery_answer(self, group: str, version: str, prefix: str, kind: str) -> web.Response:
        """An APIResourceList of KeptnMetric names, cached until a metric is added or removed."""
        key = f"{group}/{version}"
        body = self._discovery.get(key)
        if body is None:
            resources = self._resources(prefix, kind)
            body = self._discovery[key] = orjson.dumps(
                {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": key, "resources": resources}
            )
        return bytes_response(body)

    def _resources(self, prefix: str, kind: str, names: list[str] | None = None) -> list[dict[str, Any]]:
        """APIResourceList entries, one per KeptnMetric name (capped); never empty."""
        names = (self._names() if names is None else names) or ["*"]  # "*": any KeptnMetric name
        return [
            {"name": f"{prefix}{n}", "singularName": "", "namespaced": True, "kind": kind, "verbs": ["get"]}
            for n in names
        ]

    # -- values -----------------------------------------------------------------------------
    def fresh_value(self, metric: KeptnMetric) -> tuple[float, float]:
        """(value, time it was fetched) if the value may be served now; ApiError(503) saying why not."""
        what = f"KeptnMetric {metric.meta.namespace}/{metric.meta.name}"
        try:
            return servable_value(self.source.state(metric.key), what, self.clock(), self.max_staleness)
        except Unavailable as exc:
            raise ApiError(503, exc.message) from None

    def serve_value(self, metric: KeptnMetric) -> Served:
        """The metric's value as a Quantity if it may be served now; ApiError(503) otherwise."""
        value, fetched = self.fresh_value(metric)
        try:
            quantity = _quantity(value)
        except QuantityError as exc:
            what = f"KeptnMetric {metric.meta.namespace}/{metric.meta.name}"
            raise ApiError(503, f"the value of {what} cannot be served: {exc}") from None
        window = None
        if metric.range is not None:
            try:
                window = int(metric.range.interval_seconds)
            except ValueError:
                window = None
        return Served(quantity, rfc3339(fetched), window)

    @staticmethod
    def _selectors(label_sel: str | None, metric_sel: str | None) -> tuple[Selector, Selector]:
        try:
            return parse_selector(label_sel), parse_selector(metric_sel)
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None

    @staticmethod
    def _item_selector(labels: Mapping[str, str], metric_sel: Selector) -> dict[str, Any]:
        """The item's metric selector: the metricLabelSelector asked for, else (as upstream Keptn
        answers) `matchLabels` = the KeptnMetric's labels, keys sorted as Go encodes a map."""
        if not metric_sel.empty:
            return metric_sel.to_label_selector()
        return {"matchLabels": dict(sorted(labels.items()))} if labels else {}

    def _item(
        self,
        version: str,
        described: dict[str, str],
        metric_name: str,
        served: Served,
        metric_sel: Selector,
        labels: Mapping[str, str],
    ) -> dict[str, Any]:
        selector = self._item_selector(labels, metric_sel)
        if version == "v1beta2":
            ident: dict[str, Any] = {"name": metric_name, "selector": selector}
            item: dict[str, Any] = {
                "describedObject": described,
                "metric": ident,
                "timestamp": served.timestamp,
            }
            if served.window is not None:
                item["windowSeconds"] = served.window
            item["value"] = served.quantity
            return item
        item = {"describedObject": described, "metricName": metric_name, "timestamp": served.timestamp}
        if served.window is not None:
            item["window"] = served.window
        item["value"] = served.quantity
        item["selector"] = selector
        return item

    def _list(self, version: str, items: list[dict[str, Any]]) -> web.Response:
        return bytes_response(
            orjson.dumps(
                {
                    "kind": "MetricValueList",
                    "apiVersion": f"{CUSTOM_GROUP}/{version}",
                    "metadata": {},
                    "items": items,
                }
            )
        )

    def _collect(
        self,
        version: str,
        candidates: list[tuple[KeptnMetric, dict[str, str]]],
        metric: str,
        metric_sel: Selector,
        single: bool,
    ) -> web.Response:
        items: list[dict[str, Any]] = []
        unavailable: ApiError | None = None
        for m, described in candidates:
            if not metric_sel.matches(m.meta.labels):
                continue
            try:
                served = self.serve_value(m)
            except ApiError as err:
                if single:
                    raise
                unavailable = unavailable or err
                continue
            name = m.meta.name if metric == "*" else metric
            items.append(self._item(version, described, name, served, metric_sel, m.meta.labels))
        if single and not items:
            raise ApiError(
                404, f'the metric "{metric}" has no series matching metricLabelSelector "{metric_sel.text}"'
            )
        if not items and unavailable is not None:
            raise unavailable  # every match lacks a fresh value: say why rather than an empty list
        return self._list(version, items)

    def _single(self, obj: KeptnMetric, build: Callable[[], web.Response]) -> web.Response:
        """Answer for one metric; a 200 answer is memoized (see `_memo`) under the request's raw path."""
        state = self.source.state(obj.key)
        response = build()
        body = response.body
        raw = self._request_key
        if (
            raw is not None
            and isinstance(body, bytes)
            and response.status == 200
            and state is not None
            and state.value is not None
            and state.last_success is not None
        ):
            # valid as long as servable_value would serve it: the same bound, grace included
            if len(self._bodies) >= 4096:
                self._bodies.clear()
            until = state.last_success + staleness_bound(state, self.max_staleness)
            self._bodies[raw] = (obj.key, obj, state, state.value, state.last_success, until, body)
        return response

    def custom_objects(
        self,
        version: str,
        namespace: str | None,
        resource: str,
        name: str,
        metric: str,
        label_sel: str | None,
        metric_sel: str | None,
    ) -> web.Response:
        if resource not in RESOURCE_SPELLINGS:
            raise ApiError(
                404,
                f'the server could not find the requested resource: resource "{resource}" '
                f"is not served here; use {RESOURCE} (KeptnMetric)",
            )
        objects, metrics = self._selectors(label_sel, metric_sel)
        if namespace is None and name != "*":
            raise ApiError(
                404,
                f"KeptnMetrics are namespaced: use /apis/{CUSTOM_GROUP}/{version}/namespaces/"
                f"{{namespace}}/{RESOURCE}/{name}/{metric}",
            )
        if name != "*":
            assert namespace is not None
            obj = self.source.get_metric(ObjectKey(namespace, name))
            if obj is None:
                raise ApiError(404, f'{RESOURCE} "{name}" not found in namespace "{namespace}"')
            if not objects.matches(obj.meta.labels):
                raise ApiError(
                    404, f'KeptnMetric {namespace}/{name} does not match labelSelector "{objects.text}"'
                )
            return self._single(
                obj,
                lambda: self._collect(version, [(obj, self._described(obj))], metric, metrics, single=True),
            )
        # Wildcard, any metric segment: every KeptnMetric of this namespace (never another
        # one's), or of every namespace for the cluster-scoped form (authorized at the cluster scope).
        pool = self.source.select(namespace, objects.matches)
        candidates = [(m, self._described(m)) for m in pool]
        return self._collect(version, candidates, metric, metrics, single=False)

    @staticmethod
    def _described(m: KeptnMetric) -> dict[str, str]:
        return {
            "kind": "KeptnMetric",
            "namespace": m.meta.namespace,
            "name": m.meta.name,
            "apiVersion": KEPTN_API_VERSION,
        }

    def namespace_metric(
        self,
        version: str,
        namespaces: list[str] | None,
        metric: str,
        label_sel: str | None,
        metric_sel: str | None,
        wildcard: bool,
    ) -> web.Response:
        objects, metrics = self._selectors(label_sel, metric_sel)
        if not objects.empty:
            raise ApiError(400, "labelSelector is not supported for metrics describing namespaces")
        if namespaces is None:  # `namespaces/*/{metric}`: the KeptnMetric called so, in every namespace
            pool = [m for m in self.source.select() if m.meta.name == metric]
        else:
            found = self.source.get_metric(ObjectKey(namespaces[0], metric))
            if found is None:
                raise ApiError(404, f'{RESOURCE} "{metric}" not found in namespace "{namespaces[0]}"')
            pool = [found]
        candidates = [(m, {"kind": "Namespace", "name": m.meta.namespace, "apiVersion": "/v1"}) for m in pool]
        return self._collect(version, candidates, metric, metrics, single=not wildcard)

    def external_value(
        self, version: str, namespace: str, metric: str, label_sel: str | None
    ) -> web.Response:
        selector, _ = self._selectors(label_sel, None)
        obj = self.source.get_metric(ObjectKey(namespace, metric))
        if obj is None:
            raise ApiError(404, f'{RESOURCE} "{metric}" not found in namespace "{namespace}"')
        if not selector.matches(obj.meta.labels):
            return bytes_response(self._external_list(version, []))

        def build() -> web.Response:
            served = self.serve_value(obj)
            item: dict[str, Any] = {
                "metricName": metric,
                "metricLabels": dict(obj.meta.labels),
                "timestamp": served.timestamp,
            }
            if served.window is not None:
                item["window"] = served.window
            item["value"] = served.quantity
            return bytes_response(self._external_list(version, [item]))

        return self._single(obj, build)

    @staticmethod
    def _external_list(version: str, items: list[dict[str, Any]]) -> bytes:
        return orjson.dumps(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": f"{EXTERNAL_GROUP}/{version}",
                "metadata": {},
                "items": items,
            }
        )


def build_server(api: MetricsApi, **handler_args: Any) -> web.Server:
    """aiohttp's low-level server: the API routes every path itself, so no router is needed.
    `handler_args` go to each connection's handler (e.g. `keepalive_timeout`)."""
    from metrics_server.client_errors import ClientErrorLogger

    return web.Server(
        api.handle,  # type: ignore[arg-type]
        max_field_size=16384,
        access_log=None,
        logger=ClientErrorLogger(server="metrics API"),
        **handler_args,
    )
