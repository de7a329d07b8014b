"""Datadog provider against a loopback server speaking /api/v1/query and /api/v2/query/timeseries."""

from __future__ import annotations

import ssl
import time
from typing import Any

import pytest
import trustme

from providers import create_backend
from providers.base import BackendError, QueryResult, Window
from providers.datadog import api_base
from tests.providers.httpfixtures import FakeBackend, Reply, assert_clean, ca, make_config, tls_server_context

__all__ = ["ca", "tls_server_context"]

API_KEY = "0123456789abcdef0123456789abcdef"
APP_KEY = "fedcba9876543210fedcba9876543210fedcba98"
SECRET = {"DD_CLIENT_API_KEY": API_KEY, "DD_CLIENT_APP_KEY": APP_KEY}
V1 = "/api/v1/query"
V2 = "/api/v2/query/timeseries"
QUERY = "avg:system.cpu.user{env:prod}"


def v1_series(points: list[list[Any]], scope: str = "env:prod") -> dict[str, Any]:
    return {
        "metric": "system.cpu.user",
        "display_name": "system.cpu.user",
        "unit": None,
        "pointlist": points,
        "start": points[0][0] if points else 0,
        "end": points[-1][0] if points else 0,
        "interval": 20,
        "length": len(points),
        "aggr": "avg",
        "scope": scope,
        "expression": f"avg:system.cpu.user{{{scope}}}",
        "query_index": 0,
        "tag_set": [],
    }


def v1_answer(*series: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "res_type": "time_series",
        "resp_version": 1,
        "query": QUERY,
        "message": "",
        "from_date": 1_700_000_000_000,
        "to_date": 1_700_000_300_000,
        "group_by": [],
        "series": list(series),
    }


def v2_answer(times: list[int], *rows: list[Any]) -> dict[str, Any]:
    return {
        "data": {
            "type": "timeseries_response",
            "attributes": {
                "series": [
                    {"group_tags": [f"host:h{i}"], "query_index": 0, "unit": None} for i in range(len(rows))
                ],
                "times": times,
                "values": list(rows),
            },
        }
    }


async def run(target: str, query: str = QUERY, window: Window | None = None, **kw: Any) -> QueryResult:
    secret = kw.pop("secret", SECRET)
    provider = create_backend(make_config("datadog", target, secret, **kw))
    try:
        return await provider.query(query, window or Window())
    finally:
        await provider.close()


def test_site_names_become_api_hosts() -> None:
    assert api_base("datadoghq.eu") == "https://api.datadoghq.eu"
    assert api_base("api.us5.datadoghq.com") == "https://api.us5.datadoghq.com"
    assert api_base("https://api.datadoghq.com/") == "https://api.datadoghq.com"


async def test_instant_looks_at_the_last_five_minutes_and_takes_the_newest_point(aiohttp_server: Any) -> None:
    points = [[1_700_000_000_000.0, 0.5], [1_700_000_020_000.0, 0.75], [1_700_000_040_000.0, None]]
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series(points))))
    before = time.time()
    result = await run(await fake.start(aiohttp_server))
    seen = fake.requests(V1)[0]
    assert seen.headers["DD-API-KEY"] == API_KEY
    assert seen.headers["DD-APPLICATION-KEY"] == APP_KEY
    assert seen.query["query"] == QUERY
    assert int(seen.query["to"]) - int(seen.query["from"]) == 300
    assert int(seen.query["to"]) >= int(before)
    assert result.latest().value == 0.75
    assert [s.value for s in result.samples] == [0.5, 0.75]


async def test_range_sets_the_window(aiohttp_server: Any) -> None:
    points = [[1_700_000_000_000.0, 1.0], [1_700_000_600_000.0, 2.0]]
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series(points))))
    result = await run(await fake.start(aiohttp_server), window=Window(range_seconds=3600, end=1_700_003_600))
    assert fake.requests(V1)[0].query["from"] == "1700000000"
    assert fake.requests(V1)[0].query["to"] == "1700003600"
    assert [s.value for s in result.samples] == [1.0, 2.0]


