"""The Prometheus-family providers against a real Prometheus server."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from metrics_server.fetch import fetch_once
from metrics_server.model import MetricRange
from providers import BackendConfig, BackendError, Window, create_backend
from tests.prometheus_server import PrometheusServer, run_prometheus, tsdb_copy

pytestmark = pytest.mark.prometheus

# An end time on a minute boundary + 30 s: the 10 one-minute steps ending there see 0..9 once.
END = (int(time.time()) // 60) * 60 + 30.0
DIGIT_AT_END = (int(END) // 60) % 10


def config(url: str, ptype: str = "prometheus", **kw: Any) -> BackendConfig:
    return BackendConfig(type=ptype, target_server=url, timeout=kw.pop("timeout", 5.0), **kw)


async def value_of(
    cfg: BackendConfig, query: str, mrange: MetricRange | None = None, end: float | None = None
) -> float:
    client = create_backend(cfg)
    try:
        return (await fetch_once(client, cfg, query, mrange, end=end)).value
    finally:
        await client.close()


async def error_of(cfg: BackendConfig, query: str, mrange: MetricRange | None = None) -> BackendError:
    with pytest.raises(BackendError) as info:
        await value_of(cfg, query, mrange)
    assert "\n" not in info.value.message
    return info.value


# -- instant queries ---------------------------------------------------------------------------


async def test_instant_vector_with_one_series_is_its_value(prometheus: PrometheusServer) -> None:
    assert await value_of(config(prometheus.url), "constant_seven") == 7
    assert await value_of(config(prometheus.url), "sum(rate(http_requests_total[1m]))") == pytest.approx(11)


async def test_instant_scalar_is_its_value(prometheus: PrometheusServer) -> None:
    assert await value_of(config(prometheus.url), "scalar(constant_seven) * 2") == 14


async def test_several_series_are_an_error_that_says_how_to_fix_it(prometheus: PrometheusServer) -> None:
    err = await error_of(config(prometheus.url), "http_requests_total")
    assert "2 series" in err.message and "sum(" in err.message


async def test_no_data_is_an_error_never_zero(prometheus: PrometheusServer) -> None:
    err = await error_of(config(prometheus.url), "does_not_exist")
    assert "no data" in err.message


async def test_nan_and_infinity_are_errors(prometheus: PrometheusServer) -> None:
    assert (
        "non-finite"
        in (await error_of(config(prometheus.url), "constant_seven / 0 - constant_seven / 0")).message
    )
    assert "non-finite" in (await error_of(config(prometheus.url), "constant_seven / 0")).message


async def test_range_vector_in_instant_query_asks_for_a_function(prometheus: PrometheusServer) -> None:
    err = await error_of(config(prometheus.url), "constant_seven[5m]")
    assert "max_over_time" in err.message


async def test_string_result_is_an_error(prometheus: PrometheusServer) -> None:
    assert "string" in (await error_of(config(prometheus.url), '"hello"')).message


async def test_syntax_error_reports_prometheus_message(prometheus: PrometheusServer) -> None:
    err = await error_of(config(prometheus.url), "sum(")
    assert "HTTP 400" in err.message and "bad_data" in err.message


async def test_unreachable_server_is_a_one_line_retryable_error() -> None:
    err = await error_of(config("http://127.0.0.1:9"), "up")
    assert "unreachable" in err.message and err.retryable


# -- ranges ------------------------------------------------------------------------------------


async def test_range_without_step_is_the_newest_sample_not_the_oldest(prometheus: PrometheusServer) -> None:
    got = await value_of(config(prometheus.url), "minute_digit", MetricRange(interval="9m"), end=END)
    assert got == DIGIT_AT_END  # upstream would answer the digit 9 minutes earlier


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("max", 9), ("min", 0), ("avg", 4.5), ("median", 4.5), ("p90", 8), ("p95", 9), ("p99", 9)],
)
async def test_range_with_step_aggregates_every_point(
    prometheus: PrometheusServer, aggregation: str, expected: float
) -> None:
    mrange = MetricRange(interval="9m", step="1m", aggregation=aggregation)
    assert await value_of(config(prometheus.url), "minute_digit", mrange, end=END) == expected


async def test_range_step_sends_start_end_and_step(prometheus: PrometheusServer) -> None:
    client = create_backend(config(prometheus.url))
    try:
        result = await client.query("minute_digit", Window(range_seconds=540, step_seconds=60, end=END))
    finally:
        await client.close()
    assert [s.timestamp for s in result.samples] == [END - 540 + 60 * i for i in range(10)]
    assert sorted(s.value for s in result.samples) == list(range(10))


# -- the Prometheus-compatible family through checking proxies -----------------------------------

Check = Callable[[web.Request, dict[str, str]], Awaitable[web.Response | None]]


async def start_proxy(aiohttp_server: Any, upstream: str, check: Check) -> str:
    """A loopback proxy that checks what a Thanos/Cortex/Mimir frontend would, then forwards."""

    async def handle(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        refusal = await check(request, params)
        if refusal is not None:
            return refusal
        async with aiohttp.ClientSession() as s:
            async with s.post(upstream + request.path, data=params) as r:
                return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


async def test_thanos_asks_for_dedup_and_no_partial_response(
    prometheus: PrometheusServer, aiohttp_server: Any
) -> None:
    async def check(request: web.Request, params: dict[str, str]) -> web.Response | None:
        if params.get("dedup") != "true" or params.get("partial_response") != "false":
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "missing"}, status=400
            )
        return None

    url = await start_proxy(aiohttp_server, prometheus.url, check)
    assert await value_of(config(url, "thanos"), "constant_seven") == 7
    # plain prometheus type does not send Thanos parameters
    err = await error_of(config(url, "prometheus"), "constant_seven")
    assert "missing" in err.message


async def test_cortex_sends_the_tenant_from_the_secret(
    prometheus: PrometheusServer, aiohttp_server: Any
) -> None:
    async def check(request: web.Request, params: dict[str, str]) -> web.Response | None:
        if request.headers.get("X-Scope-OrgID") != "team-a":
            return web.Response(status=401, text="no org id")
        return None

    url = await start_proxy(aiohttp_server, prometheus.url, check)
    assert await value_of(config(url, "cortex", secret={"tenant": b"team-a"}), "constant_seven") == 7
    err = await error_of(config(url, "cortex"), "constant_seven")
    assert "HTTP 401" in err.message and err.auth


async def test_bearer_token_from_secret_and_never_in_errors(
    prometheus: PrometheusServer, aiohttp_server: Any
) -> None:
    token = "tok-0123456789abcdef"

    async def check(request: web.Request, params: dict[str, str]) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(status=403, text=f"bad token {request.headers.get('Authorization')}")
        return None

    url = await start_proxy(aiohttp_server, prometheus.url, check)
    assert await value_of(config(url, secret={"token": token.encode()}), "constant_seven") == 7
    err = await error_of(config(url, secret={"token": b"wrong-token-value"}), "constant_seven")
    assert "wrong-token-value" not in err.message and "HTTP 403" in err.message


async def test_get_fallback_when_post_is_not_allowed(
    prometheus: PrometheusServer, aiohttp_server: Any
) -> None:
    seen: list[str] = []

    async def check(request: web.Request, params: dict[str, str]) -> web.Response | None:
        seen.append(request.method)
        if request.method == "POST":
            return web.Response(status=405, text="method not allowed")
        return None

    url = await start_proxy(aiohttp_server, prometheus.url, check)
    cfg = config(url)
    client = create_backend(cfg)
    try:
        for _ in range(2):
            assert (await fetch_once(client, cfg, "constant_seven", None)).value == 7
    finally:
        await client.close()
    assert seen == ["POST", "GET", "GET"]  # the fallback is remembered


async def test_slow_server_times_out_with_a_clear_error(aiohttp_server: Any) -> None:
    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    server = await aiohttp_server(app)
    err = await error_of(config(f"http://127.0.0.1:{server.port}", timeout=0.2), "up")
    assert "did not answer in time" in err.message and err.retryable


async def test_malformed_answers_are_clear_errors(aiohttp_server: Any) -> None:
    bodies = {
        "/bad-json/api/v1/query": (200, b"{not json"),
        "/no-status/api/v1/query": (200, b'{"data": {}}'),
        "/bad-sample/api/v1/query": (
            200,
            b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}',
        ),
    }

    async def answer(request: web.Request) -> web.Response:
        status, body = bodies[request.path]
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    assert "malformed JSON" in (await error_of(config(base + "/bad-json"), "up")).message
    assert "status success" in (await error_of(config(base + "/no-status"), "up")).message
    assert "not a number" in (await error_of(config(base + "/bad-sample"), "up")).message


# -- TLS and basic auth on a real Prometheus ------------------------------------------------------


@pytest.fixture(scope="module")
def secured_prometheus(prometheus_tsdb: Any, tls_ca: Any) -> Any:
    cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    tsdb = tsdb_copy(prometheus_tsdb)
    cert_file = tsdb.parent / f"{tsdb.name}-cert.pem"
    key_file = tsdb.parent / f"{tsdb.name}-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    web_config = (
        f"tls_server_config:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"
        f"basic_auth_users:\n  keptn: {hashed}\n"
    )
    with run_prometheus(tsdb, web_config=web_config, scheme="https") as server:
        yield server, tls_ca.cert_pem.bytes()


async def test_basic_auth_and_custom_ca(secured_prometheus: Any) -> None:
    server, ca_pem = secured_prometheus
    secret = {"user": b"keptn", "password": b"s3cret-pass", "ca.crt": ca_pem}
    assert await value_of(config(server.url, secret=secret), "constant_seven") == 7


async def test_wrong_password_is_an_auth_error_without_the_password(secured_prometheus: Any) -> None:
    server, ca_pem = secured_prometheus
    secret = {"user": b"keptn", "password": b"not-the-password", "ca.crt": ca_pem}
    err = await error_of(config(server.url, secret=secret), "constant_seven")
    assert err.auth and "HTTP 401" in err.message and "not-the-password" not in err.message


async def test_unknown_ca_fails_and_insecure_skip_tls_verify_is_honoured(secured_prometheus: Any) -> None:
    server, _ = secured_prometheus
    secret = {"user": b"keptn", "password": b"s3cret-pass"}
    err = await error_of(config(server.url, secret=secret), "constant_seven")
    assert "TLS" in err.message or "certificate" in err.message.lower()
    insecure = config(server.url, secret=secret, insecure_skip_tls_verify=True)
    assert await value_of(insecure, "constant_seven") == 7
