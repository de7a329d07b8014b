"""Real loopback metric backends for the CLI gate tests, served from a background thread so
that the synchronous `keptn-metrics` entry point (which runs its own event loop) can call them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.promapi import PromAPI


@dataclass
class Backends:
    prom: PromAPI
    exposition: dict[str, float] = field(default_factory=dict)  # openmetrics: series -> value
    url: str = ""

    @property
    def prom_url(self) -> str:
        return self.url

    @property
    def metrics_url(self) -> str:
        return self.url + "/metrics"

    async def handle_metrics(self, request: web.Request) -> web.Response:
        lines = [f"{series} {value}" for series, value in self.exposition.items()]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@pytest.fixture
def backends() -> Iterator[Backends]:
    b = Backends(prom=PromAPI())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        app = b.prom.app()
        app.router.add_get("/metrics", b.handle_metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        b.url = f"http://127.0.0.1:{port}"
        state["runner"] = runner
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        state["task"] = loop.create_task(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "backend did not start"
    try:
        yield b
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
