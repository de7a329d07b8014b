"""Dynatrace metrics API v2: `GET {targetServer}/api/v2/metrics/query`.

Query: a metric selector, optionally followed by extra query parameters as upstream allows,
e.g. `builtin:service.response.time:splitBy():avg&entitySelector=type(SERVICE)`.
A `&` starts an extra parameter only when followed by `name=`; anything else stays in the
selector.

Window:
- instant: no `from`/`resolution` (Dynatrace's default timeframe, 2 h); the newest non-null
  data point is the value (upstream averaged the whole 2 h);
- range: `from=now-<interval>&resolution=Inf`: one value for the whole window, aggregated by
  the selector's own aggregation (`:avg`, `:max`, ...);
- range+step: `from=now-<interval>&resolution=<step>` (whole minutes; Dynatrace's finest
  resolution is 1m); every non-null point is a sample.
A window with an explicit `end` uses absolute `from`/`to` in milliseconds. Parameters given
in the query (`from`, `to`, `resolution`, ...) win over the ones derived from the window.

Auth: `Authorization: Api-Token <Secret[secretKeyRef.key]>`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from providers.base import BackendConfig, QueryResult, Sample, Window, finite
from providers.httpclient import HTTPBackend, duration_text

_EXTRA_PARAM = re.compile(r"&(?=[A-Za-z][A-Za-z0-9_.-]*=)")


def api_base(target: str) -> str:
    """`https://x.live.dynatrace.com` and `https://x.live.dynatrace.com/api/` -> `.../api`."""
    base = target.strip().rstrip("/")
    return base if base.endswith("/api") else base + "/api"


def split_query(query: str) -> tuple[str, list[tuple[str, str]]]:
    """(metric selector, extra parameters) from `selector&name=value&...`."""
    query = query.strip()
    if query.startswith("metricSelector="):
        query = query[len("metricSelector=") :]
    selector, *extras = _EXTRA_PARAM.split(query)
    params: list[tuple[str, str]] = []
    for extra in extras:
        params.extend(parse_qsl(extra, keep_blank_values=True))
    return selector.strip(), params


def resolution(step_seconds: float) -> str:
    minutes = step_seconds / 60
    if step_seconds < 60 or abs(minutes - round(minutes)) > 1e-9:
        raise ValueError(f"Dynatrace resolution must be whole minutes, got a step of {step_seconds:g}s")
    return duration_text(step_seconds)


class DynatraceBackend(HTTPBackend):
    label = "Dynatrace"

    def default_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.config.secret_text(self.config.secret_key) if self.config.secret_key else None
        if token:
            headers["Authorization"] = f"Api-Token {token}"
        return headers

    def params(self, query: str, window: Window) -> list[tuple[str, str]]:
        selector, extras = split_query(query)
        if not selector:
            raise self.error("Dynatrace query has no metric selector")
        params: list[tuple[str, str]] = [("metricSelector", selector)]
        if not window.is_instant:
            assert window.range_seconds is not None
            if window.end is not None:
                end_ms = int(window.end * 1000)
                params += [("from", str(end_ms - int(window.range_seconds * 1000))), ("to", str(end_ms))]
            else:
                params.append(("from", f"now-{duration_text(window.range_seconds)}"))
            if window.step_seconds:
                try:
                    params.append(("resolution", resolution(window.step_seconds)))
                except ValueError as exc:
                    raise self.error(str(exc)) from None
            else:
                params.append(("resolution", "Inf"))
        given = {name for name, _ in extras}
        return [p for p in params if p[0] not in given] + extras

    async def query(self, query: str, window: Window) -> QueryResult:
        if not self.config.secret_key or not self.config.secret_text(self.config.secret_key):
            key = self.config.secret_key or "<unset>"
            raise self.error(f"Dynatrace needs an API token: Secret key {key!r} is missing", auth=True)
        url = api_base(self.config.target_server) + "/v2/metrics/query"
        params = self.params(query, window)
        status, body = await self.fetch("GET", url + "?" + urlencode(params))
        doc: Any = None
        if body:
            try:
                doc = self.json(url, body)
            except Exception:
                if status == 200:
                    raise
        if status != 200 or (isinstance(doc, dict) and isinstance(doc.get("error"), dict)):
            detail = None
            if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                err = doc["error"]
                detail = str(err.get("message") or err)
                violations = err.get("constraintViolations") or []
                if violations and isinstance(violations[0], dict):
                    detail += f" ({violations[0].get('message', '')})"
            raise self.status_error(url, status, body, detail)
        return QueryResult(self.samples(doc, url), raw=body)

    def samples(self, doc: Any, url: str) -> tuple[Sample, ...]:
        if not isinstance(doc, dict) or not isinstance(doc.get("result"), list):
            raise self.error(f"Dynatrace at {url} answered without a 'result' list")
        series = [
            (res.get("metricId", "?"), data)
            for res in doc["result"]
            if isinstance(res, dict)
            for data in (res.get("data") or [])
            if isinstance(data, dict)
        ]
        if not series:
            raise self.error("Dynatrace returned no data for the query (no series)")
        if len(series) > 1:
            names = sorted({str(m) for m, _ in series})
            raise self.error(
                f"Dynatrace returned {len(series)} series ({', '.join(names)[:120]}); "
                "the query must yield one series, e.g. aggregate with :splitBy()"
            )
        _, data = series[0]
        values = data.get("values") or []
        stamps = data.get("timestamps") or []
        if len(values) != len(stamps):
            raise self.error("Dynatrace answered with mismatched timestamps and values")
        samples = []
        for ts, value in zip(stamps, values, strict=True):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(f"Dynatrace returned a non-numeric value {str(value)[:40]!r}")
            samples.append(Sample(float(ts) / 1000.0, finite(float(value))))
        if not samples:
            raise self.error("Dynatrace returned no data points for the query (all values are null)")
        samples.sort(key=lambda s: s.timestamp)
        return tuple(samples)


def create(config: BackendConfig) -> DynatraceBackend:
    return DynatraceBackend(config)
