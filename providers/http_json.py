"""Generic HTTP/JSON (type `http`): any endpoint that answers JSON, the value picked by a path.

Like KEDA's metrics-api scaler (`url` + `valueLocation`). Query, in one of two forms:

- compact: `<suffix>|<valuePath>`, e.g. `/api/stats|components.worker.tasks`; `<suffix>` alone
  means the answer is a bare number (`42`); `|<valuePath>` reads targetServer itself.
- JSON: `{"url": "/api/v1/stats?window=${range}s", "method": "POST",
  "headers": {"Accept": "application/json"}, "body": {...}, "valuePath": "data.value",
  "timestampPath": "data.#.ts"}` (all optional).

`url`/`<suffix>`: `?a=b` is appended to targetServer, `/path` replaces nothing but is appended
to it, an absolute URL must have targetServer's scheme, host and port and every URL must stay
at or below targetServer's path, without `.`/`..` segments (credentials never go elsewhere;
redirects are followed only within that origin). `method` is GET or POST: a provider's
credentials read, they never write. `${start}`, `${end}` (Unix s), `${start_ms}`, `${end_ms}`, `${start_iso}`,
`${end_iso}`, `${range}`, `${step}` (s) in `url` and string values of `body` are filled
from the window (an instant has a range of 0).

Value path: the GJSON subset of providers/jsonpath.py (`a.b.0.c`, `a.#.c`, `\\.`). It may
yield one number (or numeric string): one sample at the window end; or an array of numbers,
or of `[timestamp, value]` pairs, which are the samples of ONE series (nulls skipped). Array
timestamps come from the pairs, from `timestampPath` (Unix s, ms, or RFC 3339), or else are
spaced by the step (1 s without one) ending at the window end, last element newest. The
evaluator then takes the newest sample or aggregates them.

Secret keys (all optional): `user`/`username` + `password` (basic auth), `token` (bearer),
`secretKeyRef.key` (bearer, when it is none of the others), `header.<Name>` (sent as header
`<Name>`, e.g. `header.X-Api-Key`), and the TLS keys every HTTP provider understands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from yarl import URL

from providers import jsonpath
from providers.base import BackendConfig, BackendError, QueryResult, Sample, Window, parse_number
from providers.httpclient import HTTPBackend, iso_time, origin, window_bounds

#: read-only methods only: a shared provider's credentials must not write to its backend
METHODS = frozenset({"GET", "POST"})
#: headers a query may not set: they would move the credentials to another (virtual) host
FORBIDDEN_HEADERS = frozenset({"host", ":authority", "forwarded", "x-forwarded-host"})
RESERVED_KEYS = frozenset({"user", "username", "password", "token", "ca.crt", "tls.crt", "tls.key"})


class Request:
    """What to send and where the value is, from the query string."""

    def __init__(self, query: str) -> None:
        text = query.strip()
        self.method = "GET"
        self.headers: dict[str, str] = {}
        self.body: Any = None
        self.timestamp_path = ""
        if text.startswith("{"):
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise BackendError("http query starts with '{' but is not valid JSON") from None
            unknown = set(doc) - {"url", "method", "headers", "body", "valuePath", "timestampPath"}
            if unknown:
                raise BackendError(f"http query: unknown fields {sorted(unknown)}")
            self.url = str(doc.get("url") or "")
            self.method = str(doc.get("method") or "GET").upper()
            headers = doc.get("headers") or {}
            if not isinstance(headers, dict):
                raise BackendError("http query: 'headers' must be an object")
            self.headers = {str(k): str(v) for k, v in headers.items()}
            bad = sorted(k for k in self.headers if k.lower() in FORBIDDEN_HEADERS)
            if bad:
                raise BackendError(f"http query: headers {bad} may not be set (they change the target host)")
            self.body = doc.get("body")
            self.value_path = str(doc.get("valuePath") or "")
            self.timestamp_path = str(doc.get("timestampPath") or "")
        else:
            self.url, _, self.value_path = text.partition("|")
            self.url, self.value_path = self.url.strip(), self.value_path.strip()
        if self.method not in METHODS:
            raise BackendError(f"http query: method {self.method!r} is not one of {sorted(METHODS)}")
        for path in (self.value_path, self.timestamp_path):
            if path:
                jsonpath.parse(path)

    def target(self, base: str, fill: dict[str, str]) -> str:
        """The URL to call: on targetServer's origin and at or below its path, or an error."""
        suffix = _fill(self.url, fill)
        base = base.strip()
        if "://" in suffix:
            url = suffix
        elif not suffix:
            url = base
        elif suffix.startswith("?"):
            url = base + ("&" + suffix[1:] if "?" in base else suffix)
        else:
            url = base.rstrip("/") + "/" + suffix.lstrip("/")
        _confine(base, url)
        return url


