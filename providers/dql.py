"""Dynatrace Grail DQL: `POST {targetServer}/platform/storage/query/v1/query:execute`.

Auth: OAuth client credentials. `Secret[secretKeyRef.key]` holds JSON
`{"token": "dt0s08.<id>.<secret>", "authUrl": "https://sso.dynatrace.com/sso/oauth2/token"}`
(key names case-insensitive; `authUrl` defaults to Dynatrace's SSO; an optional `scope`
overrides the scopes `storage:metrics:read environment:roles:viewer`). The token is checked
as upstream does: prefix `dt0s08`, three dot-separated parts, a 64-character secret part;
client id = `dt0s08.<id>`, client secret = the whole token. The access token is cached
until 30 s before `expires_in` and fetched again after a 401.

Execution: `query:execute`; a 202 answer carries a `requestToken` that is polled with
`query:poll?request-token=...` (interval 50 ms doubling to 1 s, at most 60 polls, never
past the provider's timeout) until `state` is SUCCEEDED; FAILED, CANCELLED or RESULT_GONE
are errors.

Value rule (deterministic; upstream took a random map key): the result must have exactly
one record. Its value field is the field named `value` if the record has one; otherwise
the only field holding a number, a numeric string (DQL sends longs as strings) or an array
of numbers (a `timeseries` column). Several candidates are an error naming them: rename
one to `value` (`timeseries value = avg(dt.host.cpu.usage)`, `| fields value = ...`).
An array becomes one sample per element at `timeframe.start + i * interval`; nulls are
skipped. A scalar becomes one sample at the record's `timeframe.end` (or the window end).

Window:
- instant: no timeframe (DQL's default, 2 h for `timeseries`); the newest sample;
- range: `defaultTimeframeStart/End` = the window;
- range+step: as range, and a `timeseries` command without `interval:`/`bins:` gets
  `, interval: <step>` appended (before the first `|`).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from providers.base import BackendConfig, BackendError, QueryResult, Sample, Window, finite, parse_number
from providers.httpclient import HTTPBackend, duration_text, iso_time, window_bounds

QUERY_PATH = "/platform/storage/query/v1/query:"
DEFAULT_AUTH_URL = "https://sso.dynatrace.com/sso/oauth2/token"
DEFAULT_SCOPE = "storage:metrics:read environment:roles:viewer"
TOKEN_PREFIX = "dt0s08"
TOKEN_MARGIN = 30.0
MAX_POLLS = 60
METADATA_FIELDS = frozenset({"timeframe", "interval"})
_NUMERIC = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def client_credentials(token: str) -> tuple[str, str]:
    """(client id, client secret) from a `dt0s08.XXX.YYY` token, with upstream's checks."""
    if not token.startswith(TOKEN_PREFIX):
        raise BackendError(f"the DQL client token does not start with the required prefix {TOKEN_PREFIX}")
    parts = token.split(".")
    if len(parts) != 3:
        raise BackendError("the DQL client token does not have three dot-separated components")
    if len(parts[2]) != 64:
        raise BackendError(f"the DQL client token's secret part has {len(parts[2])} characters, not 64")
    client_id = f"{parts[0]}.{parts[1]}"
    return client_id, token


def with_interval(query: str, step_seconds: float) -> str:
    """Append `, interval: <step>` to a leading `timeseries` command that sets neither interval nor bins."""
    stripped = query.lstrip()
    if not stripped.startswith("timeseries"):
        return query
    cut = len(query)
    quote = ""
    for i, ch in enumerate(query):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "|":
            cut = i
            break
    head, tail = query[:cut], query[cut:]
    if re.search(r"\b(interval|bins)\s*:", head):
        return query
    spacer = " " if tail else ""
    return f"{head.rstrip()}, interval: {duration_text(step_seconds)}{spacer}{tail}"


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and bool(_NUMERIC.match(value))


