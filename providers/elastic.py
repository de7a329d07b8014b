"""Elasticsearch: `POST {targetServer}[/{index}]/_search` with the query as the body.

Query: a JSON object, in one of two forms.
- A query clause, as upstream: `{"match": {"service.name": "checkout"}}`. It is sent as
  `{"size": 0, "track_total_hits": true, "query": {"bool": {"filter": [<clause>, <time range>]}}}`
  and the value is the number of matching documents (`hits.total.value`).
- A search body (it has `query`, `aggs`/`aggregations`, `size`, ...): sent as written, with
  the time range added as a filter, plus an optional reserved key `keptn` that is removed
  before sending: `{"valuePath": "aggregations.p95.values.95\\.0", "index": "logs-*",
  "timeField": "@timestamp"}`.

Value path (see providers/jsonpath.py): `keptn.valuePath` if given; otherwise
`aggregations.<name>.value` when the body has exactly one top-level aggregation, and
`hits.total.value` when it has none. Several aggregations without a `valuePath` is an error.
A path that yields several values (`#`) or null (an `avg` over no documents) is an error.

Window (`timeField`, default `@timestamp`; `"timeField": null` adds no time filter):
- instant: the last 30 minutes (upstream's default); one sample;
- range: the window; one sample;
- range+step: a `date_histogram` aggregation (`fixed_interval` = step) over the window with
  the body's aggregations nested in it; the value path is read in each bucket (its
  `aggregations.` prefix dropped; `hits.total.value` becomes the bucket's `doc_count`), one
  sample per bucket, empty buckets skipped.

Auth: `Authorization: ApiKey <Secret[secretKeyRef.key]>` (upstream sent the key's *name*),
or basic auth when the Secret has `user` (or `username`) and `password` and
`secretKeyRef.key` is unset or `password`.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from providers import jsonpath
from providers.base import BackendConfig, BackendError, QueryResult, Sample, Window, parse_number
from providers.httpclient import HTTPBackend, duration_text, iso_time, window_bounds

DEFAULT_RANGE = 1800.0
DEFAULT_TIME_FIELD = "@timestamp"
STEP_AGG = "keptn_steps"
SEARCH_KEYS = frozenset(
    {
        "query",
        "aggs",
        "aggregations",
        "size",
        "from",
        "sort",
        "track_total_hits",
        "runtime_mappings",
        "_source",
        "fields",
        "post_filter",
        "timeout",
        "min_score",
        "search_after",
        "collapse",
        "docvalue_fields",
        "stored_fields",
        "terminate_after",
        "pit",
        "knn",
        "rank",
        "suggest",
    }
)


class SearchPlan:
    """The body to send, where the value is and how the window applies, from a query string."""

    def __init__(self, query: str) -> None:
        try:
            doc = orjson.loads(query)
        except orjson.JSONDecodeError:
            raise BackendError(
                "Elasticsearch query must be a JSON object (a query clause or a search body)"
            ) from None
        if not isinstance(doc, dict) or not doc:
            raise BackendError("Elasticsearch query must be a non-empty JSON object")
        options = doc.pop("keptn", None) or {}
        if not isinstance(options, dict):
            raise BackendError(
                "Elasticsearch query: 'keptn' must be an object {valuePath, index, timeField}"
            )
        unknown = set(options) - {"valuePath", "index", "timeField"}
        if unknown:
            raise BackendError(f"Elasticsearch query: unknown 'keptn' options {sorted(unknown)}")
        self.index = str(options.get("index") or "")
        self.time_field = options.get("timeField", DEFAULT_TIME_FIELD)
        if SEARCH_KEYS & set(doc):
            self.body: dict[str, Any] = doc
        else:
            self.body = {"size": 0, "track_total_hits": True, "query": doc}
        aggs = self.body.get("aggs", self.body.get("aggregations"))
        self.aggs: dict[str, Any] = aggs if isinstance(aggs, dict) else {}
        path = options.get("valuePath")
        if path:
            self.value_path = str(path)
        elif not self.aggs:
            self.value_path = "hits.total.value"
            self.body.setdefault("track_total_hits", True)
        elif len(self.aggs) == 1:
            self.value_path = f"aggregations.{next(iter(self.aggs)).replace('.', chr(92) + '.')}.value"
        else:
            raise BackendError(
                f"Elasticsearch query has several aggregations ({', '.join(sorted(self.aggs))}); "
                "say which one with keptn.valuePath"
            )
        jsonpath.parse(self.value_path)  # fail early on a bad path

    def request(self, window: Window) -> dict[str, Any]:
        body = copy.deepcopy(self.body)
        start, end = window_bounds(window, default_range=DEFAULT_RANGE)
        if self.time_field:
            time_filter = {
                "range": {
                    self.time_field: {
                        "gte": iso_time(start),
                        "lte": iso_time(end),
                        "format": "strict_date_optional_time",
                    }
                }
            }
            original = body.get("query")
            filters: list[Any] = [time_filter]
            body["query"] = {"bool": {"filter": [original, *filters] if original else filters}}
        if window.step_seconds:
            if not self.time_field:
                raise BackendError("Elasticsearch range with step needs a time field (keptn.timeField)")
            inner = body.pop("aggs", None) or body.pop("aggregations", None)
            histogram: dict[str, Any] = {
                "date_histogram": {
                    "field": self.time_field,
                    "fixed_interval": duration_text(window.step_seconds),
                    "min_doc_count": 0,
                    "extended_bounds": {"min": int(start * 1000), "max": int(end * 1000)},
                }
            }
            if inner:
                histogram["aggs"] = inner
            body["aggs"] = {STEP_AGG: histogram}
            body["size"] = 0
        return body

    def bucket_path(self) -> str:
        parts = jsonpath.parse(self.value_path)
        if parts and parts[0] == "hits":
            return "doc_count"
        if parts and parts[0] in ("aggregations", "aggs"):
            parts = parts[1:]
        return ".".join(str(p).replace(".", "\\.") for p in parts)


class ElasticBackend(HTTPBackend):
    label = "Elasticsearch"

    def default_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        secret = self.config
        user = secret.secret_text("user") or secret.secret_text("username")
        password = secret.secret_text("password")
        if user and password and secret.secret_key in ("", "password"):
            headers["Authorization"] = aiohttp.BasicAuth(user, password).encode()
        elif secret.secret_key and secret.secret_text(secret.secret_key):
            headers["Authorization"] = f"ApiKey {secret.secret_text(secret.secret_key)}"
        return headers

    async def query(self, query: str, window: Window) -> QueryResult:
        try:
            plan = SearchPlan(query)
            body = plan.request(window)
        except BackendError as exc:
            raise self.error(exc.message) from None
        base = self.config.target_server.strip().rstrip("/")
        url = base + (f"/{quote(plan.index, safe=',*')}" if plan.index else "") + "/_search"
        status, raw = await self.fetch("POST", url, data=orjson.dumps(body))
        doc: Any = None
        try:
            doc = self.json(url, raw)
        except BackendError:
            if status == 200:
                raise
        if status != 200:
            raise self.status_error(url, status, raw, self._detail(doc))
        if not isinstance(doc, dict):
            raise self.error("Elasticsearch answered an unexpected JSON document")
        if doc.get("timed_out"):
            raise self.error("Elasticsearch search timed out (partial results)", retryable=True)
        shards = doc.get("_shards") or {}
        if isinstance(shards, dict) and shards.get("failed"):
            raise self.error(
                f"Elasticsearch search failed on {shards['failed']} shard(s) (partial results)",
                retryable=True,
            )
        try:
            samples = self._steps(doc, plan) if window.step_seconds else [self._single(doc, plan, window)]
        except BackendError as exc:
            raise self.error(exc.message) from None
        if not samples:
            raise self.error("Elasticsearch returned no data for the query (every bucket is empty)")
        return QueryResult(tuple(sorted(samples, key=lambda s: s.timestamp)), raw=raw)

    @staticmethod
    def _detail(doc: Any) -> str | None:
        if not isinstance(doc, dict):
            return None
        err = doc.get("error")
        if isinstance(err, dict):
            text = f"{err.get('type', 'error')}: {err.get('reason', '')}"
            causes = err.get("root_cause") or []
            if (
                causes
                and isinstance(causes[0], dict)
                and causes[0].get("reason") not in (None, err.get("reason"))
            ):
                text += f" ({causes[0].get('reason')})"
            return text
        return str(err) if err else None

    @staticmethod
    def _value(node: Any, path: str) -> float | None:
        value = jsonpath.select(node, path)
        if isinstance(value, list):
            if len(value) != 1:
                raise BackendError(f"value path {path!r} yields {len(value)} values; it must yield one")
            value = value[0]
        if value is None:
            return None
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        return parse_number(value, f"value at {path!r}")

    def _single(self, doc: dict[str, Any], plan: SearchPlan, window: Window) -> Sample:
        value = self._value(doc, plan.value_path)
        if value is None:
            raise BackendError(f"Elasticsearch returned no data: {plan.value_path!r} is null")
        _, end = window_bounds(window)
        return Sample(end, value)

    def _steps(self, doc: dict[str, Any], plan: SearchPlan) -> list[Sample]:
        buckets = jsonpath.select(doc, f"aggregations.{STEP_AGG}.buckets")
        path = plan.bucket_path()
        samples = []
        for bucket in buckets if isinstance(buckets, list) else []:
            if not isinstance(bucket, dict) or (path != "doc_count" and not bucket.get("doc_count")):
                continue
            value = self._value(bucket, path)
            if value is not None:
                samples.append(Sample(parse_number(bucket.get("key"), "bucket key") / 1000.0, value))
        return samples


def create(config: BackendConfig) -> ElasticBackend:
    return ElasticBackend(config)
