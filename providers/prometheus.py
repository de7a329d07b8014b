"""Prometheus HTTP API: `prometheus`, `thanos` and `cortex` (Mimir too).

Window semantics:
- instant: `POST /api/v1/query` at `end` (now): the single series' value.
- range without step: `POST /api/v1/query_range` over [end-interval, end] with step =
  interval; the evaluator takes the newest point (upstream takes the oldest).
- range+step: `query_range` with that step; the evaluator aggregates every point.
A query must yield exactly one series (wrap several in `sum(...)`, `max(...)`, ...).

Secret keys (all optional): `user`/`password` (basic auth, as upstream), `token` (bearer),
`tenant` (Cortex/Mimir `X-Scope-OrgID`), `ca.crt`, `tls.crt`/`tls.key`.
Thanos queries ask for `dedup=true` and `partial_response=false`: a partial answer is an
error rather than a silently smaller number.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from providers.base import Backend, BackendConfig, BackendError, QueryResult, Sample, Window, parse_number
from providers.httpclient import HTTPBackend, parse_json_off_loop, safe_url


def _headers(config: BackendConfig) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    token = config.secret_text("token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    tenant = config.secret_text("tenant") or config.secret_text("X-Scope-OrgID")
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    return headers


def _basic_auth(config: BackendConfig) -> aiohttp.BasicAuth | None:
    user = config.secret_text("user")
    password = config.secret_text("password")
    if user is None and password is None:
        return None
    return aiohttp.BasicAuth(user or "", password or "")


def _labels(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{}"
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


class PrometheusBackend(HTTPBackend):
    """One pooled session per KeptnMetricsProvider (HTTPBackend's); messages name the type."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.base = config.target_server.rstrip("/")
        self.kind = self.label = config.type
        self._auth = _basic_auth(config)
        self._use_get = False

    def default_headers(self) -> dict[str, str]:
        return _headers(self.config)

    def _params(self, query: str, window: Window) -> tuple[str, dict[str, str]]:
        end = window.end if window.end is not None else time.time()
        params: dict[str, str] = {"query": query}
        if self.kind == "thanos":
            params["dedup"] = "true"
            params["partial_response"] = "false"
        if window.is_instant:
            params["time"] = f"{end:.3f}"
            return "/api/v1/query", params
        assert window.range_seconds is not None
        step = window.step_seconds or window.range_seconds
        params.update(start=f"{end - window.range_seconds:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return "/api/v1/query_range", params

    async def query(self, query: str, window: Window) -> QueryResult:
        path, params = self._params(query, window)
        url = self.base + path
        status, body = await self._exchange(url, params)
        if status != 200:
            detail = None
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None  # proxies answer errors in HTML or plain text
            if isinstance(payload, dict) and payload.get("status") == "error":
                detail = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
            raise self.status_error(url, status, body, detail)
        payload = await parse_json_off_loop(self.label, url, body)
        return QueryResult(samples=self._samples(payload, window, url), raw=body)

    async def _exchange(self, url: str, params: dict[str, str]) -> tuple[int, bytes]:
        if not self._use_get:
            status, body = await self.fetch("POST", url, data=params, auth=self._auth)
            if status not in (405, 501):
                return status, body
            self._use_get = True  # some proxies only allow GET; remember for this provider
        return await self.fetch("GET", url, params=params, auth=self._auth)

    def _samples(self, payload: Any, window: Window, url: str) -> tuple[Sample, ...]:
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise BackendError(f"{self.kind} at {safe_url(url)} answered without status success")
        data = payload.get("data")
        if not isinstance(data, dict):
            raise BackendError(f"{self.kind} at {safe_url(url)} answered without data")
        rtype, result = data.get("resultType"), data.get("result")
        if rtype == "scalar":
            return (self._point(result),)
        if rtype == "string":
            raise BackendError("the query returned a string, not a number")
        if not isinstance(result, list):
            raise BackendError(f"{self.kind} at {safe_url(url)} answered a malformed result")
        if not result:
            raise BackendError("the query returned no data")
        if len(result) > 1:
            shown = ", ".join(_labels(s.get("metric") if isinstance(s, dict) else None) for s in result[:3])
            raise BackendError(
                f"the query returned {len(result)} series ({shown}{', ...' if len(result) > 3 else ''}); "
                "aggregate them to one, e.g. sum(...) or max(...)"
            )
        series = result[0]
        if not isinstance(series, dict):
            raise BackendError(f"{self.kind} at {safe_url(url)} answered a malformed series")
        if rtype == "vector":
            return (self._point(series.get("value")),)
        if rtype == "matrix":
            if window.is_instant:
                raise BackendError(
                    "the query returned a range vector; wrap it in a function such as max_over_time(...)"
                )
            points = series.get("values")
            if not isinstance(points, list) or not points:
                raise BackendError("the query returned no data")
            return tuple(self._point(p) for p in points)
        raise BackendError(f"unsupported result type {rtype!r}")

    @staticmethod
    def _point(point: Any) -> Sample:
        if not isinstance(point, list) or len(point) != 2:
            raise BackendError("malformed sample in the answer")
        return Sample(timestamp=parse_number(point[0], "timestamp"), value=parse_number(point[1]))


def create(config: BackendConfig) -> Backend:
    return PrometheusBackend(config)