def _is_candidate(value: Any) -> bool:
    if isinstance(value, list):
        return (
            bool(value)
            and all(v is None or _is_number(v) for v in value)
            and any(v is not None for v in value)
        )
    return _is_number(value)


def value_field(record: dict[str, Any]) -> str:
    """The record's value field by the documented rule."""
    if "value" in record:
        return "value"
    candidates = sorted(k for k, v in record.items() if k not in METADATA_FIELDS and _is_candidate(v))
    if not candidates:
        raise BackendError(
            f"the DQL record has no numeric field (fields: {', '.join(sorted(record))[:120]})"
        )
    if len(candidates) > 1:
        raise BackendError(
            f"the DQL record has several numeric fields ({', '.join(candidates)[:120]}); "
            "name the one to use 'value'"
        )
    return candidates[0]


def record_samples(record: dict[str, Any], end: float, step: float | None) -> list[Sample]:
    field = value_field(record)
    value = record[field]
    frame_doc = record.get("timeframe")
    frame: dict[str, Any] = frame_doc if isinstance(frame_doc, dict) else {}
    if not isinstance(value, list):
        if value is None:
            return []
        stamp = _parse_time(frame.get("end")) or end
        return [Sample(stamp, parse_number(value, f"DQL field {field!r}"))]
    start = _parse_time(frame.get("start"))
    try:
        interval = float(record["interval"]) / 1e9  # DQL sends the interval in nanoseconds
    except (KeyError, TypeError, ValueError):
        interval = step or 60.0
    if start is None:
        start = end - interval * (len(value) - 1)
    return [
        Sample(start + i * interval, parse_number(v, f"DQL field {field!r}"))
        for i, v in enumerate(value)
        if v is not None
    ]


