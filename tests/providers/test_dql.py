"""Dynatrace DQL provider: OAuth client credentials, query:execute, 202 + query:poll, value rule."""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import parse_qs

import pytest
import trustme

from providers import create_backend
from providers.base import BackendError, QueryResult, Window
from providers.dql import client_credentials, value_field, with_interval
from tests.providers.httpfixtures import FakeBackend, Reply, assert_clean, ca, make_config, tls_server_context

__all__ = ["ca", "tls_server_context"]

SECRET_PART = "S" * 60 + "9xYz"
TOKEN = f"dt0s08.CLIENTID123.{SECRET_PART}"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-token-body.signature"
EXECUTE = "/platform/storage/query/v1/query:execute"
POLL = "/platform/storage/query/v1/query:poll"
AUTH = "/sso/oauth2/token"


def oauth(expires_in: int = 300, token: str = ACCESS) -> Reply:
    return Reply(
        {
            "scope": "storage:metrics:read",
            "token_type": "Bearer",
            "expires_in": expires_in,
            "access_token": token,
            "resource": "urn:dtenvironment:abc",
        }
    )


def succeeded(*records: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": "SUCCEEDED",
        "progress": 100,
        "ttlSeconds": 500,
        "result": {
            "records": list(records),
            "types": [{"indexRange": [0, max(len(records) - 1, 0)], "mappings": {}}],
            "metadata": {"grail": {"query": "...", "scannedRecords": 0, "executionTimeMilliseconds": 12}},
        },
    }


TIMESERIES_RECORD = {
    "timeframe": {"start": "2023-11-14T22:13:20.000000000Z", "end": "2023-11-14T22:18:20.000000000Z"},
    "interval": "60000000000",
    "avg(dt.host.cpu.usage)": [10.0, 20.5, None, 30.0, 40.0],
}


def fake_dql(*execute: Reply, poll: tuple[Reply, ...] = (), auth: tuple[Reply, ...] = ()) -> FakeBackend:
    fake = FakeBackend().on("POST", AUTH, *(auth or (oauth(),))).on("POST", EXECUTE, *execute)
    if poll:
        fake.on("GET", POLL, *poll)
    return fake


async def run(
    target: str,
    query: str = "timeseries avg(dt.host.cpu.usage)",
    window: Window | None = None,
    token: str = TOKEN,
    **kw: Any,
) -> QueryResult:
    secret = kw.pop("secret", None) or {"dql": json.dumps({"token": token, "authUrl": target + AUTH})}
    provider = create_backend(make_config("dql", target, secret, key="dql", **kw))
    try:
        return await provider.query(query, window or Window())
    finally:
        await provider.close()


# --- token format, value rule, query rewriting -----------------------------------------------------


def test_token_format_is_checked_like_upstream() -> None:
    assert client_credentials(TOKEN) == ("dt0s08.CLIENTID123", TOKEN)
    for bad, why in [
        ("dt0c01.ABC." + "x" * 64, "prefix"),
        ("dt0s08.ABC", "three"),
        ("dt0s08.ABC.short", "64"),
    ]:
        with pytest.raises(BackendError, match=why) as info:
            client_credentials(bad)
        assert_clean(info.value, bad)


def test_the_value_field_is_value_or_the_only_numeric_field() -> None:
    assert value_field({"value": "1", "count()": "2"}) == "value"
    assert value_field({"host": "HOST-1", "status": "ok", "count()": "42"}) == "count()"
    assert value_field(TIMESERIES_RECORD) == "avg(dt.host.cpu.usage)"
    with pytest.raises(BackendError, match=r"several numeric fields \(avg, max\).*'value'"):
        value_field({"avg": 1.0, "max": 2.0})
    with pytest.raises(BackendError, match="no numeric field"):
        value_field({"host": "HOST-1"})


def test_a_step_becomes_the_timeseries_interval() -> None:
    assert (
        with_interval("timeseries avg(dt.host.cpu.usage)", 60)
        == "timeseries avg(dt.host.cpu.usage), interval: 1m"
    )
    assert (
        with_interval('timeseries v = avg(m), by: {host} | filter host == "a|b"', 300)
        == 'timeseries v = avg(m), by: {host}, interval: 5m | filter host == "a|b"'
    )
    assert with_interval("timeseries avg(m), interval: 5m", 60) == "timeseries avg(m), interval: 5m"
    assert with_interval("fetch logs | summarize count()", 60) == "fetch logs | summarize count()"


