"""Elasticsearch provider against a loopback server answering `_search` in Elasticsearch's format."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import pytest
import trustme

from providers import create_backend
from providers.base import BackendError, QueryResult, Window
from tests.providers.httpfixtures import FakeBackend, Reply, assert_clean, ca, make_config, tls_server_context

__all__ = ["ca", "tls_server_context"]

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
PASSWORD = "correct-horse-battery-staple"
SEARCH = "/_search"


def search_answer(
    total: int = 42, aggregations: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "took": 5,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": None, "hits": []},
    }
    if aggregations is not None:
        answer["aggregations"] = aggregations
    answer.update(extra)
    return answer


async def run(target: str, query: Any, window: Window | None = None, **kw: Any) -> QueryResult:
    secret = kw.pop("secret", {"apiKey": API_KEY})
    kw.setdefault("key", "apiKey")
    provider = create_backend(make_config("elastic", target, secret, **kw))
    try:
        return await provider.query(
            query if isinstance(query, str) else json.dumps(query), window or Window()
        )
    finally:
        await provider.close()


async def test_a_query_clause_counts_matching_documents_in_the_last_30_minutes(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(total=17)))
    result = await run(await fake.start(aiohttp_server), {"match": {"service.name": "checkout"}})
    seen = fake.requests(SEARCH)[0]
    assert seen.headers["Authorization"] == f"ApiKey {API_KEY}"
    sent = seen.json()
    assert sent["size"] == 0 and sent["track_total_hits"] is True
    clause, time_range = sent["query"]["bool"]["filter"]
    assert clause == {"match": {"service.name": "checkout"}}
    assert set(time_range["range"]["@timestamp"]) == {"gte", "lte", "format"}
    assert [s.value for s in result.samples] == [17.0]


async def test_a_search_body_with_one_aggregation_reads_its_value(aiohttp_server: Any) -> None:
    fake = FakeBackend().on(
        "POST", SEARCH, Reply(search_answer(aggregations={"avg_latency": {"value": 123.5}}))
    )
    body = {"query": {"term": {"env": "prod"}}, "aggs": {"avg_latency": {"avg": {"field": "latency"}}}}
    result = await run(
        await fake.start(aiohttp_server), body, window=Window(range_seconds=600, end=1_700_000_600)
    )
    sent = fake.requests(SEARCH)[0].json()
    assert sent["aggs"] == body["aggs"]
    assert sent["query"]["bool"]["filter"][1]["range"]["@timestamp"]["gte"] == "2023-11-14T22:13:20Z"
    assert sent["query"]["bool"]["filter"][1]["range"]["@timestamp"]["lte"] == "2023-11-14T22:23:20Z"
    assert result.latest().value == 123.5
    assert result.latest().timestamp == 1_700_000_600


async def test_value_path_index_and_time_field_come_from_the_keptn_key(aiohttp_server: Any) -> None:
    aggs = {"latency": {"values": {"50.0": 80.0, "95.0": 250.0}}, "count": {"value": 9}}
    fake = FakeBackend().on("POST", "/logs-web,logs-api/_search", Reply(search_answer(aggregations=aggs)))
    body = {
        "aggs": {
            "latency": {"percentiles": {"field": "ms", "percents": [50, 95]}},
            "count": {"value_count": {"field": "ms"}},
        },
        "keptn": {
            "valuePath": "aggregations.latency.values.95\\.0",
            "index": "logs-web,logs-api",
            "timeField": "ts",
        },
    }
    result = await run(await fake.start(aiohttp_server), body)
    sent = fake.requests("/logs-web,logs-api/_search")[0].json()
    assert "keptn" not in sent
    assert "ts" in sent["query"]["bool"]["filter"][0]["range"]
    assert result.latest().value == 250.0


async def test_a_null_time_field_adds_no_time_filter(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(total=3)))
    await run(await fake.start(aiohttp_server), {"query": {"match_all": {}}, "keptn": {"timeField": None}})
    assert fake.requests(SEARCH)[0].json()["query"] == {"match_all": {}}


async def test_range_with_step_nests_the_aggregation_in_a_date_histogram(aiohttp_server: Any) -> None:
    buckets = [
        {
            "key_as_string": "2023-11-14T22:13:00.000Z",
            "key": 1_699_999_980_000,
            "doc_count": 4,
            "avg_latency": {"value": 10.0},
        },
        {
            "key_as_string": "2023-11-14T22:14:00.000Z",
            "key": 1_700_000_040_000,
            "doc_count": 0,
            "avg_latency": {"value": None},
        },
        {
            "key_as_string": "2023-11-14T22:15:00.000Z",
            "key": 1_700_000_100_000,
            "doc_count": 2,
            "avg_latency": {"value": 30.0},
        },
    ]
    fake = FakeBackend().on(
        "POST", SEARCH, Reply(search_answer(aggregations={"keptn_steps": {"buckets": buckets}}))
    )
    body = {"aggs": {"avg_latency": {"avg": {"field": "latency"}}}}
    window = Window(range_seconds=300, step_seconds=60, end=1_700_000_300)
    result = await run(await fake.start(aiohttp_server), body, window=window)
    histogram = fake.requests(SEARCH)[0].json()["aggs"]["keptn_steps"]
    assert histogram["date_histogram"]["fixed_interval"] == "1m"
    assert histogram["date_histogram"]["extended_bounds"] == {
        "min": 1_700_000_000_000,
        "max": 1_700_000_300_000,
    }
    assert histogram["aggs"] == body["aggs"]
    assert [(s.timestamp, s.value) for s in result.samples] == [
        (1_699_999_980.0, 10.0),
        (1_700_000_100.0, 30.0),
    ]


async def test_a_counting_query_with_a_step_counts_per_bucket(aiohttp_server: Any) -> None:
    buckets = [{"key": 1_700_000_000_000, "doc_count": 5}, {"key": 1_700_000_060_000, "doc_count": 0}]
    fake = FakeBackend().on(
        "POST", SEARCH, Reply(search_answer(aggregations={"keptn_steps": {"buckets": buckets}}))
    )
    result = await run(
        await fake.start(aiohttp_server), {"match_all": {}}, window=Window(range_seconds=120, step_seconds=60)
    )
    assert [s.value for s in result.samples] == [5.0, 0.0]


async def test_basic_auth_from_user_and_password(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer()))
    await run(
        await fake.start(aiohttp_server),
        {"match_all": {}},
        secret={"user": "elastic", "password": PASSWORD},
        key="",
    )
    expected = base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    assert fake.requests(SEARCH)[0].headers["Authorization"] == f"Basic {expected}"


# --- errors ---------------------------------------------------------------------------------------


async def test_several_aggregations_need_a_value_path(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer()))
    with pytest.raises(BackendError, match=r"several aggregations \(a, b\).*valuePath"):
        await run(
            await fake.start(aiohttp_server),
            {"aggs": {"a": {"avg": {"field": "x"}}, "b": {"max": {"field": "x"}}}},
        )
    assert fake.seen == []


async def test_a_null_aggregation_value_is_an_error_not_zero(aiohttp_server: Any) -> None:
    fake = FakeBackend().on(
        "POST", SEARCH, Reply(search_answer(total=0, aggregations={"avg": {"value": None}}))
    )
    with pytest.raises(BackendError, match="no data"):
        await run(await fake.start(aiohttp_server), {"aggs": {"avg": {"avg": {"field": "x"}}}})


async def test_a_path_yielding_several_values_is_an_error(aiohttp_server: Any) -> None:
    aggs = {"by_host": {"buckets": [{"key": "a", "doc_count": 1}, {"key": "b", "doc_count": 2}]}}
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(aggregations=aggs)))
    body = {
        "aggs": {"by_host": {"terms": {"field": "host"}}},
        "keptn": {"valuePath": "aggregations.by_host.buckets.#.doc_count"},
    }
    with pytest.raises(BackendError, match="yields 2 values"):
        await run(await fake.start(aiohttp_server), body)


async def test_a_missing_aggregation_names_the_path(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(aggregations={"other": {"value": 1}})))
    with pytest.raises(BackendError, match="no key 'avg'"):
        await run(await fake.start(aiohttp_server), {"aggs": {"avg": {"avg": {"field": "x"}}}})


async def test_the_query_must_be_json(aiohttp_server: Any) -> None:
    with pytest.raises(BackendError, match="JSON object"):
        await run(await FakeBackend().start(aiohttp_server), "service:checkout AND status:500")


async def test_an_elasticsearch_error_body_is_one_line_and_clean(aiohttp_server: Any) -> None:
    body = {
        "error": {
            "root_cause": [
                {"type": "parsing_exception", "reason": "unknown query [matc]", "line": 1, "col": 30}
            ],
            "type": "parsing_exception",
            "reason": f"unknown query [matc] with key {API_KEY}",
            "line": 1,
            "col": 30,
        },
        "status": 400,
    }
    fake = FakeBackend().on("POST", SEARCH, Reply(body, 400))
    with pytest.raises(BackendError, match="HTTP 400: parsing_exception: unknown query") as info:
        await run(await fake.start(aiohttp_server), {"matc": {}})
    assert_clean(info.value, API_KEY)


@pytest.mark.parametrize(
    ("status", "auth", "retryable"),
    [(401, True, False), (403, True, False), (429, False, True), (503, False, True)],
)
async def test_http_failures_are_classified(
    aiohttp_server: Any, status: int, auth: bool, retryable: bool
) -> None:
    body = {
        "error": {
            "type": "security_exception",
            "reason": f"unable to authenticate user [elastic] with {PASSWORD}",
        },
        "status": status,
    }
    fake = FakeBackend().on("POST", SEARCH, Reply(body, status))
    with pytest.raises(BackendError) as info:
        await run(
            await fake.start(aiohttp_server),
            {"match_all": {}},
            secret={"user": "elastic", "password": PASSWORD},
            key="",
        )
    assert (info.value.auth, info.value.retryable) == (auth, retryable)
    assert_clean(info.value, PASSWORD)


async def test_partial_results_are_errors(aiohttp_server: Any) -> None:
    answer = search_answer(_shards={"total": 3, "successful": 2, "skipped": 0, "failed": 1})
    fake = FakeBackend().on("POST", SEARCH, Reply(answer))
    with pytest.raises(BackendError, match="1 shard"):
        await run(await fake.start(aiohttp_server), {"match_all": {}})


async def test_malformed_json_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(raw=b'{"hits": '))
    with pytest.raises(BackendError, match="malformed JSON"):
        await run(await fake.start(aiohttp_server), {"match_all": {}})


async def test_a_slow_answer_times_out(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(), delay=1.0))
    with pytest.raises(BackendError, match="did not answer in time"):
        await run(await fake.start(aiohttp_server), {"match_all": {}}, timeout=0.2)


async def test_tls_with_a_private_ca_and_insecure_skip_verify(
    aiohttp_server: Any, ca: trustme.CA, tls_server_context: ssl.SSLContext
) -> None:
    fake = FakeBackend().on("POST", SEARCH, Reply(search_answer(total=8)))
    target = await fake.start(aiohttp_server, ssl=tls_server_context)
    secret = {"apiKey": API_KEY, "ca.crt": ca.cert_pem.bytes().decode()}
    assert (await run(target, {"match_all": {}}, secret=secret)).latest().value == 8
    assert (await run(target, {"match_all": {}}, insecure=True)).latest().value == 8
    with pytest.raises(BackendError, match="TLS verification failed"):
        await run(target, {"match_all": {}})
