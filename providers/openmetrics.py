"""`openmetrics` (ours): read a value straight from a Prometheus text-exposition endpoint.

`targetServer` is any `/metrics` URL (an exporter, a pod, this server itself). The query is
a series selector, optionally wrapped in one aggregation:

    process_resident_memory_bytes
    http_requests_total{job="api", code=~"5.."}
    sum(http_requests_total{code!="200"})        # also max(...), min(...), avg(...), count(...)

Matchers are `=`, `!=`, `=~`, `!~` (anchored regular expressions, as in PromQL). Several
matching series without an aggregation are an error. A scrape is a single point in time,
so only instant queries are supported: a range is a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from providers.base import Backend, BackendConfig, BackendError, QueryResult, Sample, Window, finite
from providers.exposition import ExpositionError, SampleRow
from providers.httpclient import HTTPBackend, safe_url
from providers.scrape import DEFAULT_TTL, ParserPool, ScrapeCache, credentials_fingerprint

_AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": sum,
    "max": max,
    "min": min,
    "avg": lambda v: sum(v) / len(v),
    "count": lambda v: float(len(v)),
}
_QUERY = re.compile(r"^\s*(?:(?P<agg>[a-z]+)\s*\(\s*(?P<inner>.*?)\s*\)|(?P<plain>.*?))\s*$", re.S)
_SELECTOR = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>.*)\})?$", re.S)
_MATCHER = re.compile(
    r'\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)'
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    aggregation: str | None
    name: str
    matchers: tuple[Matcher, ...]


def parse_selector(query: str) -> Selector:
    """Parse `[agg(]name{l="v",...}[)]`; raises BackendError naming what is wrong."""
    m = _QUERY.match(query)
    if not m:
        raise BackendError(f"invalid openmetrics query {query!r}")
    agg = m.group("agg")
    body = m.group("inner") if agg else m.group("plain")
    if agg is not None and agg not in _AGGREGATIONS:
        raise BackendError(f"unsupported aggregation {agg!r} (use {', '.join(_AGGREGATIONS)})")
    sm = _SELECTOR.match(body or "")
    if not sm:
        raise BackendError(f'invalid series selector {body!r} (expected name{{label="value"}})')
    matchers: list[Matcher] = []
    text = (sm.group("matchers") or "").strip()
    pos = 0
    while pos < len(text):
        mm = _MATCHER.match(text, pos)
        if not mm:
            raise BackendError(f"invalid label matcher near {text[pos : pos + 30]!r}")
        value = mm.group("value").encode().decode("unicode_escape")
        if mm.group("op") in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise BackendError(f"invalid regular expression {value!r}: {exc}") from None
        matchers.append(Matcher(mm.group("label"), mm.group("op"), value))
        pos = mm.end()
    return Selector(agg, sm.group("name"), tuple(matchers))


#: Scrapes shared by every openmetrics provider of this process (an explicit cache: see
#: providers/scrape.py); `serve` sets its parser mode and TTL from its flags.
SCRAPES = ScrapeCache(parser=ParserPool("thread"))


def configure(*, parser: str = "thread", ttl: float = DEFAULT_TTL) -> None:
    """Replace the shared scrape cache (at start-up: `--openmetrics-parser`, `--openmetrics-scrape-ttl`)."""
    global SCRAPES
    SCRAPES.close()
    SCRAPES = ScrapeCache(parser=ParserPool(parser), ttl=ttl)


def select(rows: list[SampleRow], selector: Selector) -> list[SampleRow]:
    return [row for row in rows if all(m.matches(row[0]) for m in selector.matchers)]


class OpenMetricsBackend(HTTPBackend):
    label = "openmetrics"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._selectors: dict[str, Selector] = {}
        c = config
        self._scrape_key = (
            c.target_server,
            credentials_fingerprint(
                c.secret_text("token"),
                c.secret.get("ca.crt"),
                c.secret.get("tls.crt"),
                c.secret.get("tls.key"),
                c.insecure_skip_tls_verify,
                c.timeout,
            ),
            c.egress,
        )

    def default_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"}
        token = self.config.secret_text("token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def query(self, query: str, window: Window) -> QueryResult:
        if not window.is_instant:
            raise BackendError("openmetrics reads the current value only; remove spec.range")
        selector = self._selectors.get(query)
        if selector is None:
            selector = self._selectors[query] = parse_selector(query)
        url = self.config.target_server

        async def download() -> bytes:
            status, body = await self.fetch("GET", url)
            if status != 200:
                raise self.status_error(url, status, body)
            return body

        try:
            rows, fetched_at = await SCRAPES.samples(self._scrape_key, selector.name, download)
        except ExpositionError as exc:
            raise self.error(f"the endpoint answered an unparsable exposition: {exc}") from None
        found = select(rows, selector)
        if not found:
            raise BackendError(f"no series matches {query!r} at {safe_url(url)}")
        now = fetched_at  # the scrape's time: it may be shared and up to the cache TTL old
        if selector.aggregation is None:
            if len(found) > 1:
                raise BackendError(
                    f"{len(found)} series match {query!r}; narrow the selector or wrap it in sum(...), "
                    "max(...), min(...) or avg(...)"
                )
            _, value, ts = found[0]
            return QueryResult((Sample(ts or now, finite(value)),), raw=_raw(found))
        value = _AGGREGATIONS[selector.aggregation]([finite(v) for _, v, _ in found])
        return QueryResult((Sample(now, finite(value)),), raw=_raw(found))


def _raw(found: list[tuple[dict[str, str], float, float | None]]) -> bytes:
    """The matched series, as rawValue: what the value was computed from."""
    return orjson.dumps([{"labels": labels, "value": value} for labels, value, _ in found[:100]])


def create(config: BackendConfig) -> Backend:
    return OpenMetricsBackend(config)
