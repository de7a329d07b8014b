"""Datadog metrics: `GET /api/v1/query` (instant, range) and `POST /api/v2/query/timeseries` (step).

Query: a Datadog metrics query, e.g. `avg:system.cpu.user{env:prod}` or
`sum:trace.http.request.hits{service:web}.as_rate()`. It must yield ONE series: a query
with `by {tag}` that returns several is an error (drop the `by`, or aggregate).

Window:
- instant: the last 5 minutes (as upstream); the newest non-null point (upstream: the mean);
- range: `from=now-<interval>`; the points Datadog returns at its own rollup (the evaluator
  takes the newest, or aggregates them);
- range+step: the v2 timeseries API with `interval=<step>` so Datadog rolls up to the step
  (upstream: v1 with `interval=<step seconds>`).
Nulls are skipped; no data at all is an error (upstream: 0). docs/providers-http.md
describes upstream's provider exactly.

Target: the API host (`https://api.datadoghq.eu`) or just the site (`datadoghq.eu`,
`us5.datadoghq.com`), which becomes `https://api.<site>`.
Secret keys: `DD_CLIENT_API_KEY` -> `DD-API-KEY`, `DD_CLIENT_APP_KEY` -> `DD-APPLICATION-KEY`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from providers.base import BackendConfig, BackendError, QueryResult, Sample, Window, parse_number
from providers.httpclient import HTTPBackend, window_bounds

DEFAULT_INSTANT_RANGE = 300.0
API_KEY = "DD_CLIENT_API_KEY"
APP_KEY = "DD_CLIENT_APP_KEY"


def api_base(target: str) -> str:
    base = target.strip().rstrip("/")
    if "://" not in base:
        base = "https://" + (base if base.startswith("api.") else "api." + base)
    return base


class DatadogBackend(HTTPBackend):
    label = "Datadog"

    def default_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        api_key, app_key = self.config.secret_text(API_KEY), self.config.secret_text(APP_KEY)
        if api_key:
            headers["DD-API-KEY"] = api_key
        if app_key:
            headers["DD-APPLICATION-KEY"] = app_key
        return headers

    async def query(self, query: str, window: Window) -> QueryResult:
        missing = [k for k in (API_KEY, APP_KEY) if not self.config.secret_text(k)]
        if missing:
            raise self.error(
                f"Datadog needs Secret keys {API_KEY} and {APP_KEY}; missing {missing}", auth=True
            )
        if not query.strip():
            raise self.error("Datadog query is empty")
        start, end = window_bounds(window, default_range=DEFAULT_INSTANT_RANGE)
        try:
            if window.step_seconds:
                return await self._timeseries(query.strip(), start, end, window.step_seconds)
            return await self._v1(query.strip(), start, end)
        except BackendError as exc:
            if exc.message.startswith("Datadog"):
                raise
            raise self.error(f"Datadog: {exc.message}", auth=exc.auth, retryable=exc.retryable) from None

    def _fail(self, url: str, status: int, body: bytes, doc: Any) -> Exception:
        detail = None
        if isinstance(doc, dict):
            errors = doc.get("errors") or doc.get("error")
            if isinstance(errors, list):
                detail = "; ".join(str(e) for e in errors)
            elif errors:
                detail = str(errors)
        return self.status_error(url, status, body, detail)

    def _doc(self, url: str, status: int, body: bytes) -> Any:
        try:
            doc = self.json(url, body)
        except Exception:
            if status == 200:
                raise
            doc = None
        if status != 200:
            raise self._fail(url, status, body, doc)
        if not isinstance(doc, dict):
            raise self.error(f"Datadog at {url} answered an unexpected JSON document")
        return doc

    async def _v1(self, query: str, start: float, end: float) -> QueryResult:
        url = api_base(self.config.target_server) + "/api/v1/query"
        params = {"from": str(int(start)), "to": str(int(end)), "query": query}
        status, body = await self.fetch("GET", url + "?" + urlencode(params))
        doc = self._doc(url, status, body)
        if doc.get("status") == "error" or doc.get("error"):
            raise self.error(
                f"Datadog rejected the query: {doc.get('error') or doc.get('message') or 'error'}"
            )
        series = doc.get("series") or []
        self._one_series(len(series), [str(s.get("scope", "?")) for s in series if isinstance(s, dict)])
        points = series[0].get("pointlist") or []
        samples = []
        for point in points:
            if not isinstance(point, list) or len(point) < 2 or point[1] is None:
                continue
            samples.append(Sample(parse_number(point[0], "timestamp") / 1000.0, parse_number(point[1])))
        return QueryResult(self._nonempty(samples), raw=body)

    async def _timeseries(self, query: str, start: float, end: float, step: float) -> QueryResult:
        url = api_base(self.config.target_server) + "/api/v2/query/timeseries"
        payload = {
            "data": {
                "type": "timeseries_request",
                "attributes": {
                    "from": int(start * 1000),
                    "to": int(end * 1000),
                    "interval": int(step * 1000),
                    "queries": [{"data_source": "metrics", "query": query, "name": "a"}],
                    "formulas": [{"formula": "a"}],
                },
            }
        }
        status, body = await self.fetch("POST", url, json=payload)
        doc = self._doc(url, status, body)
        if doc.get("errors"):
            raise self.error(f"Datadog rejected the query: {doc['errors']}")
        attributes = (doc.get("data") or {}).get("attributes") or {}
        series = attributes.get("series") or []
        values = attributes.get("values") or []
        times = attributes.get("times") or []
        tags = [",".join(s.get("group_tags") or []) or "?" for s in series if isinstance(s, dict)]
        self._one_series(max(len(series), len(values)), tags)
        row = values[0] if values else []
        if len(row) != len(times):
            raise self.error("Datadog answered with mismatched times and values")
        samples = [
            Sample(parse_number(ts, "timestamp") / 1000.0, parse_number(v))
            for ts, v in zip(times, row, strict=True)
            if v is not None
        ]
        return QueryResult(self._nonempty(samples), raw=body)

    def _one_series(self, count: int, names: list[str]) -> None:
        if count == 0:
            raise self.error("Datadog returned no data for the query (no series)")
        if count > 1:
            raise self.error(
                f"Datadog returned {count} series ({', '.join(names)[:120]}); the query must yield one "
                "series: remove 'by {...}' or aggregate across tags"
            )

    def _nonempty(self, samples: list[Sample]) -> tuple[Sample, ...]:
        if not samples:
            raise self.error("Datadog returned no data points for the query (all values are null)")
        return tuple(sorted(samples, key=lambda s: s.timestamp))


def create(config: BackendConfig) -> DatadogBackend:
    return DatadogBackend(config)