# --- flow ---------------------------------------------------------------------------------------


async def test_instant_timeseries_logs_in_and_returns_the_newest_point(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded(TIMESERIES_RECORD)))
    target = await fake.start(aiohttp_server)
    result = await run(target)
    login = parse_qs(fake.requests(AUTH)[0].body.decode())
    assert login["grant_type"] == ["client_credentials"]
    assert login["client_id"] == ["dt0s08.CLIENTID123"]
    assert login["client_secret"] == [TOKEN]
    assert login["scope"] == ["storage:metrics:read environment:roles:viewer"]
    execute = fake.requests(EXECUTE)[0]
    assert execute.headers["Authorization"] == f"Bearer {ACCESS}"
    sent = execute.json()
    assert sent["query"] == "timeseries avg(dt.host.cpu.usage)"
    assert "defaultTimeframeStart" not in sent
    assert [s.value for s in result.samples] == [10.0, 20.5, 30.0, 40.0]
    assert result.latest().value == 40.0
    assert result.samples[0].timestamp == 1_700_000_000.0
    assert result.latest().timestamp == 1_700_000_240.0


async def test_range_sends_the_timeframe_and_step_sets_the_interval(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded(TIMESERIES_RECORD)))
    await run(
        await fake.start(aiohttp_server),
        window=Window(range_seconds=600, step_seconds=120, end=1_700_000_600),
    )
    sent = fake.requests(EXECUTE)[0].json()
    assert sent["defaultTimeframeStart"] == "2023-11-14T22:13:20Z"
    assert sent["defaultTimeframeEnd"] == "2023-11-14T22:23:20Z"
    assert sent["query"] == "timeseries avg(dt.host.cpu.usage), interval: 2m"


async def test_a_summarize_query_gives_one_sample_from_a_long_sent_as_string(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"count()": "1234"})))
    result = await run(await fake.start(aiohttp_server), "fetch logs | summarize count()")
    assert [s.value for s in result.samples] == [1234.0]


async def test_202_is_polled_until_succeeded(aiohttp_server: Any) -> None:
    fake = fake_dql(
        Reply({"state": "RUNNING", "requestToken": "req-token-1", "ttlSeconds": 600}, 202),
        poll=(Reply({"state": "RUNNING", "progress": 50}), Reply(succeeded({"value": 7.5}))),
    )
    result = await run(await fake.start(aiohttp_server))
    polls = fake.requests(POLL)
    assert len(polls) == 2
    assert polls[0].query["request-token"] == "req-token-1"
    assert polls[0].headers["Authorization"] == f"Bearer {ACCESS}"
    assert result.latest().value == 7.5


async def test_polling_is_bounded_by_the_timeout(aiohttp_server: Any) -> None:
    fake = fake_dql(
        Reply({"state": "RUNNING", "requestToken": "t"}, 202), poll=(Reply({"state": "RUNNING"}),)
    )
    with pytest.raises(BackendError, match="did not finish") as info:
        await run(await fake.start(aiohttp_server), timeout=0.3)
    assert info.value.retryable
    assert 1 <= len(fake.requests(POLL)) <= 10


async def test_a_failed_query_is_an_error(aiohttp_server: Any) -> None:
    fake = fake_dql(
        Reply({"state": "RUNNING", "requestToken": "t"}, 202),
        poll=(Reply({"state": "FAILED", "progress": 100}),),
    )
    with pytest.raises(BackendError, match="state FAILED"):
        await run(await fake.start(aiohttp_server))


async def test_the_access_token_is_cached_until_it_expires(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"value": 1})), auth=(oauth(expires_in=300),))
    target = await fake.start(aiohttp_server)
    secret = {"dql": json.dumps({"token": TOKEN, "authUrl": target + AUTH})}
    provider = create_backend(make_config("dql", target, secret, key="dql"))
    await provider.query("fetch x", Window())
    await provider.query("fetch x", Window())
    assert len(fake.requests(AUTH)) == 1
    provider._expires = 0.0  # type: ignore[attr-defined]  # the clock moves past expires_in - 30 s
    await provider.query("fetch x", Window())
    assert len(fake.requests(AUTH)) == 2
    await provider.close()


