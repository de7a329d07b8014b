"""Credentials never leave their origin (issue 10, item 2).

Reproduced: after a backend redirect to another origin, a `header.*` credential of the
`http` provider went to the new origin; a tenant's KeptnMetric made the shared `http`
provider send `PUT /admin/anything` with the shared credentials.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from providers import BackendConfig, BackendError, Window, create_backend

KEY = "shared-api-key-0123456789"


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def app(self, redirect_to: str | None = None) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.seen.append((request.method, request.path, request.headers.get("X-Api-Key")))
            if redirect_to is not None and request.path.startswith("/api/moved"):
                raise web.HTTPFound(redirect_to)
            if request.path.startswith("/api/local"):
                raise web.HTTPTemporaryRedirect("/api/value")
            return web.json_response({"value": 7})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


def provider(target: str) -> Any:
    return create_backend(
        BackendConfig(
            type="http", target_server=target, secret={"header.X-Api-Key": KEY.encode()}, name="ns/p"
        )
    )


async def test_cross_origin_redirect_is_not_followed(aiohttp_server: Any) -> None:
    other = Recorder()
    other_server = await aiohttp_server(other.app())
    mine = Recorder()
    server = await aiohttp_server(mine.app(redirect_to=f"http://127.0.0.1:{other_server.port}/steal"))
    p = provider(f"http://127.0.0.1:{server.port}/api")
    try:
        with pytest.raises(BackendError) as err:
            await p.query("/moved|value", Window())
        assert "another origin" in err.value.message and "not followed" in err.value.message
        assert other.seen == []  # the other origin never saw a request, let alone the key
    finally:
        await p.close()


async def test_same_origin_redirect_is_followed(aiohttp_server: Any) -> None:
    mine = Recorder()
    server = await aiohttp_server(mine.app())
    p = provider(f"http://127.0.0.1:{server.port}/api")
    try:
        result = await p.query("/local|value", Window())
        assert result.latest().value == 7
        assert [path for _, path, _ in mine.seen] == ["/api/local", "/api/value"]
    finally:
        await p.close()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "QUERY"])
async def test_only_get_and_post(aiohttp_server: Any, method: str) -> None:
    mine = Recorder()
    server = await aiohttp_server(mine.app())
    p = provider(f"http://127.0.0.1:{server.port}/api")
    try:
        with pytest.raises(BackendError, match="method"):
            await p.query(
                json.dumps({"url": "/admin/anything", "method": method, "valuePath": "value"}), Window()
            )
        assert mine.seen == []
    finally:
        await p.close()


@pytest.mark.parametrize(
    "url",
    [
        "/../admin/anything",
        "/%2e%2e/admin",
        "/x/%2E%2E/%2E%2E/admin",
        "http://127.0.0.1:1/api/value",
        "http://user@HOST/api/value",
        "HOST/apiv2/value",
        "HOST/admin",
    ],
)
async def test_urls_stay_below_target_server(aiohttp_server: Any, url: str) -> None:
    mine = Recorder()
    server = await aiohttp_server(mine.app())
    host = f"http://127.0.0.1:{server.port}"
    p = provider(f"{host}/api")
    url = url.replace("http://user@HOST", f"http://user@127.0.0.1:{server.port}").replace("HOST", host)
    try:
        with pytest.raises(BackendError, match="targetServer|segments"):
            await p.query(json.dumps({"url": url, "valuePath": "value"}), Window())
        assert mine.seen == []
    finally:
        await p.close()


async def test_host_header_cannot_be_set(aiohttp_server: Any) -> None:
    mine = Recorder()
    server = await aiohttp_server(mine.app())
    p = provider(f"http://127.0.0.1:{server.port}/api")
    try:
        with pytest.raises(BackendError, match="target host"):
            await p.query(
                '{"url": "/v", "headers": {"Host": "admin.internal"}, "valuePath": "value"}', Window()
            )
    finally:
        await p.close()


async def test_post_below_the_path_works(aiohttp_server: Any) -> None:
    mine = Recorder()
    server = await aiohttp_server(mine.app())
    p = provider(f"http://127.0.0.1:{server.port}/api")
    try:
        result = await p.query(
            '{"url": "/stats?x=1", "method": "POST", "body": {}, "valuePath": "value"}', Window()
        )
        assert result.latest().value == 7 and mine.seen == [("POST", "/api/stats", KEY)]
    finally:
        await p.close()
