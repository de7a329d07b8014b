"""Dynatrace metrics v2 provider against a loopback server speaking the documented format."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import trustme
from aiohttp import web

from providers import create_backend
from providers.base import BackendError, Window
from providers.dynatrace import api_base, split_query
from tests.providers.httpfixtures import assert_clean, ca, make_config, tls_server_context

__all__ = ["ca", "tls_server_context"]

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECR"


def series(values: list[Any], start_ms: int = 1_700_000_000_000, step_ms: int = 60_000) -> dict[str, Any]:
    return {
        "dimensions": [],
        "dimensionMap": {},
        "timestamps": [start_ms + i * step_ms for i in range(len(values))],
        "values": values,
    }


def answer(*data: dict[str, Any], metric: str = "builtin:service.response.time") -> dict[str, Any]:
    return {
        "totalCount": len(data),
        "nextPageKey": None,
        "resolution": "1m",
        "result": [
            {
                "metricId": metric,
                "dataPointCountRatio": 0.0001,
                "dimensionCountRatio": 0.01,
                "data": list(data),
            }
        ],
    }


class FakeDynatrace:
    """Answers /api/v2/metrics/query with a canned body and remembers what it was asked."""

    def __init__(self, body: Any = None, status: int = 200, delay: float = 0.0, raw: bytes | None = None):
        self.body = body if body is not None else answer(series([1.0, 2.0, 3.0]))
        self.status = status
        self.delay = delay
        self.raw = raw
        self.requests: list[web.Request] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/metrics/query", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            return web.Response(body=self.raw, status=self.status, content_type="application/json")
        return web.json_response(self.body, status=self.status)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.requests[-1].query)


async def start(aiohttp_server: Any, fake: FakeDynatrace, **kw: Any) -> str:
    server = await aiohttp_server(fake.app(), **kw)
    return str(server.make_url("")).rstrip("/")


async def run(
    target: str, query: str = "builtin:service.response.time:avg", window: Window | None = None, **kw: Any
) -> Any:
    kw.setdefault("key", "apiToken")
    secret = kw.pop("secret", {"apiToken": TOKEN})
    provider = create_backend(make_config("dynatrace", target, secret, **kw))
    try:
        return await provider.query(query, window or Window())
    finally:
        await provider.close()


# --- URLs and query syntax -------------------------------------------------------------------------


def test_target_server_with_or_without_api_suffix() -> None:
    assert api_base("https://abc.live.dynatrace.com") == "https://abc.live.dynatrace.com/api"
    assert api_base("https://abc.live.dynatrace.com/") == "https://abc.live.dynatrace.com/api"
    assert api_base("https://abc.live.dynatrace.com/api") == "https://abc.live.dynatrace.com/api"
    assert api_base("https://abc.live.dynatrace.com/api/") == "https://abc.live.dynatrace.com/api"


def test_extra_parameters_ride_after_the_selector() -> None:
    selector, extras = split_query(
        "builtin:host.cpu.usage:splitBy():avg&entitySelector=type(HOST)&mzSelector=mzId(1)"
    )
    assert selector == "builtin:host.cpu.usage:splitBy():avg"
    assert extras == [("entitySelector", "type(HOST)"), ("mzSelector", "mzId(1)")]


# --- windows -------------------------------------------------------------------------------------


async def test_instant_query_sends_the_token_and_returns_the_newest_non_null_point(
    aiohttp_server: Any,
) -> None:
    fake = FakeDynatrace(answer(series([1.0, 5.0, None])))
    result = await run(await start(aiohttp_server, fake))
    request = fake.requests[0]
    assert request.headers["Authorization"] == f"Api-Token {TOKEN}"
    assert fake.params == {"metricSelector": "builtin:service.response.time:avg"}
    assert result.latest().value == 5.0
    assert [s.value for s in result.samples] == [1.0, 5.0]


async def test_target_with_api_suffix_reaches_the_same_endpoint(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    base = await start(aiohttp_server, fake)
    result = await run(base + "/api/")
    assert result.latest().value == 3.0


async def test_range_asks_for_one_value_over_the_window(aiohttp_server: Any) -> None:
    fake = FakeDynatrace(answer(series([42.5])))
    result = await run(await start(aiohttp_server, fake), window=Window(range_seconds=300))
    assert fake.params["from"] == "now-5m"
    assert fake.params["resolution"] == "Inf"
    assert [s.value for s in result.samples] == [42.5]


async def test_range_with_step_asks_for_that_resolution_and_returns_every_point(aiohttp_server: Any) -> None:
    fake = FakeDynatrace(answer(series([1.0, None, 3.0, 4.0])))
    result = await run(await start(aiohttp_server, fake), window=Window(range_seconds=3600, step_seconds=120))
    assert fake.params["from"] == "now-1h"
    assert fake.params["resolution"] == "2m"
    assert [s.value for s in result.samples] == [1.0, 3.0, 4.0]
    assert [s.timestamp for s in result.samples] == sorted(s.timestamp for s in result.samples)


async def test_window_with_an_end_uses_absolute_milliseconds(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    await run(await start(aiohttp_server, fake), window=Window(range_seconds=600, end=1_700_000_600))
    assert fake.params["from"] == "1700000000000"
    assert fake.params["to"] == "1700000600000"


async def test_parameters_in_the_query_win_over_the_window(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    await run(
        await start(aiohttp_server, fake),
        "m:avg&from=now-2d&entitySelector=type(SERVICE)",
        window=Window(range_seconds=300),
    )
    assert fake.params["from"] == "now-2d"
    assert fake.params["entitySelector"] == "type(SERVICE)"
    assert fake.params["resolution"] == "Inf"


async def test_a_step_finer_than_a_minute_is_a_clear_error(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    with pytest.raises(BackendError, match="whole minutes"):
        await run(await start(aiohttp_server, fake), window=Window(range_seconds=300, step_seconds=30))
    assert fake.requests == []


# --- data edge cases -----------------------------------------------------------------------------


async def test_empty_data_is_an_error_not_zero(aiohttp_server: Any) -> None:
    body = {
        "totalCount": 0,
        "nextPageKey": None,
        "resolution": "1m",
        "result": [{"metricId": "m:avg", "data": []}],
    }
    with pytest.raises(BackendError, match="no data"):
        await run(await start(aiohttp_server, FakeDynatrace(body)))


async def test_only_nulls_is_an_error(aiohttp_server: Any) -> None:
    with pytest.raises(BackendError, match="null"):
        await run(await start(aiohttp_server, FakeDynatrace(answer(series([None, None])))))


async def test_several_series_is_an_error_that_suggests_splitby(aiohttp_server: Any) -> None:
    body = answer(series([1.0]), series([2.0]))
    with pytest.raises(BackendError, match=r"2 series.*splitBy"):
        await run(await start(aiohttp_server, FakeDynatrace(body)))


async def test_api_error_body_becomes_a_one_line_message(aiohttp_server: Any) -> None:
    body = {
        "error": {
            "code": 400,
            "message": "Constraints violated.",
            "constraintViolations": [
                {
                    "path": "metricSelector",
                    "message": "Unknown metric key 'x'",
                    "parameterLocation": "QUERY",
                    "location": None,
                }
            ],
        }
    }
    with pytest.raises(BackendError) as info:
        await run(await start(aiohttp_server, FakeDynatrace(body, status=400)))
    assert "HTTP 400: Constraints violated. (Unknown metric key 'x')" in str(info.value)
    assert not info.value.retryable
    assert_clean(info.value, TOKEN)


@pytest.mark.parametrize(
    ("status", "auth", "retryable"),
    [(401, True, False), (403, True, False), (429, False, True), (503, False, True)],
)
async def test_http_failures_are_classified(
    aiohttp_server: Any, status: int, auth: bool, retryable: bool
) -> None:
    body = {"error": {"code": status, "message": f"Token {TOKEN} is not valid"}}
    with pytest.raises(BackendError) as info:
        await run(await start(aiohttp_server, FakeDynatrace(body, status=status)))
    assert (info.value.auth, info.value.retryable) == (auth, retryable)
    assert f"HTTP {status}" in str(info.value)
    assert_clean(info.value, TOKEN)


async def test_a_gateway_error_page_that_echoes_the_token_is_redacted(aiohttp_server: Any) -> None:
    raw = f"<html>\n<body>Bad gateway for Api-Token {TOKEN}</body></html>".encode()
    with pytest.raises(BackendError) as info:
        await run(await start(aiohttp_server, FakeDynatrace(raw=raw, status=502)))
    assert "HTTP 502" in str(info.value)
    assert_clean(info.value, TOKEN)


async def test_malformed_json_is_an_error(aiohttp_server: Any) -> None:
    with pytest.raises(BackendError, match="malformed JSON"):
        await run(await start(aiohttp_server, FakeDynatrace(raw=b'{"result": [')))


async def test_a_slow_answer_times_out(aiohttp_server: Any) -> None:
    fake = FakeDynatrace(delay=1.0)
    with pytest.raises(BackendError, match="did not answer in time") as info:
        await run(await start(aiohttp_server, fake), timeout=0.2)
    assert info.value.retryable


async def test_a_missing_token_is_an_auth_error_without_a_request(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    with pytest.raises(BackendError, match="API token") as info:
        await run(await start(aiohttp_server, fake), secret={})
    assert info.value.auth
    assert fake.requests == []


# --- TLS -----------------------------------------------------------------------------------------


async def test_tls_with_the_ca_from_the_secret(
    aiohttp_server: Any, ca: trustme.CA, tls_server_context: ssl.SSLContext
) -> None:
    fake = FakeDynatrace()
    target = await start(aiohttp_server, fake, ssl=tls_server_context)
    assert target.startswith("https://")
    secret = {"apiToken": TOKEN, "ca.crt": ca.cert_pem.bytes().decode()}
    assert (await run(target, secret=secret)).latest().value == 3.0


async def test_tls_without_trust_fails_and_insecure_skip_verify_connects(
    aiohttp_server: Any, tls_server_context: ssl.SSLContext
) -> None:
    target = await start(aiohttp_server, FakeDynatrace(), ssl=tls_server_context)
    with pytest.raises(BackendError, match="TLS verification failed"):
        await run(target)
    assert (await run(target, insecure=True)).latest().value == 3.0


async def test_the_session_is_reused_and_closed(aiohttp_server: Any) -> None:
    fake = FakeDynatrace()
    target = await start(aiohttp_server, fake)
    provider = create_backend(make_config("dynatrace", target, {"apiToken": TOKEN}, key="apiToken"))
    await provider.query("m:avg", Window())
    session = provider._session  # type: ignore[attr-defined]
    await provider.query("m:avg", Window())
    assert provider._session is session  # type: ignore[attr-defined]
    await provider.close()
    assert session is not None and session.closed
