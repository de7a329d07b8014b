"""Prometheus (and OpenMetrics) share HTTPBackend's session handling: one pooled session per
KeptnMetricsProvider, reused until closed, and errors scrubbed of every Secret value."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from metrics_server.redact import MASK as REDACTED
from providers import BackendConfig, BackendError, Window, create_backend

TOKEN = "s3cr3t-bearer-token"
VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "7"]}]},
}


async def start(aiohttp_server: Any, handler: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/api/v1/query", handler)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


async def test_one_session_is_reused_until_closed(aiohttp_server: Any) -> None:
    peers: list[Any] = []

    async def ok(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response(VECTOR)

    provider = create_backend(
        BackendConfig(type="prometheus", target_server=await start(aiohttp_server, ok))
    )
    assert (await provider.query("up", Window())).latest().value == 7
    assert (await provider.query("up", Window())).latest().value == 7
    assert len(peers) == 2 and peers[0] == peers[1]  # the second query rode the pooled connection
    session = provider._session  # type: ignore[attr-defined]
    await provider.close()
    assert session is not None and session.closed
    assert (await provider.query("up", Window())).latest().value == 7  # a fresh session after close


async def test_an_error_echoing_the_credential_does_not_show_it(aiohttp_server: Any) -> None:
    async def echo(request: web.Request) -> web.Response:
        # a misconfigured proxy that reflects the request headers in its error page
        return web.Response(status=502, text=f"bad gateway for {request.headers.get('Authorization')}")

    target = await start(aiohttp_server, echo)
    cfg = BackendConfig(type="thanos", target_server=target, secret={"token": TOKEN.encode()})
    provider = create_backend(cfg)
    try:
        await provider.query("up", Window())
    except BackendError as exc:
        assert TOKEN not in exc.message and REDACTED in exc.message
        assert exc.message.startswith("thanos at ") and exc.retryable
    else:
        raise AssertionError("a 502 must be an error")
    finally:
        await provider.close()


async def test_openmetrics_errors_are_scrubbed_too(aiohttp_server: Any) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=503, text=f"unavailable for {request.headers.get('Authorization')}")

    app = web.Application()
    app.router.add_get("/metrics", echo)
    server = await aiohttp_server(app)
    cfg = BackendConfig(
        type="openmetrics", target_server=str(server.make_url("/metrics")), secret={"token": TOKEN.encode()}
    )
    provider = create_backend(cfg)
    try:
        await provider.query("up", Window())
    except BackendError as exc:
        assert TOKEN not in exc.message and exc.message.startswith("openmetrics at ")
    else:
        raise AssertionError("a 503 must be an error")
    finally:
        await provider.close()