class DQLBackend(HTTPBackend):
    label = "Dynatrace DQL"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._access_token = ""
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None

    def _secret(self) -> tuple[str, str, str, str]:
        """(client id, client secret, auth URL, scope) from the Secret, validated."""
        raw = self.config.secret.get(self.config.secret_key) if self.config.secret_key else None
        if not raw:
            raise self.error(
                f"DQL needs Secret key {self.config.secret_key or '<unset>'!r} with JSON {{token, authUrl}}",
                auth=True,
            )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self.error(
                f"Secret key {self.config.secret_key!r} is not JSON {{token, authUrl}}", auth=True
            ) from None
        if not isinstance(doc, dict):
            raise self.error(f"Secret key {self.config.secret_key!r} is not a JSON object", auth=True)
        fields = {str(k).lower(): v for k, v in doc.items()}
        token = str(fields.get("token") or "").strip()
        auth_url = str(fields.get("authurl") or DEFAULT_AUTH_URL).strip()
        scope = str(fields.get("scope") or DEFAULT_SCOPE)
        try:
            client_id, client_secret = client_credentials(token)
        except BackendError as exc:
            raise self.error(exc.message, auth=True) from None
        self.remember_secret(token)
        return client_id, client_secret, auth_url, scope

    async def _token(self, *, refresh: bool = False) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not refresh and self._access_token and time.monotonic() < self._expires:
                return self._access_token
            client_id, client_secret, auth_url, scope = self._secret()
            form = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
                "scope": scope,
            }
            status, body = await self.fetch("POST", auth_url, data=form)
            if status != 200:
                raise self.status_error(
                    auth_url, status, body, self._detail(body) or "OAuth token request failed"
                )
            doc = self.json(auth_url, body)
            token = doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise self.error(
                    f"the OAuth server at {auth_url} answered without an access_token", auth=True
                )
            self.remember_secret(token)
            try:
                lifetime = float(doc.get("expires_in") or 300)
            except (TypeError, ValueError):
                lifetime = 300.0
            self._access_token = token
            self._expires = time.monotonic() + max(lifetime - TOKEN_MARGIN, lifetime / 2)
            return token

    def _detail(self, body: bytes) -> str | None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err)
            if isinstance(err, str):
                return err + (f": {doc['error_description']}" if doc.get("error_description") else "")
        return None

    async def _api(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        """A Grail call with the cached bearer token, fetching a fresh one once after a 401."""
        for attempt in (0, 1):
            token = await self._token(refresh=attempt == 1)
            status, body = await self.fetch(
                method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs
            )
            if status != 401:
                break
        return status, body

    async def query(self, query: str, window: Window) -> QueryResult:
        if not query.strip():
            raise self.error("DQL query is empty")
        base = self.config.target_server.strip().rstrip("/")
        start, end = window_bounds(window)
        payload: dict[str, Any] = {
            "query": with_interval(query, window.step_seconds) if window.step_seconds else query,
            "timezone": "UTC",
            "locale": "en_US",
            "fetchTimeoutSeconds": max(1, int(self.config.timeout)),
            "requestTimeoutMilliseconds": max(1, min(1000, int(self.config.timeout * 500))),
        }
        if not window.is_instant:
            payload["defaultTimeframeStart"] = iso_time(start)
            payload["defaultTimeframeEnd"] = iso_time(end)
        deadline = time.monotonic() + self.config.timeout
        url = base + QUERY_PATH + "execute"
        status, body = await self._api("POST", url, json=payload)
        if status not in (200, 202):
            raise self.status_error(url, status, body, self._detail(body))
        doc = self.json(url, body)
        if status == 202 or (isinstance(doc, dict) and doc.get("state") != "SUCCEEDED"):
            doc, body = await self._poll(base, doc, deadline)
        return QueryResult(self._samples(doc, end, window.step_seconds), raw=body)

    async def _poll(self, base: str, doc: Any, deadline: float) -> tuple[Any, bytes]:
        self._check_state(doc)
        request_token = doc.get("requestToken") if isinstance(doc, dict) else None
        if not isinstance(request_token, str) or not request_token:
            raise self.error("DQL answered 202 without a requestToken")
        url = base + QUERY_PATH + "poll"
        delay = 0.05
        for _ in range(MAX_POLLS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            params = {
                "request-token": request_token,
                "request-timeout-milliseconds": str(int(min(1.0, remaining) * 1000)),
            }
            status, body = await self._api("GET", url + "?" + urlencode(params))
            if status != 200:
                raise self.status_error(url, status, body, self._detail(body))
            doc = self.json(url, body)
            self._check_state(doc)
            if doc.get("state") == "SUCCEEDED":
                return doc, body
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        raise self.error(f"DQL query did not finish within {self.config.timeout:g}s", retryable=True)

    def _check_state(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            raise self.error("DQL answered an unexpected JSON document")
        if isinstance(doc.get("error"), dict):
            raise self.error(f"DQL query failed: {doc['error'].get('message') or doc['error']}")
        state = doc.get("state")
        if state in ("FAILED", "CANCELLED", "RESULT_GONE"):
            raise self.error(f"DQL query ended in state {state}", retryable=state != "FAILED")

    def _samples(self, doc: Any, end: float, step: float | None) -> tuple[Sample, ...]:
        result = doc.get("result") if isinstance(doc, dict) else None
        records = result.get("records") if isinstance(result, dict) else None
        if not isinstance(records, list) or not records:
            raise self.error("DQL query returned no records")
        if len(records) > 1:
            raise self.error(
                f"DQL query returned {len(records)} records; it must yield one "
                "(aggregate, drop 'by:', or add '| limit 1' after sorting)"
            )
        record = records[0]
        if not isinstance(record, dict):
            raise self.error("DQL record is not an object")
        try:
            samples = record_samples(record, end, step)
        except BackendError as exc:
            raise self.error(exc.message) from None
        if not samples:
            raise self.error("DQL query returned no data points (all values are null)")
        for s in samples:
            finite(s.value)
        return tuple(sorted(samples, key=lambda s: s.timestamp))


def create(config: BackendConfig) -> DQLBackend:
    return DQLBackend(config)
