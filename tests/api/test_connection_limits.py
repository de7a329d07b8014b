"""The secure port as start_api serves it: TLS handshake and request-header timeouts and the
connection bound come from the flags (issue 10, item 6)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any


async def test_secure_port_closes_silent_and_slow_clients(start: Any) -> None:
    api = await start("--tls-handshake-timeout", "0.3", "--request-header-timeout", "0.3")
    port = api.runner.port
    # TCP connected, never says hello: closed by the handshake timeout
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
    # TLS done, request head never finished: closed by the header timeout
    ctx = api.pki.client_ctx()
    slow_reader, slow_writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        assert await asyncio.wait_for(silent_reader.read(), 20) == b""
        assert await asyncio.wait_for(slow_reader.read(), 20) == b""
        assert api.runner.site.stats.header_timeouts == 1
        status, _, _ = await api.get("/healthz")
        assert status == 200
    finally:
        for w in (silent_writer, slow_writer):
            w.close()


async def test_limits_reach_the_site(start: Any) -> None:
    api = await start("--max-connections", "7", "--keep-alive-timeout", "12")
    assert api.runner.site.limits.max_connections == 7 and api.runner.site.limits.keep_alive_timeout == 12
    assert isinstance(api.pki.client_ctx(), ssl.SSLContext)