def _confine(base: str, url: str) -> None:
    """Refuse a URL outside targetServer: another origin, a dot segment, or a path above it."""
    try:
        mine, theirs = URL(base), URL(url)
        raw_path = urlsplit(url).path
    except ValueError:
        raise BackendError("http query url is not a valid URL") from None
    if origin(mine) != origin(theirs) or theirs.user or theirs.password:
        raise BackendError("http query url must stay on targetServer's scheme, host and port")
    if any(seg in (".", "..") for seg in unquote(raw_path).split("/")):
        raise BackendError("http query url may not contain '.' or '..' path segments")
    prefix = mine.path.rstrip("/")
    if prefix and theirs.path != prefix and not theirs.path.startswith(prefix + "/"):
        raise BackendError(f"http query url must stay below targetServer's path {prefix}")


def _fill(text: str, fill: dict[str, str]) -> str:
    for name, value in fill.items():
        text = text.replace("${" + name + "}", value)
    return text


def _fill_body(body: Any, fill: dict[str, str]) -> Any:
    if isinstance(body, str):
        return _fill(body, fill)
    if isinstance(body, list):
        return [_fill_body(v, fill) for v in body]
    if isinstance(body, dict):
        return {k: _fill_body(v, fill) for k, v in body.items()}
    return body


def _timestamp(value: Any) -> float:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    ts = parse_number(value, "timestamp")
    return ts / 1000.0 if ts > 1e11 else ts  # milliseconds since the epoch


def samples_from(value: Any, stamps: Any, end: float, step: float | None) -> list[Sample]:
    """The documented value rule: one number, an array of numbers, or [timestamp, value] pairs."""
    if not isinstance(value, list):
        if value is None:
            return []
        if isinstance(value, dict):
            raise BackendError("the value path points at an object, not a number")
        return [Sample(end, parse_number(value))]
    if stamps is not None and (not isinstance(stamps, list) or len(stamps) != len(value)):
        raise BackendError("timestampPath must yield one timestamp per value")
    spacing = step or 1.0
    out = []
    for i, item in enumerate(value):
        if isinstance(item, list) and len(item) == 2:
            ts_raw, item = item
            if item is None:
                continue
            out.append(Sample(_timestamp(ts_raw), parse_number(item)))
            continue
        if item is None:
            continue
        if isinstance(item, dict | list):
            raise BackendError("the value path yields objects or arrays, not numbers")
        ts = _timestamp(stamps[i]) if stamps is not None else end - spacing * (len(value) - 1 - i)
        out.append(Sample(ts, parse_number(item)))
    return out


class HTTPJSONBackend(HTTPBackend):
    label = "HTTP endpoint"

    def default_headers(self) -> dict[str, str]:
        config = self.config
        headers = {"Accept": "application/json"}
        user = config.secret_text("user") or config.secret_text("username")
        password = config.secret_text("password")
        token = config.secret_text("token")
        if not token and config.secret_key and config.secret_key not in RESERVED_KEYS:
            if not config.secret_key.startswith("header."):
                token = config.secret_text(config.secret_key)
        if user and password:
            headers["Authorization"] = aiohttp.BasicAuth(user, password).encode()
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        for key in config.secret:
            if key.startswith("header.") and len(key) > len("header."):
                headers[key[len("header.") :]] = config.secret_text(key) or ""
        return headers

    async def query(self, query: str, window: Window) -> QueryResult:
        start, end = window_bounds(window)
        fill = {
            "start": str(int(start)), "end": str(int(end)),
            "start_ms": str(int(start * 1000)), "end_ms": str(int(end * 1000)),
            "start_iso": iso_time(start), "end_iso": iso_time(end),
            "range": str(int(end - start)), "step": str(int(window.step_seconds or 0)),
        }  # fmt: skip
        try:
            spec = Request(query)
            url = spec.target(self.config.target_server, fill)
        except BackendError as exc:
            raise self.error(exc.message) from None
        kwargs: dict[str, Any] = {"headers": spec.headers} if spec.headers else {}
        if spec.body is not None:
            body = _fill_body(spec.body, fill)
            if isinstance(body, str):
                kwargs["data"] = body.encode()
            else:
                kwargs["data"] = orjson.dumps(body)
                kwargs.setdefault("headers", {}).setdefault("Content-Type", "application/json")
        status, raw = await self.fetch(spec.method, url, **kwargs)
        if not 200 <= status < 300:
            raise self.status_error(url, status, raw)
        try:
            samples = self._samples(spec, url, raw, end, window.step_seconds)
        except BackendError as exc:
            raise self.error(exc.message) from None
        if not samples:
            raise self.error("the endpoint returned no data (the value is null or empty)")
        return QueryResult(tuple(sorted(samples, key=lambda s: s.timestamp)), raw=raw)

    def _samples(self, spec: Request, url: str, raw: bytes, end: float, step: float | None) -> list[Sample]:
        if not spec.value_path:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return [Sample(end, parse_number(raw.decode("utf-8", "replace").strip(), "the answer"))]
            if isinstance(doc, dict | list):
                raise BackendError("the endpoint answered a JSON document; give a valuePath (suffix|path)")
            return samples_from(doc, None, end, step)
        doc = self.json(url, raw)
        value = jsonpath.select(doc, spec.value_path)
        stamps = jsonpath.select(doc, spec.timestamp_path) if spec.timestamp_path else None
        return samples_from(value, stamps, end, step)


def create(config: BackendConfig) -> HTTPJSONBackend:
    return HTTPJSONBackend(config)
