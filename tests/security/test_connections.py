"""Connection hygiene (issue 10, item 6: idle and slowloris connections stayed open forever).

No timed assertions: timeouts are short where a test waits for a close (a liveness wait with
a generous limit), and long where a test needs connections to stay open.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from apiservice.connections import ConnectionLimits, GuardedTCPSite

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # no blank line: the head never ends


async def serve(
    limits: ConnectionLimits, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, GuardedTCPSite]:
    app = web.Application()
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=0.1, keepalive_timeout=limits.keep_alive_timeout
    )
    await runner.setup()
    site = GuardedTCPSite(runner, "127.0.0.1", 0, limits=limits, ssl_context=ssl_context)
    await site.start()
    return runner, site


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        if isinstance(thing, web.AppRunner):
            await thing.cleanup()
        else:
            thing.close()


async def until(condition: Any, within: float = 20.0) -> None:
    """Wait for a condition (liveness, with a generous limit)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def closed_by_server(reader: asyncio.StreamReader, within: float = 20.0) -> bytes:
    """Everything the server sent until it closed the connection (liveness wait, not a timing check)."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionError:  # reset while we were still writing: closed all the same
        return b""


async def healthz(port: int, ssl_context: ssl.SSLContext | None = None) -> int:
    scheme = "https" if ssl_context else "http"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{scheme}://127.0.0.1:{port}/healthz", ssl=ssl_context or False) as resp:
            return resp.status


async def test_healthz_answers_while_500_slow_clients_hang_on(cleanup: list[Any]) -> None:
    runner, site = await serve(ConnectionLimits(request_header_timeout=300, max_connections=4096))
    cleanup.append(runner)
    writers = []
    for _ in range(500):
        _, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(PARTIAL_HEAD)
        writers.append(writer)
        cleanup.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))
    await until(lambda: site.stats.active >= 500)  # the server has accepted all of them
    assert await healthz(site.port) == 200
    assert site.stats.header_timeouts == 0 and site.stats.active >= 500  # they were all still connected


async def test_slow_clients_are_closed_after_the_header_timeout(cleanup: list[Any]) -> None:
    runner, site = await serve(ConnectionLimits(request_header_timeout=0.3))
    cleanup.append(runner)
    streams = []
    for _ in range(50):
        r, w = await asyncio.open_connection("127.0.0.1", site.port)
        w.write(PARTIAL_HEAD)
        streams.append((r, w))
        cleanup.append(w)
    # a slowloris that keeps sending header bytes: data does not extend the deadline
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    cleanup.append(writer)

    async def trickle() -> None:
        with contextlib_suppress():
            writer.write(PARTIAL_HEAD)
            for i in range(10_000):
                writer.write(f"X-Slow-{i}: y\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.05)

    task = asyncio.create_task(trickle())
    for r, _ in streams:
        assert await closed_by_server(r) == b""  # closed without an answer
    assert await closed_by_server(reader) == b""
    task.cancel()
    assert site.stats.header_timeouts == 51
    assert await healthz(site.port) == 200


async def test_idle_kept_alive_connections_are_closed(cleanup: list[Any]) -> None:
    runner, site = await serve(ConnectionLimits(keep_alive_timeout=0.3, request_header_timeout=300))
    cleanup.append(runner)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    cleanup.append(writer)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await closed_by_server(reader)  # one answer, then closed while idle
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")


async def test_connections_beyond_the_bound_get_503(cleanup: list[Any]) -> None:
    runner, site = await serve(ConnectionLimits(max_connections=5, request_header_timeout=300))
    cleanup.append(runner)
    for _ in range(5):
        _, w = await asyncio.open_connection("127.0.0.1", site.port)
        w.write(PARTIAL_HEAD)
        cleanup.append(w)
    await until(lambda: site.stats.active >= 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    cleanup.append(writer)
    assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 503")
    assert site.stats.rejected == 1 and site.stats.active == 5


async def test_tls_handshake_timeout(cleanup: list[Any]) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    runner, site = await serve(ConnectionLimits(tls_handshake_timeout=0.3), server_ctx)
    cleanup.append(runner)
    idle = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(20)]  # TCP only, no hello
    cleanup.extend(w for _, w in idle)
    assert await healthz(site.port, client_ctx) == 200
    for r, _ in idle:
        assert await closed_by_server(r) == b""


class contextlib_suppress:
    """Suppress the errors of writing to a connection the server closed."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, ConnectionError | asyncio.CancelledError)
