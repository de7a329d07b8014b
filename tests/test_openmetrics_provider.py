"""The `openmetrics` provider: a value straight from a text-exposition endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from metrics_server.fetch import fetch_once
from metrics_server.model import MetricRange
from providers import BackendConfig, BackendError, create_backend
from providers.openmetrics import parse_selector

EXPOSITION = """\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{job="api",code="200"} 1027
http_requests_total{job="api",code="500"} 3
http_requests_total{job="web",code="200"} 100
# HELP process_resident_memory_bytes RSS.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.2e+07
# TYPE broken gauge
broken NaN
"""


@pytest.fixture
async def exporter(aiohttp_server: Any) -> str:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=EXPOSITION, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/metrics"


async def value(url: str, query: str, mrange: MetricRange | None = None) -> float:
    cfg = BackendConfig(type="openmetrics", target_server=url, timeout=2)
    client = create_backend(cfg)
    try:
        return (await fetch_once(client, cfg, query, mrange)).value
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("process_resident_memory_bytes", 42_000_000),
        ('http_requests_total{job="api",code="500"}', 3),
        ('sum(http_requests_total{job="api"})', 1030),
        ('max(http_requests_total{code=~"2.."})', 1027),
        ('min(http_requests_total{job!="api"})', 100),
        ('avg(http_requests_total{code!~"5.*"})', 563.5),
        ("count(http_requests_total)", 3),
    ],
)
async def test_selectors_and_aggregations(exporter: str, query: str, expected: float) -> None:
    assert await value(exporter, query) == expected


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ('http_requests_total{job="api"}', "2 series match"),
        ("nothing_here", "no series matches"),
        ("broken", "non-finite"),
        ("rate(http_requests_total[1m])", "unsupported aggregation"),
        ("http_requests_total{job=api}", "invalid label matcher"),
    ],
)
async def test_errors_are_clear(exporter: str, query: str, words: str) -> None:
    with pytest.raises(BackendError, match=words):
        await value(exporter, query)


async def test_range_is_not_supported(exporter: str) -> None:
    with pytest.raises(BackendError, match="current value only"):
        await value(exporter, "process_resident_memory_bytes", MetricRange(interval="5m"))


def test_selector_parsing() -> None:
    sel = parse_selector('sum( x{a="1", b=~"c|d"} )')
    assert sel.aggregation == "sum" and sel.name == "x" and [m.op for m in sel.matchers] == ["=", "=~"]
