"""CloudWatch provider: real aiobotocore against moto's server mode on a loopback port.

Data: ten datapoints of App/Web Latency{Service=api}, one a minute, values 0..9, the newest
at BASE. Windows end at BASE + 60 so moto's period buckets are deterministic.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("aiobotocore")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from aiohttp import web  # noqa: E402

from providers.base import BackendConfig, BackendError, Window  # noqa: E402
from providers.cloudwatch import create, parse_compact, region_and_endpoint, round_period  # noqa: E402

KEY_ID = "AKIAKEPTNTESTKEY0001"
SECRET = "s3cr3t/KeptnTestSecretAccessKey+0123456789"
BASE = int(time.time()) // 60 * 60 - 120
QUERY = "App/Web/Latency{Service=api}:Average"


@pytest.fixture(autouse=True)
def no_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach an instance metadata endpoint or the developer's ~/.aws."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    for i in range(10):
        cw.put_metric_data(Namespace="App/Web", MetricData=[{
            "MetricName": "Latency", "Dimensions": [{"Name": "Service", "Value": "api"}],
            "Timestamp": BASE - (9 - i) * 60, "Value": float(i)}])
        cw.put_metric_data(Namespace="App/Web", MetricData=[{
            "MetricName": "Errors", "Dimensions": [{"Name": "Service", "Value": "api"}],
            "Timestamp": BASE - (9 - i) * 60, "Value": 100.0 + i}])
    yield url
    server.stop()


def config(target: str, **secret: str) -> BackendConfig:
    data = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    data.update(secret)
    return BackendConfig(type="cloudwatch", target_server=target, timeout=5,
                          secret={k: v.encode() for k, v in data.items()}, name="ns/aws")


@pytest.fixture
async def provider(moto_url: str) -> AsyncIterator:
    p = create(config(moto_url))
    yield p
    await p.close()


# --- windows ---------------------------------------------------------------------------

async def test_instant_query_yields_the_newest_datapoint(provider) -> None:
    result = await provider.query(QUERY, Window(end=BASE + 60))
    assert result.latest().value == 9.0
    assert result.latest().timestamp <= BASE + 60
    assert b'"Label"' in result.raw


async def test_range_without_step_is_the_statistic_over_the_whole_range(provider) -> None:
    result = await provider.query(QUERY, Window(range_seconds=600, end=BASE + 60))
    assert [s.value for s in result.samples] == [4.5]


async def test_range_with_step_sets_the_period(provider) -> None:
    result = await provider.query(QUERY, Window(range_seconds=600, step_seconds=120, end=BASE + 60))
    assert [s.value for s in result.samples] == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert [s.timestamp for s in result.samples] == sorted(s.timestamp for s in result.samples)


async def test_statistic_in_the_compact_form(provider) -> None:
    result = await provider.query("App/Web/Latency{Service=api}:Maximum",
                                  Window(range_seconds=600, end=BASE + 60))
    assert result.latest().value == 9.0


async def test_json_metric_data_queries_with_one_returned_series(provider) -> None:
    query = """[
      {"Id": "lat", "MetricStat": {"Metric": {"Namespace": "App/Web", "MetricName": "Latency",
         "Dimensions": [{"Name": "Service", "Value": "api"}]}, "Stat": "Sum"}, "ReturnData": false},
      {"Id": "err", "MetricStat": {"Metric": {"Namespace": "App/Web", "MetricName": "Errors",
         "Dimensions": [{"Name": "Service", "Value": "api"}]}, "Stat": "Minimum"}}
    ]"""
    result = await provider.query(query, Window(range_seconds=600, end=BASE + 60))
    assert result.latest().value == 100.0


async def test_single_json_object_is_accepted(provider) -> None:
    query = ('{"MetricStat": {"Metric": {"Namespace": "App/Web", "MetricName": "Errors", '
             '"Dimensions": [{"Name": "Service", "Value": "api"}]}, "Stat": "Average", "Period": 60}}')
    result = await provider.query(query, Window(end=BASE + 60))
    assert result.latest().value == 109.0


# --- errors ----------------------------------------------------------------------------

async def test_no_datapoints_is_an_error_not_zero(provider) -> None:
    with pytest.raises(BackendError, match="no datapoints"):
        await provider.query("App/Web/Latency{Service=nothing}:Average", Window(end=BASE + 60))


async def test_several_returned_series_is_an_error(provider) -> None:
    query = """[
      {"Id": "a", "MetricStat": {"Metric": {"Namespace": "App/Web", "MetricName": "Latency",
         "Dimensions": [{"Name": "Service", "Value": "api"}]}, "Stat": "Sum"}},
      {"Id": "b", "MetricStat": {"Metric": {"Namespace": "App/Web", "MetricName": "Errors",
         "Dimensions": [{"Name": "Service", "Value": "api"}]}, "Stat": "Sum"}}
    ]"""
    with pytest.raises(BackendError, match="2 series"):
        await provider.query(query, Window(end=BASE + 60))


@pytest.mark.parametrize("query", ["", "NoSlash", '{"Id": "x"}', "[1, 2]", "{not json"])
async def test_bad_queries_are_rejected_before_any_request(provider, query: str) -> None:
    with pytest.raises(BackendError) as info:
        await provider.query(query, Window())
    assert "\n" not in info.value.message


async def test_rejected_credentials_are_an_auth_error_without_the_secret(moto_url: str) -> None:
    def set_auth(count: str) -> None:
        req = urllib.request.Request(f"{moto_url}/moto-api/reset-auth", data=count.encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=5).read()

    set_auth("0")  # moto now checks every request's access key against its IAM users
    p = create(config(moto_url))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(QUERY, Window(end=BASE + 60))
    finally:
        set_auth("inf")
        await p.close()
    assert info.value.auth
    assert "InvalidClientTokenId" in info.value.message
    assert KEY_ID not in info.value.message and SECRET not in info.value.message


async def test_missing_credentials_are_an_auth_error(moto_url: str) -> None:
    p = create(BackendConfig(type="cloudwatch", target_server=moto_url, timeout=5))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(QUERY, Window())
    finally:
        await p.close()
    assert info.value.auth and "credentials" in info.value.message


def test_half_a_key_pair_is_rejected_at_creation() -> None:
    with pytest.raises(BackendError, match="both"):
        create(BackendConfig(type="cloudwatch", target_server="us-east-1",
                              secret={"AWS_ACCESS_KEY_ID": KEY_ID.encode()}))


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_a_slow_endpoint_times_out_as_retryable() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(status=200)

    runner, url = await _serve(slow)
    p = create(BackendConfig(type="cloudwatch", target_server=url, timeout=0.3,
                              secret=config(url).secret))
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            await p.query(QUERY, Window())
        assert time.monotonic() - started < 1.2
    finally:
        await p.close()
        await runner.cleanup()
    assert info.value.retryable and "in time" in info.value.message


async def test_server_errors_are_retryable() -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="")

    runner, url = await _serve(unavailable)
    p = create(config(url))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(QUERY, Window())
    finally:
        await p.close()
        await runner.cleanup()
    assert info.value.retryable and not info.value.auth


# --- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "secret_region", "expected"),
    [
        ("eu-west-1", None, ("eu-west-1", None)),
        ("https://monitoring.ap-south-1.amazonaws.com", None,
         ("ap-south-1", "https://monitoring.ap-south-1.amazonaws.com")),
        ("http://127.0.0.1:5000", "eu-central-1", ("eu-central-1", "http://127.0.0.1:5000")),
        ("http://127.0.0.1:5000/", None, ("us-east-1", "http://127.0.0.1:5000")),
        ("default", "us-west-2", ("us-west-2", None)),
        ("", None, (None, None)),
    ],
)
def test_target_server_gives_region_and_endpoint(target: str, secret_region: str | None, expected) -> None:
    secret = {"AWS_REGION": secret_region.encode()} if secret_region else {}
    cfg = BackendConfig(type="cloudwatch", target_server=target, secret=secret)
    assert region_and_endpoint(cfg) == expected


def test_compact_form() -> None:
    query = "AWS/ApplicationELB/RequestCount{LoadBalancer=app/web/123, AvailabilityZone=a}:p99"
    assert parse_compact(query) == {
        "Id": "q0",
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "RequestCount",
                "Dimensions": [{"Name": "LoadBalancer", "Value": "app/web/123"},
                               {"Name": "AvailabilityZone", "Value": "a"}],
            },
            "Stat": "p99",
        },
    }
    assert parse_compact("Custom/Queue/Depth")["MetricStat"]["Stat"] == "Average"


@pytest.mark.parametrize(("seconds", "period"), [(1, 1), (7, 10), (30, 30), (45, 60), (60, 60), (61, 120),
                                                  (300, 300), (0, 60)])
def test_periods_are_rounded_up_to_what_cloudwatch_accepts(seconds: float, period: int) -> None:
    assert round_period(seconds) == period
