"""`keptn-metrics query` end to end: every provider type against its local server, through the CLI.

Each test starts the provider's loopback server exactly as that provider's own tests do
(same fakes and fixtures), then runs `python -m metrics_server query ...` as a user would:
instant, range (`--interval`) and range+step (`--step --aggregation`) must print the right
value and exit 0; one edge case must exit 1 with exactly one `error: ` line on stderr that
shows no secret value.

The servers run in the test's event loop, so the CLI runs as an asyncio subprocess.
The subprocess gets an environment without cloud credentials, proxies or metadata lookups,
so nothing can leave the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.providers import test_datadog as dd
from tests.providers import test_dql as dql
from tests.providers import test_dynatrace as dt
from tests.providers import test_elastic as es
from tests.providers import test_http_json as hj
from tests.providers.httpfixtures import FakeBackend, Reply

try:  # cloud extras are optional: without them only their tests skip
    from tests.providers import test_cloudwatch as cw
except pytest.skip.Exception:
    cw = None  # type: ignore[assignment]
try:
    from tests.providers import test_google as gcp
    from tests.providers.test_google import fake as google_server
except pytest.skip.Exception:
    gcp = None  # type: ignore[assignment]
try:
    from tests.providers import test_azure as az
    from tests.providers.test_azure import azure, ca
except pytest.skip.Exception:
    az = None  # type: ignore[assignment]

__all__ = ["azure", "ca", "google_server"]

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 30.0
_SCRUBBED_ENV = re.compile(
    r"^(AWS_|AZURE_|GOOGLE_|GCLOUD_|CLOUDSDK_|MSI_|IDENTITY_|IMDS_|KEPTN_)|^(HTTPS?|ALL|NO)_PROXY$",
    re.IGNORECASE,
)


def cli_env() -> dict[str, str]:
    """The caller's environment minus anything that could reach a cloud or a proxy."""
    env = {k: v for k, v in os.environ.items() if not _SCRUBBED_ENV.search(k)}
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_GCE_CHECK": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


@dataclass
class Run:
    code: int
    out: str
    err: str


