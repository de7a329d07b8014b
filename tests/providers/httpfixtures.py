"""Loopback HTTP(S) servers and configs shared by the HTTP provider tests.

Import the fixtures you use: `from tests.providers.httpfixtures import ca, tls_server_context`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any

import pytest
import trustme
from aiohttp import web

from providers.base import BackendConfig, BackendError


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def make_config(
    type_: str,
    target: str,
    secret: Mapping[str, str] | None = None,
    *,
    key: str = "",
    timeout: float = 2.0,
    insecure: bool = False,
) -> BackendConfig:
    return BackendConfig(
        type=type_,
        target_server=target,
        secret={k: v.encode() for k, v in (secret or {}).items()},
        secret_key=key,
        insecure_skip_tls_verify=insecure,
        timeout=timeout,
        name=f"test/{type_}",
    )


def assert_clean(exc: BackendError, *secrets: str) -> None:
    """A provider error is one line and never shows a credential."""
    message = str(exc)
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message, f"credential leaked into: {message}"


class Reply:
    """One canned answer: JSON (`body`) or raw bytes, a status and an optional delay."""

    def __init__(
        self, body: Any = None, status: int = 200, *, raw: bytes | None = None, delay: float = 0.0
    ) -> None:
        self.body, self.status, self.raw, self.delay = body, status, raw, delay


class Seen:
    """What the fake backend received in one request."""

    def __init__(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class FakeBackend:
    """A loopback aiohttp app: per (method, path) a queue of replies (the last one repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []

    def on(self, method: str, path: str, *replies: Reply) -> FakeBackend:
        self.routes[(method, path)] = list(replies)
        return self

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), body))
        queue = self.routes.get((request.method, request.path))
        if not queue:
            return web.json_response({"error": "no such route"}, status=404)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status, content_type="application/json")
        return web.json_response(reply.body, status=reply.status)

    async def start(self, aiohttp_server: Any, **kwargs: Any) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        server = await aiohttp_server(app, **kwargs)
        return str(server.make_url("")).rstrip("/")