async def test_a_401_fetches_a_fresh_token_once(aiohttp_server: Any) -> None:
    fake = fake_dql(
        Reply({"error": {"code": 401, "message": "Token expired"}}, 401),
        Reply(succeeded({"value": 3})),
        auth=(oauth(token="old-access-token-xyz"), oauth(token="new-access-token-xyz")),
    )
    result = await run(await fake.start(aiohttp_server))
    assert result.latest().value == 3
    assert [s.headers["Authorization"] for s in fake.requests(EXECUTE)] == [
        "Bearer old-access-token-xyz",
        "Bearer new-access-token-xyz",
    ]


# --- errors ---------------------------------------------------------------------------------------


async def test_no_records_is_an_error(aiohttp_server: Any) -> None:
    with pytest.raises(BackendError, match="no records"):
        await run(await (fake_dql(Reply(succeeded()))).start(aiohttp_server))


async def test_several_records_is_an_error(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"host": "a", "value": 1}, {"host": "b", "value": 2})))
    with pytest.raises(BackendError, match="2 records"):
        await run(await fake.start(aiohttp_server))


async def test_all_null_points_is_an_error(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"timeframe": {}, "interval": "60000000000", "value": [None, None]})))
    with pytest.raises(BackendError, match="null"):
        await run(await fake.start(aiohttp_server))


async def test_an_api_error_body_is_one_line(aiohttp_server: Any) -> None:
    body = {
        "error": {
            "code": 400,
            "message": "PARSE_ERROR: mismatched input 'timeseriess'",
            "details": {"errorType": "PARSE_ERROR", "syntaxErrorPosition": {"start": {"column": 1}}},
        }
    }
    fake = fake_dql(Reply(body, 400))
    with pytest.raises(BackendError, match="HTTP 400: PARSE_ERROR") as info:
        await run(await fake.start(aiohttp_server), "timeseriess x")
    assert_clean(info.value, TOKEN, SECRET_PART, ACCESS)


@pytest.mark.parametrize(
    ("status", "auth", "retryable"), [(403, True, False), (429, False, True), (500, False, True)]
)
async def test_http_failures_are_classified_and_clean(
    aiohttp_server: Any, status: int, auth: bool, retryable: bool
) -> None:
    body = {"error": {"code": status, "message": f"denied for Bearer {ACCESS}"}}
    fake = fake_dql(Reply(body, status))
    with pytest.raises(BackendError) as info:
        await run(await fake.start(aiohttp_server))
    assert (info.value.auth, info.value.retryable) == (auth, retryable)
    assert_clean(info.value, TOKEN, SECRET_PART, ACCESS)


async def test_a_rejected_login_is_an_auth_error_without_the_client_secret(aiohttp_server: Any) -> None:
    fake = fake_dql(
        Reply(succeeded({"value": 1})),
        auth=(Reply({"error": "invalid_client", "error_description": f"bad secret {TOKEN}"}, 400),),
    )
    with pytest.raises(BackendError, match="invalid_client") as info:
        await run(await fake.start(aiohttp_server))
    assert_clean(info.value, TOKEN, SECRET_PART)
    assert fake.requests(EXECUTE) == []


async def test_a_malformed_secret_is_an_auth_error(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"value": 1})))
    target = await fake.start(aiohttp_server)
    with pytest.raises(BackendError, match="not JSON") as info:
        await run(target, secret={"dql": f"token={TOKEN}"})
    assert info.value.auth
    assert_clean(info.value, TOKEN, SECRET_PART)
    with pytest.raises(BackendError, match="prefix"):
        await run(target, token="dt0c01.ABC." + "x" * 64)
    assert fake.seen == []


async def test_malformed_json_is_an_error(aiohttp_server: Any) -> None:
    with pytest.raises(BackendError, match="malformed JSON"):
        await run(await fake_dql(Reply(raw=b"{{")).start(aiohttp_server))


async def test_a_slow_answer_times_out(aiohttp_server: Any) -> None:
    fake = fake_dql(Reply(succeeded({"value": 1}), delay=1.0))
    with pytest.raises(BackendError, match="did not answer in time"):
        await run(await fake.start(aiohttp_server), timeout=0.2)


async def test_tls_with_a_private_ca(
    aiohttp_server: Any, ca: trustme.CA, tls_server_context: ssl.SSLContext
) -> None:
    fake = fake_dql(Reply(succeeded({"value": 2})))
    target = await fake.start(aiohttp_server, ssl=tls_server_context)
    secret = {
        "dql": json.dumps({"token": TOKEN, "authUrl": target + AUTH}),
        "ca.crt": ca.cert_pem.bytes().decode(),
    }
    assert (await run(target, secret=secret)).latest().value == 2
    assert (await run(target, insecure=True)).latest().value == 2