async def keptn_query(*args: str) -> Run:
    """`keptn-metrics query ARGS...` in a subprocess, awaited without blocking the servers' loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "metrics_server",
        "query",
        *args,
        cwd=ROOT,
        env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"keptn-metrics query {' '.join(args)} did not finish") from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def secret_file(tmp_path: Path, data: dict[str, str], name: str = "secret.yaml") -> str:
    path = tmp_path / name
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": data}
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def value_of(run: Run) -> str:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    assert run.err == "", run.err
    return run.out.strip()


def json_value_of(run: Run) -> dict[str, Any]:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    assert run.err == "", run.err
    doc: dict[str, Any] = json.loads(run.out)
    assert set(doc) == {"value", "rawValue", "timestamp"}
    assert doc["rawValue"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["timestamp"])
    return doc


def one_line_error(run: Run, match: str, *secrets: str) -> str:
    """Exit 1, nothing on stdout, exactly one `error: ` line on stderr, no credential in it."""
    assert run.code == 1, f"exit {run.code}: out={run.out!r} err={run.err!r}"
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    line = lines[0]
    assert line.startswith("error: "), line
    assert re.search(match, line), line
    for secret in secrets:
        assert secret not in run.err, f"credential leaked into: {line}"
    return line


def time_of(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- Dynatrace metrics v2 ----------------------------------------------------------------------------


async def test_dynatrace(aiohttp_server: Any, tmp_path: Path) -> None:
    fake = dt.FakeDynatrace()
    target = await dt.start(aiohttp_server, fake)
    base = [
        "--provider-type", "dynatrace", "--target-server", target,
        "--secret-file", secret_file(tmp_path, {"apiToken": dt.TOKEN}), "--secret-key", "apiToken",
    ]  # fmt: skip
    selector = "builtin:service.response.time:avg"

    fake.body = dt.answer(dt.series([1.0, 5.0, None]))
    assert value_of(await keptn_query(*base, selector)) == "5"
    assert fake.requests[-1].headers["Authorization"] == f"Api-Token {dt.TOKEN}"
    assert fake.params == {"metricSelector": selector}

    fake.body = dt.answer(dt.series([42.5]))
    assert (
        json_value_of(await keptn_query(*base, "--interval", "5m", "-o", "json", selector))["value"] == "42.5"
    )
    assert (fake.params["from"], fake.params["resolution"]) == ("now-5m", "Inf")

    fake.body = dt.answer(dt.series([1.0, None, 3.0, 4.0]))
    run = await keptn_query(*base, "--interval", "1h", "--step", "2m", "--aggregation", "median", selector)
    assert value_of(run) == "3"
    assert (fake.params["from"], fake.params["resolution"]) == ("now-1h", "2m")

    fake.body, fake.status = {"error": {"code": 401, "message": f"Token {dt.TOKEN} is not valid"}}, 401
    one_line_error(await keptn_query(*base, selector), r"HTTP 401", dt.TOKEN)


# --- Dynatrace DQL -----------------------------------------------------------------------------------


async def test_dql(aiohttp_server: Any, tmp_path: Path) -> None:
    fake = dql.fake_dql(
        Reply(dql.succeeded(dql.TIMESERIES_RECORD)),  # instant
        Reply(dql.succeeded({"count()": "1234"})),  # range
        Reply(dql.succeeded(dql.TIMESERIES_RECORD)),  # range + step
        Reply(dql.succeeded({"host": "a", "value": 1}, {"host": "b", "value": 2})),  # two records
    )
    target = await fake.start(aiohttp_server)
    creds = {"dql": json.dumps({"token": dql.TOKEN, "authUrl": target + dql.AUTH})}
    base = [
        "--provider-type", "dql", "--target-server", target,
        "--secret-file", secret_file(tmp_path, creds), "--secret-key", "dql",
    ]  # fmt: skip
    timeseries = "timeseries avg(dt.host.cpu.usage)"

    assert value_of(await keptn_query(*base, timeseries)) == "40"
    assert fake.requests(dql.EXECUTE)[-1].headers["Authorization"] == f"Bearer {dql.ACCESS}"
    assert "defaultTimeframeStart" not in fake.requests(dql.EXECUTE)[-1].json()

    run = await keptn_query(*base, "--interval", "10m", "-o", "json", "fetch logs | summarize count()")
    assert json_value_of(run)["value"] == "1234"
    sent = fake.requests(dql.EXECUTE)[-1].json()
    start, end = (time_of(sent[k]) for k in ("defaultTimeframeStart", "defaultTimeframeEnd"))
    assert end - start == 600

    run = await keptn_query(*base, "--interval", "5m", "--step", "1m", "--aggregation", "avg", timeseries)
    assert value_of(run) == "25.125"  # mean of 10, 20.5, 30, 40 (the null is skipped)
    assert fake.requests(dql.EXECUTE)[-1].json()["query"] == timeseries + ", interval: 1m"

    one_line_error(await keptn_query(*base, "fetch x"), r"2 records", dql.TOKEN, dql.SECRET_PART, dql.ACCESS)


# --- Datadog -----------------------------------------------------------------------------------------


async def test_datadog(aiohttp_server: Any, tmp_path: Path) -> None:
    instant = [[1_700_000_000_000.0, 0.5], [1_700_000_020_000.0, 0.75], [1_700_000_040_000.0, None]]
    several = dd.v1_answer(dd.v1_series([[1.0, 1.0]], "host:a"), dd.v1_series([[1.0, 2.0]], "host:b"))
    fake = (
        FakeBackend()
        .on(
            "GET",
            dd.V1,
            Reply(dd.v1_answer(dd.v1_series(instant))),
            Reply(dd.v1_answer(dd.v1_series([[1_700_000_000_000.0, 1.0], [1_700_000_600_000.0, 2.0]]))),
            Reply(several),
        )
        .on("POST", dd.V2, Reply(dd.v2_answer([1, 2, 3], [3.0, None, 5.0])))
    )
    target = await fake.start(aiohttp_server)
    base = [
        "--provider-type", "datadog", "--target-server", target,
        "--secret-file", secret_file(tmp_path, dd.SECRET),
    ]  # fmt: skip

    assert value_of(await keptn_query(*base, dd.QUERY)) == "0.75"
    seen = fake.requests(dd.V1)[-1]
    assert (seen.headers["DD-API-KEY"], seen.headers["DD-APPLICATION-KEY"]) == (dd.API_KEY, dd.APP_KEY)
    assert int(seen.query["to"]) - int(seen.query["from"]) == 300

    assert json_value_of(await keptn_query(*base, "--interval", "1h", "-o", "json", dd.QUERY))["value"] == "2"
    seen = fake.requests(dd.V1)[-1]
    assert int(seen.query["to"]) - int(seen.query["from"]) == 3600

    run = await keptn_query(*base, "--interval", "10m", "--step", "1m", "--aggregation", "min", dd.QUERY)
    assert value_of(run) == "3"
    assert fake.requests(dd.V2)[-1].json()["data"]["attributes"]["interval"] == 60_000

    run = await keptn_query(*base, "avg:system.cpu.user{*} by {host}")
    one_line_error(run, r"2 series \(host:a, host:b\)", dd.API_KEY, dd.APP_KEY)


# --- Elasticsearch -----------------------------------------------------------------------------------


async def test_elastic(aiohttp_server: Any, tmp_path: Path) -> None:
    buckets = [
        {"key": 1_699_999_980_000, "doc_count": 4, "avg_latency": {"value": 10.0}},
        {"key": 1_700_000_040_000, "doc_count": 0, "avg_latency": {"value": None}},
        {"key": 1_700_000_100_000, "doc_count": 2, "avg_latency": {"value": 30.0}},
    ]
    denied = {
        "error": {"type": "security_exception", "reason": f"unable to authenticate api key {es.API_KEY}"},
        "status": 401,
    }
    fake = FakeBackend().on(
        "POST",
        es.SEARCH,
        Reply(es.search_answer(total=17)),
        Reply(es.search_answer(aggregations={"avg_latency": {"value": 123.5}})),
        Reply(es.search_answer(aggregations={"keptn_steps": {"buckets": buckets}})),
        Reply(denied, 401),
    )
    target = await fake.start(aiohttp_server)
    base = [
        "--provider-type", "elastic", "--target-server", target,
        "--secret-file", secret_file(tmp_path, {"apiKey": es.API_KEY}), "--secret-key", "apiKey",
    ]  # fmt: skip
    avg_body = json.dumps({"aggs": {"avg_latency": {"avg": {"field": "latency"}}}})

    assert value_of(await keptn_query(*base, '{"match": {"service.name": "checkout"}}')) == "17"
    assert fake.requests(es.SEARCH)[-1].headers["Authorization"] == f"ApiKey {es.API_KEY}"

    assert (
        json_value_of(await keptn_query(*base, "--interval", "10m", "-o", "json", avg_body))["value"]
        == "123.5"
    )
    bounds = fake.requests(es.SEARCH)[-1].json()["query"]["bool"]["filter"][0]["range"]["@timestamp"]
    assert time_of(bounds["lte"]) - time_of(bounds["gte"]) == 600

    run = await keptn_query(*base, "--interval", "5m", "--step", "1m", "--aggregation", "max", avg_body)
    assert value_of(run) == "30"
    histogram = fake.requests(es.SEARCH)[-1].json()["aggs"]["keptn_steps"]["date_histogram"]
    assert histogram["fixed_interval"] == "1m"

    one_line_error(await keptn_query(*base, '{"match_all": {}}'), r"HTTP 401", es.API_KEY)


# --- generic HTTP/JSON -------------------------------------------------------------------------------


async def test_http(aiohttp_server: Any, tmp_path: Path) -> None:
    denied = Reply(raw=f"denied\nAuthorization: Bearer {hj.TOKEN}".encode(), status=401)
    fake = FakeBackend().on("GET", "/api/stats", Reply(hj.STATS)).on("GET", "/api/denied", denied)
    target = await fake.start(aiohttp_server) + "/api"
    base = [
        "--provider-type", "http", "--target-server", target,
        "--secret-file", secret_file(tmp_path, {"token": hj.TOKEN}),
    ]  # fmt: skip
    history = json.dumps(
        {"url": "/stats?from=${start}&to=${end}", "valuePath": "history.#.v", "timestampPath": "history.#.ts"}
    )

    assert value_of(await keptn_query(*base, "/stats|components.worker.tasks")) == "17"
    assert fake.requests("/api/stats")[-1].headers["Authorization"] == f"Bearer {hj.TOKEN}"

    assert json_value_of(await keptn_query(*base, "--interval", "5m", "-o", "json", history))["value"] == "3"
    seen = fake.requests("/api/stats")[-1].query
    assert int(seen["to"]) - int(seen["from"]) == 300

    run = await keptn_query(*base, "--interval", "5m", "--step", "1m", "--aggregation", "avg", history)
    assert value_of(run) == "2"  # mean of 1 and 3, the null point skipped

    one_line_error(await keptn_query(*base, "/denied|v"), r"HTTP 401", hj.TOKEN)


# --- Amazon CloudWatch (moto server) -----------------------------------------------------------------

needs_aws = pytest.mark.skipif(cw is None, reason="needs the [aws] extra and moto")
CW_NAMESPACE = "CLI/Web"
CW_REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_now() -> Iterator[str]:
    """A moto server as test_cloudwatch starts it, seeded relative to *now*.

    The CLI always asks for windows ending now, so the data must be fresh when this module
    runs (test_cloudwatch's data is dated at its import): CLI/Web/Latency{Service=api} is
    0..9, one a minute, 9 a minute ago. moto keeps one in-process backend per region for
    every server (and ignores the namespace when dimensions are given), so this data lives
    in its own region, apart from test_cloudwatch's us-east-1 data.
    """
    server = cw.moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = cw.boto3.client(
        "cloudwatch",
        endpoint_url=url,
        region_name=CW_REGION,
        aws_access_key_id=cw.KEY_ID,
        aws_secret_access_key=cw.SECRET,
    )
    newest = int(time.time()) // 60 * 60 - 60
    client.put_metric_data(
        Namespace=CW_NAMESPACE,
        MetricData=[
            {
                "MetricName": "Latency",
                "Dimensions": [{"Name": "Service", "Value": "api"}],
                "Timestamp": newest - (9 - i) * 60,
                "Value": float(i),
            }
            for i in range(10)
        ],
    )
    yield url
    server.stop()


@needs_aws
async def test_cloudwatch(moto_now: str, tmp_path: Path) -> None:
    creds = {"AWS_ACCESS_KEY_ID": cw.KEY_ID, "AWS_SECRET_ACCESS_KEY": cw.SECRET, "AWS_REGION": CW_REGION}
    base = [
        "--provider-type",
        "cloudwatch",
        "--target-server",
        moto_now,
        "--secret-file",
        secret_file(tmp_path, creds),
    ]
    average = f"{CW_NAMESPACE}/Latency{{Service=api}}:Average"
    maximum = f"{CW_NAMESPACE}/Latency{{Service=api}}:Maximum"
    instant, whole, stepped, empty = await asyncio.gather(
        keptn_query(*base, average),
        keptn_query(*base, "--interval", "20m", "-o", "json", average),
        keptn_query(*base, "--interval", "20m", "--step", "2m", "--aggregation", "max", maximum),
        keptn_query(*base, f"{CW_NAMESPACE}/Latency{{Service=nothing}}:Average"),
    )
    assert value_of(instant) == "9"
    assert json_value_of(whole)["value"] == "4.5"  # Average over all ten points, one period
    assert value_of(stepped) == "9"
    one_line_error(empty, r"no datapoints", cw.KEY_ID, cw.SECRET)


# --- Google Cloud Monitoring (local grpc.aio server) -------------------------------------------------

needs_gcp = pytest.mark.skipif(gcp is None, reason="needs the [gcp] extra")


@needs_gcp
async def test_google(google_server: tuple[Any, str]) -> None:
    fake, target = google_server
    assert target.startswith("grpc://127.0.0.1:") and target.endswith("/projects/keptn-test")
    base = ["--provider-type", "google", "--target-server", target]
    instant, whole, stepped, several = await asyncio.gather(
        keptn_query(*base, gcp.DEPTH),
        keptn_query(*base, "--interval", "30m", "-o", "json", gcp.DEPTH),
        keptn_query(*base, "--interval", "10m", "--step", "2m", "--aggregation", "avg", gcp.DEPTH),
        keptn_query(*base, 'metric.type="several"'),
    )
    assert value_of(instant) == "9"
    assert json_value_of(whole)["value"] == "9"
    assert value_of(stepped) == "4.5"  # mean of 0..9
    one_line_error(several, r"2 time series.*crossSeriesReducer")
    windows = sorted(
        (
            round(r.interval.end_time.timestamp() - r.interval.start_time.timestamp()),
            r.aggregation.alignment_period.total_seconds() if r.aggregation.alignment_period else 0,
        )
        for r in fake.requests
        if r.filter == gcp.DEPTH
    )
    assert windows == [(600, 0), (600, 120), (1800, 0)]  # instant lookback, range+step, range


# --- Azure Monitor (local HTTPS server, trustme CA) --------------------------------------------------

needs_azure = pytest.mark.skipif(az is None, reason="needs the [azure] extra")


@needs_azure
async def test_azure(azure: tuple[Any, str, str], tmp_path: Path) -> None:
    fake, url, ca_pem = azure
    creds = {
        "AZURE_CLIENT_ID": az.CLIENT_ID,
        "AZURE_CLIENT_SECRET": az.CLIENT_SECRET,
        "AZURE_TENANT_ID": az.TENANT,
        "AZURE_AUTHORITY_HOST": url,  # the local server plays Entra ID's token endpoint
        "ca.crt": ca_pem,
    }
    base = ["--provider-type", "azure", "--target-server", url, "--secret-file", secret_file(tmp_path, creds)]
    wrong = "Wr0ng~secret~value~that~must~not~leak"
    rejected = [
        "--provider-type", "azure", "--target-server", url,
        "--secret-file", secret_file(tmp_path, {**creds, "AZURE_CLIENT_SECRET": wrong}, "wrong.yaml"),
    ]  # fmt: skip
    instant, whole, stepped, empty, refused = await asyncio.gather(
        keptn_query(*base, az.CPU),
        keptn_query(*base, "--interval", "5m", "-o", "json", f"{az.CPU}:Maximum"),
        keptn_query(*base, "--interval", "30m", "--step", "5m", "--aggregation", "max", az.CPU),
        keptn_query(*base, f"metrics:{az.VM}/Empty"),
        keptn_query(*rejected, az.CPU),
    )
    assert value_of(instant) == "9"  # ten full minutes in the 10-minute lookback
    assert json_value_of(whole)["value"] == "0"  # one PT5M grain
    assert value_of(stepped) == "5"  # six PT5M grains, 0..5
    one_line_error(empty, r"no Average values", az.CLIENT_SECRET)
    # the SDK's own request/token logging must not add lines around the error
    one_line_error(refused, r"azure credentials failed: .*AADSTS7000215", wrong, az.CLIENT_SECRET)
    grains = sorted((r.query["interval"], r.query["aggregation"]) for r in fake.metric_requests)
    assert grains == [("PT1M", "Average"), ("PT1M", "Average"), ("PT5M", "Average"), ("PT5M", "Maximum")]