async def test_range_with_step_uses_the_v2_timeseries_api_with_that_interval(aiohttp_server: Any) -> None:
    times = [1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000]
    fake = FakeBackend().on("POST", V2, Reply(v2_answer(times, [3.0, None, 5.0])))
    result = await run(
        await fake.start(aiohttp_server), window=Window(range_seconds=600, step_seconds=60, end=1_700_000_600)
    )
    sent = fake.requests(V2)[0].json()["data"]["attributes"]
    assert sent["interval"] == 60_000
    assert (sent["from"], sent["to"]) == (1_700_000_000_000, 1_700_000_600_000)
    assert sent["queries"] == [{"data_source": "metrics", "query": QUERY, "name": "a"}]
    assert [(s.timestamp, s.value) for s in result.samples] == [
        (1_700_000_000.0, 3.0),
        (1_700_000_120.0, 5.0),
    ]


async def test_no_series_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", V1, Reply(v1_answer()))
    with pytest.raises(BackendError, match="no data"):
        await run(await fake.start(aiohttp_server))


async def test_only_null_points_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series([[1.0, None]]))))
    with pytest.raises(BackendError, match="null"):
        await run(await fake.start(aiohttp_server))


async def test_several_series_is_an_error(aiohttp_server: Any) -> None:
    body = v1_answer(v1_series([[1.0, 1.0]], "host:a"), v1_series([[1.0, 2.0]], "host:b"))
    fake = FakeBackend().on("GET", V1, Reply(body))
    with pytest.raises(BackendError, match=r"2 series \(host:a, host:b\).*by"):
        await run(await fake.start(aiohttp_server), "avg:system.cpu.user{*} by {host}")


async def test_several_series_with_a_step_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", V2, Reply(v2_answer([1, 2], [1.0, 2.0], [3.0, 4.0])))
    with pytest.raises(BackendError, match="2 series"):
        await run(await fake.start(aiohttp_server), window=Window(range_seconds=600, step_seconds=60))


async def test_a_query_error_in_a_200_answer_is_reported(aiohttp_server: Any) -> None:
    fake = FakeBackend().on(
        "GET", V1, Reply({"status": "error", "error": "Error parsing query: unexpected '}'"})
    )
    with pytest.raises(BackendError, match="Error parsing query"):
        await run(await fake.start(aiohttp_server))


@pytest.mark.parametrize(
    ("status", "auth", "retryable"),
    [(400, False, False), (403, True, False), (429, False, True), (500, False, True)],
)
async def test_http_errors_are_one_line_and_never_show_the_keys(
    aiohttp_server: Any, status: int, auth: bool, retryable: bool
) -> None:
    body = {"errors": [f"Forbidden: key {API_KEY} / app key {APP_KEY} rejected"]}
    fake = FakeBackend().on("GET", V1, Reply(body, status))
    with pytest.raises(BackendError) as info:
        await run(await fake.start(aiohttp_server))
    assert f"HTTP {status}: Forbidden" in str(info.value)
    assert (info.value.auth, info.value.retryable) == (auth, retryable)
    assert_clean(info.value, API_KEY, APP_KEY)


async def test_malformed_json_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", V1, Reply(raw=b"{not json"))
    with pytest.raises(BackendError, match="malformed JSON"):
        await run(await fake.start(aiohttp_server))


async def test_a_slow_answer_times_out(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series([[1.0, 1.0]])), delay=1.0))
    with pytest.raises(BackendError, match="did not answer in time"):
        await run(await fake.start(aiohttp_server), timeout=0.2)


async def test_missing_keys_are_an_auth_error_before_any_request(aiohttp_server: Any) -> None:
    fake = FakeBackend()
    with pytest.raises(BackendError, match="DD_CLIENT_APP_KEY") as info:
        await run(await fake.start(aiohttp_server), secret={"DD_CLIENT_API_KEY": API_KEY})
    assert info.value.auth
    assert fake.seen == []
    assert_clean(info.value, API_KEY)


async def test_tls_with_a_private_ca_and_with_insecure_skip_verify(
    aiohttp_server: Any, ca: trustme.CA, tls_server_context: ssl.SSLContext
) -> None:
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series([[1.0, 7.0]]))))
    target = await fake.start(aiohttp_server, ssl=tls_server_context)
    with_ca = {**SECRET, "ca.crt": ca.cert_pem.bytes().decode()}
    assert (await run(target, secret=with_ca)).latest().value == 7.0
    assert (await run(target, insecure=True)).latest().value == 7.0
    with pytest.raises(BackendError, match="TLS verification failed"):
        await run(target)


async def test_a_non_numeric_point_is_a_clear_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", V1, Reply(v1_answer(v1_series([[1.0, "abc"]]))))
    with pytest.raises(BackendError, match="Datadog: value 'abc' is not a number"):
        await run(await fake.start(aiohttp_server))
