"""Generic HTTP/JSON provider (type `http`) and its JSON path, against a loopback server."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import pytest
import trustme

from providers import create_backend, jsonpath
from providers.base import BackendError, QueryResult, Window
from tests.providers.httpfixtures import FakeBackend, Reply, assert_clean, ca, make_config, tls_server_context

__all__ = ["ca", "tls_server_context"]

TOKEN = "s3cr3t-bearer-token-value"
PASSWORD = "hunter2-but-longer"
STATS = {
    "components": {"worker": {"tasks": 17, "queue.depth": "4.5"}},
    "history": [
        {"ts": 1_700_000_000, "v": 1.0},
        {"ts": 1_700_000_060, "v": None},
        {"ts": 1_700_000_120, "v": 3.0},
    ],
    "pairs": [[1_700_000_000_000, "2"], [1_700_000_060_000, "4"]],
}


async def run(target: str, query: Any, window: Window | None = None, **kw: Any) -> QueryResult:
    secret = kw.pop("secret", {})
    provider = create_backend(make_config("http", target, secret, **kw))
    try:
        return await provider.query(
            query if isinstance(query, str) else json.dumps(query), window or Window()
        )
    finally:
        await provider.close()


# --- the path language ----------------------------------------------------------------------------


def test_paths_follow_the_gjson_subset() -> None:
    doc = {"a": {"b.c": [10, 20, {"d": 5}]}, "items": [{"n": 1}, {"n": 2}], "$x": 1}
    assert jsonpath.select(doc, "a.b\\.c.1") == 20
    assert jsonpath.select(doc, "a['b.c'][2].d") == 5
    assert jsonpath.select(doc, "$.a['b.c'][-1].d") == 5
    assert jsonpath.select(doc, "items.#.n") == [1, 2]
    assert jsonpath.select(doc, "items[*].n") == [1, 2]
    assert jsonpath.select(doc, "items.#") == 2
    with pytest.raises(BackendError, match=r"no key 'nope' at 'a' \(keys: b\.c\)"):
        jsonpath.select(doc, "a.nope")
    with pytest.raises(BackendError, match="index 9 out of range"):
        jsonpath.select(doc, "items.9")


# --- query forms ----------------------------------------------------------------------------------


async def test_compact_form_suffix_and_value_path(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/api/stats", Reply(STATS))
    result = await run(await fake.start(aiohttp_server) + "/api", "/stats|components.worker.tasks")
    assert result.latest().value == 17
    assert fake.requests("/api/stats")[0].headers["Accept"] == "application/json"


async def test_a_numeric_string_with_an_escaped_dot(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply(STATS))
    result = await run(await fake.start(aiohttp_server), "|components.worker.queue\\.depth")
    assert result.latest().value == 4.5


async def test_a_bare_number_needs_no_path(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/queue/depth", Reply(raw=b"42\n"))
    assert (await run(await fake.start(aiohttp_server), "/queue/depth")).latest().value == 42


async def test_json_form_with_method_headers_body_and_window_placeholders(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("POST", "/query", Reply({"data": {"value": 9.25}}))
    query = {
        "url": "/query?from=${start}&to=${end}",
        "method": "POST",
        "headers": {"X-Tenant": "team-a"},
        "body": {"window": "${range}s", "step": "${step}", "since": "${start_iso}"},
        "valuePath": "data.value",
    }
    window = Window(range_seconds=300, step_seconds=60, end=1_700_000_300)
    result = await run(await fake.start(aiohttp_server), query, window=window)
    seen = fake.requests("/query")[0]
    assert seen.query == {"from": "1700000000", "to": "1700000300"}
    assert seen.headers["X-Tenant"] == "team-a"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {"window": "300s", "step": "60", "since": "2023-11-14T22:13:20Z"}
    assert result.latest().value == 9.25


async def test_an_array_with_timestamps_is_one_series(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply(STATS))
    query = {"valuePath": "history.#.v", "timestampPath": "history.#.ts"}
    result = await run(
        await fake.start(aiohttp_server), query, window=Window(range_seconds=300, step_seconds=60)
    )
    assert [(s.timestamp, s.value) for s in result.samples] == [(1_700_000_000, 1.0), (1_700_000_120, 3.0)]


async def test_timestamp_value_pairs_in_milliseconds(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply(STATS))
    result = await run(await fake.start(aiohttp_server), "|pairs")
    assert [(s.timestamp, s.value) for s in result.samples] == [
        (1_700_000_000.0, 2.0),
        (1_700_000_060.0, 4.0),
    ]


async def test_an_array_without_timestamps_ends_at_the_window_end_spaced_by_the_step(
    aiohttp_server: Any,
) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"points": [5, 6, 7]}))
    window = Window(range_seconds=120, step_seconds=60, end=1_700_000_120)
    result = await run(await fake.start(aiohttp_server), "|points", window=window)
    assert [(s.timestamp, s.value) for s in result.samples] == [
        (1_700_000_000, 5),
        (1_700_000_060, 6),
        (1_700_000_120, 7),
    ]
    assert result.latest().value == 7


async def test_an_absolute_url_to_another_host_is_refused(aiohttp_server: Any) -> None:
    fake = FakeBackend()
    target = await fake.start(aiohttp_server)
    with pytest.raises(BackendError, match="must stay on targetServer"):
        await run(target, {"url": "http://attacker.example/steal", "valuePath": "v"}, secret={"token": TOKEN})
    assert fake.seen == []


# --- auth from the Secret -------------------------------------------------------------------------


async def test_bearer_token_and_extra_headers_from_the_secret(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 1}))
    await run(
        await fake.start(aiohttp_server), "|v", secret={"token": TOKEN, "header.X-Api-Key": "key-123456"}
    )
    headers = fake.requests("/")[0].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Api-Key"] == "key-123456"


async def test_the_secret_key_ref_value_is_a_bearer_token(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 1}))
    await run(await fake.start(aiohttp_server), "|v", secret={"apiToken": TOKEN}, key="apiToken")
    assert fake.requests("/")[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_basic_auth_from_user_and_password(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 1}))
    await run(await fake.start(aiohttp_server), "|v", secret={"user": "metrics", "password": PASSWORD})
    expected = base64.b64encode(f"metrics:{PASSWORD}".encode()).decode()
    assert fake.requests("/")[0].headers["Authorization"] == f"Basic {expected}"


# --- errors ---------------------------------------------------------------------------------------


async def test_null_and_empty_values_are_errors(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": None, "list": [], "nulls": [None]}))
    target = await fake.start(aiohttp_server)
    for path in ("v", "list", "nulls"):
        with pytest.raises(BackendError, match="no data"):
            await run(target, f"|{path}")


async def test_objects_and_booleans_are_not_numbers(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"obj": {"a": 1}, "flag": True, "word": "high"}))
    target = await fake.start(aiohttp_server)
    with pytest.raises(BackendError, match="object"):
        await run(target, "|obj")
    with pytest.raises(BackendError, match="boolean"):
        await run(target, "|flag")
    with pytest.raises(BackendError, match="not a number"):
        await run(target, "|word")


async def test_a_json_document_without_a_path_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 1}))
    with pytest.raises(BackendError, match="give a valuePath"):
        await run(await fake.start(aiohttp_server), "")


async def test_a_missing_key_names_the_path(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply(STATS))
    with pytest.raises(BackendError, match="no key 'workers'"):
        await run(await fake.start(aiohttp_server), "|components.workers.tasks")


@pytest.mark.parametrize(
    ("status", "auth", "retryable"),
    [(401, True, False), (403, True, False), (404, False, False), (429, False, True), (500, False, True)],
)
async def test_http_failures_are_classified_and_clean(
    aiohttp_server: Any, status: int, auth: bool, retryable: bool
) -> None:
    fake = FakeBackend().on(
        "GET", "/", Reply(raw=f"denied\nAuthorization: Bearer {TOKEN}".encode(), status=status)
    )
    with pytest.raises(BackendError) as info:
        await run(await fake.start(aiohttp_server), "|v", secret={"token": TOKEN})
    assert f"HTTP {status}" in str(info.value)
    assert (info.value.auth, info.value.retryable) == (auth, retryable)
    assert_clean(info.value, TOKEN)


async def test_malformed_json_is_an_error(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply(raw=b'{"v": '))
    with pytest.raises(BackendError, match="malformed JSON"):
        await run(await fake.start(aiohttp_server), "|v")


async def test_a_malformed_json_query_is_an_error() -> None:
    with pytest.raises(BackendError, match="not valid JSON"):
        await run("http://127.0.0.1:9", "{url: /x}")


async def test_a_slow_answer_times_out(aiohttp_server: Any) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 1}, delay=1.0))
    with pytest.raises(BackendError, match="did not answer in time"):
        await run(await fake.start(aiohttp_server), "|v", timeout=0.2)


async def test_tls_with_a_private_ca_and_insecure_skip_verify(
    aiohttp_server: Any, ca: trustme.CA, tls_server_context: ssl.SSLContext
) -> None:
    fake = FakeBackend().on("GET", "/", Reply({"v": 5}))
    target = await fake.start(aiohttp_server, ssl=tls_server_context)
    assert (await run(target, "|v", secret={"ca.crt": ca.cert_pem.bytes().decode()})).latest().value == 5
    assert (await run(target, "|v", insecure=True)).latest().value == 5
    with pytest.raises(BackendError, match="TLS verification failed"):
        await run(target, "|v")
