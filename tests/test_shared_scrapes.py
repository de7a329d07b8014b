"""openmetrics targets are downloaded and parsed once per interval for every query that reads them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from providers import BackendConfig, BackendError, Window, create_backend, openmetrics
from providers.exposition import index_samples
from providers.scrape import ParserPool, ScrapeCache

EXPOSITION = "".join(
    f'# TYPE m{i} gauge\nm{i}{{shard="a"}} {i}\nm{i}{{shard="b"}} {i * 10}\n' for i in range(8)
)


class Exporter:
    def __init__(self) -> None:
        self.requests = 0
        self.auth: list[str | None] = []
        self.body = EXPOSITION

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.auth.append(request.headers.get("Authorization"))
        await asyncio.sleep(0.01)  # long enough for every concurrent query to join the flight
        return web.Response(text=self.body, content_type="text/plain")


@pytest.fixture
async def exporter(aiohttp_server: Any) -> AsyncIterator[tuple[Exporter, str]]:
    exp = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exp.handle)
    server = await aiohttp_server(app)
    yield exp, f"http://127.0.0.1:{server.port}/metrics"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(
        openmetrics, "SCRAPES", ScrapeCache(parser=ParserPool("thread"), clock=lambda: now[0])
    )
    return now


async def query_all(configs: list[BackendConfig], queries: list[str]) -> list[float]:
    clients = [create_backend(c) for c in configs]
    try:
        results = await asyncio.gather(*(client.query(q, Window()) for client in clients for q in queries))
    finally:
        for client in clients:
            await client.close()
    return [r.latest().value for r in results]


async def test_eight_queries_on_one_target_cost_one_download_and_one_parse(exporter, clock) -> None:
    exp, url = exporter
    queries = [f"sum(m{i})" for i in range(8)]
    values = await query_all([BackendConfig(type="openmetrics", target_server=url)], queries)
    assert values == [i * 11 for i in range(8)]
    assert exp.requests == 1
    assert openmetrics.SCRAPES.downloads == 1 and openmetrics.SCRAPES.parses == 1


async def test_providers_with_the_same_target_and_credentials_share_the_scrape(exporter, clock) -> None:
    exp, url = exporter
    same = [BackendConfig(type="openmetrics", target_server=url, name=f"ns{i}/p") for i in range(3)]
    await query_all(same, ['m1{shard="a"}', "sum(m2)"])
    assert exp.requests == 1


async def test_different_credentials_never_share_a_scrape(exporter, clock) -> None:
    exp, url = exporter
    configs = [
        BackendConfig(type="openmetrics", target_server=url),
        BackendConfig(type="openmetrics", target_server=url, secret={"token": b"tenant-a"}),
        BackendConfig(type="openmetrics", target_server=url, secret={"token": b"tenant-b"}),
    ]
    await query_all(configs, ["sum(m1)"])
    assert exp.requests == 3
    assert sorted(exp.auth, key=str) == sorted([None, "Bearer tenant-a", "Bearer tenant-b"], key=str)


async def test_a_scrape_is_reused_only_within_its_ttl(exporter, clock) -> None:
    exp, url = exporter
    config = BackendConfig(type="openmetrics", target_server=url)
    assert await query_all([config], ["sum(m3)"]) == [33]
    exp.body = EXPOSITION.replace('m3{shard="a"} 3', 'm3{shard="a"} 4')
    clock[0] += 0.5
    assert await query_all([config], ["sum(m3)", "sum(m4)"]) == [33, 44]  # same scrape, new name parsed
    assert exp.requests == 1 and openmetrics.SCRAPES.parses == 2
    clock[0] += 1.0
    assert await query_all([config], ["sum(m3)"]) == [34]
    assert exp.requests == 2


async def test_failures_are_not_cached(exporter, clock) -> None:
    exp, url = exporter
    config = BackendConfig(type="openmetrics", target_server=url)
    exp.body = "not an exposition {{{"
    with pytest.raises(BackendError, match="unparsable"):
        await query_all([config], ["sum(m1)"])
    exp.body = EXPOSITION
    clock[0] += 2
    assert await query_all([config], ["sum(m1)"]) == [11]


async def test_parsing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    def recording(body: bytes, names: Any) -> Any:
        threads.append(threading.get_ident())
        return index_samples(body, names)

    monkeypatch.setattr("providers.scrape.index_samples", recording)
    pool = ParserPool("thread")
    try:
        index = await pool.index(EXPOSITION.encode(), frozenset({"m1"}))
    finally:
        pool.shutdown()
    assert index["m1"][0][1] == 1.0
    assert threads and threading.get_ident() not in threads


async def test_the_process_parser_gives_the_same_answer() -> None:
    pool = ParserPool("process")
    try:
        index = await pool.index(EXPOSITION.encode(), frozenset({"m5", "absent"}))
    finally:
        pool.shutdown()
    assert index == index_samples(EXPOSITION.encode(), {"m5", "absent"})
    assert index["absent"] == [] and [row[1] for row in index["m5"]] == [5.0, 50.0]


class GatedParser(ParserPool):
    """Parses inline, but only once `gate` is set: a parse that takes its time."""

    def __init__(self) -> None:
        super().__init__("inline")
        self.gate = asyncio.Event()

    async def index(self, body: bytes, names: frozenset[str]) -> Any:
        await self.gate.wait()
        return index_samples(body, names)


async def test_a_new_scrape_never_takes_the_answer_of_an_older_scrapes_parse() -> None:
    now = [0.0]
    parser = GatedParser()
    cache = ScrapeCache(parser=parser, clock=lambda: now[0])
    bodies = iter([b"# TYPE m gauge\nm 1\n", b"# TYPE m gauge\nm 2\n"])

    async def download() -> bytes:
        return next(bodies)

    old = asyncio.ensure_future(cache.samples("target", "m", download))
    for _ in range(10):  # until the first scrape is downloaded and its parse is waiting
        await asyncio.sleep(0)
    now[0] += 5  # the first scrape expires while its parse is still running
    new = asyncio.ensure_future(cache.samples("target", "m", download))
    for _ in range(10):
        await asyncio.sleep(0)
    parser.gate.set()
    (old_rows, _), (new_rows, _) = await asyncio.gather(old, new)
    assert old_rows[0][1] == 1.0 and new_rows[0][1] == 2.0
    assert cache.downloads == 2
