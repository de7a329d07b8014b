"""Azure Monitor provider: the real aio SDK clients and ClientSecretCredential against a local
HTTPS server (trustme CA) that plays Entra ID's token endpoint, the metrics:getBatch API and
the Log Analytics query API, answering in their documented response formats.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("azure.monitor.querymetrics")
pytest.importorskip("azure.monitor.query")
pytest.importorskip("azure.identity")
trustme = pytest.importorskip("trustme")

from aiohttp import web  # noqa: E402

from providers.azure import create, endpoints, grain, namespace_of, parse_query  # noqa: E402
from providers.base import BackendConfig, BackendError, Window  # noqa: E402

SUB = "12345678-1234-1234-1234-123456789abc"
VM = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
WS = "b5ae8c3e-0000-4d3b-9c1b-000000000001"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "a1b2c3d4-0000-0000-0000-client000001"
CLIENT_SECRET = "Kq8~very.secret.client.secret~value"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.test-access-token.sig"
BASE = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metric_body(resource: str, metric: str, series: list[list[dict[str, Any]]], interval: str) -> dict:
    """One metrics:getBatch answer, shaped as in Azure's documentation."""
    return {
        "values": [
            {
                "cost": 0,
                "timespan": f"{iso(BASE - 600)}/{iso(BASE)}",
                "interval": interval,
                "namespace": "microsoft.compute/virtualmachines",
                "resourceregion": "eastus",
                "resourceid": resource,
                "value": [
                    {
                        "id": f"{resource}/providers/Microsoft.Insights/metrics/{metric}",
                        "type": "Microsoft.Insights/metrics",
                        "name": {"value": metric, "localizedValue": metric},
                        "displayDescription": "",
                        "unit": "Percent",
                        "errorCode": "Success",
                        "timeseries": [{"metadatavalues": [], "data": data} for data in series],
                    }
                ],
            }
        ]
    }


class FakeAzure:
    def __init__(self) -> None:
        self.metric_requests: list[web.Request] = []
        self.logs_bodies: list[dict] = []
        self.token_requests = 0

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("client_secret") != CLIENT_SECRET:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": TOKEN}
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def metrics(self, request: web.Request) -> web.Response:
        self.metric_requests.append(request)
        if not self._authorized(request):
            return web.json_response(
                {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}},
                status=401,
            )
        name = request.query["metricnames"]
        body = await request.json()
        resource = body["resourceids"][0]
        interval = request.query.get("interval", "PT1M")
        if name == "Throttled":
            return web.json_response(
                {"error": {"code": "TooManyRequests", "message": "Rate limit"}}, status=429
            )
        if name == "Slow":
            await asyncio.sleep(1.5)
        if name == "Missing":
            return web.json_response(
                {"error": {"code": "BadRequest", "message": "Failed to find metric configuration"}},
                status=400,
            )
        agg = request.query["aggregation"].lower()
        start = datetime.fromisoformat(request.query["starttime"].replace("Z", "+00:00")).timestamp()
        if name == "Empty":
            series = [[{"timeStamp": iso(start + i * 60)} for i in range(3)]]  # nulls are omitted fields
        elif name == "Split":
            series = [[{"timeStamp": iso(start), agg: 1.0}], [{"timeStamp": iso(start), agg: 2.0}]]
        else:
            # values 0..n-1 per grain, the last grain still empty (as Azure does for the current minute)
            grains = {"PT1M": 60, "PT5M": 300, "PT15M": 900, "PT30M": 1800, "PT1H": 3600}[interval]
            end = datetime.fromisoformat(request.query["endtime"].replace("Z", "+00:00")).timestamp()
            n = int((end - start) // grains)
            series = [
                [{"timeStamp": iso(start + i * grains), agg: float(i)} for i in range(n)]
                + [{"timeStamp": iso(start + n * grains)}]
            ]
        return web.json_response(metric_body(resource, name, series, interval))

    async def logs(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(
                {
                    "error": {
                        "code": "AuthorizationRequiredError",
                        "message": "Valid authentication was not provided",
                    }
                },
                status=403,
            )
        body = await request.json()
        self.logs_bodies.append(body)
        q = body["query"]
        if "BadSyntax" in q:
            return web.json_response(
                {
                    "error": {
                        "code": "BadArgumentError",
                        "message": "The request had some invalid properties",
                        "innererror": {"code": "SyntaxError", "message": "Query could not be parsed"},
                    }
                },
                status=400,
            )
        if "OneRow" in q:
            table = {
                "name": "PrimaryResult",
                "columns": [{"name": "Computer", "type": "string"}, {"name": "count_", "type": "long"}],
                "rows": [["vm1", 42]],
            }
        elif "TwoRows" in q:
            table = {
                "name": "PrimaryResult",
                "columns": [{"name": "Computer", "type": "string"}, {"name": "count_", "type": "long"}],
                "rows": [["vm1", 1], ["vm2", 2]],
            }
        elif "NoRows" in q:
            table = {"name": "PrimaryResult", "columns": [{"name": "count_", "type": "long"}], "rows": []}
        else:  # a binned series
            table = {
                "name": "PrimaryResult",
                "columns": [
                    {"name": "TimeGenerated", "type": "datetime"},
                    {"name": "avg_CounterValue", "type": "real"},
                    {"name": "max_CounterValue", "type": "real"},
                ],
                "rows": [[iso(BASE - 120), 1.5, 3.0], [iso(BASE - 60), 2.5, 4.0], [iso(BASE), None, 5.0]],
            }
        return web.json_response({"tables": [table]})


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
async def azure(ca, tmp_path) -> AsyncIterator[tuple[FakeAzure, str, str]]:
    fake = FakeAzure()
    app = web.Application()
    app.router.add_post(f"/{TENANT}/oauth2/v2.0/token", fake.token)
    app.router.add_post("/subscriptions/{sub}/metrics:getBatch", fake.metrics)
    app.router.add_post("/v1/workspaces/{ws}/query", fake.logs)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"https://127.0.0.1:{port}", ca.cert_pem.bytes().decode()
    await runner.cleanup()


def config(url: str, ca_pem: str, secret: str = CLIENT_SECRET, timeout: float = 5) -> BackendConfig:
    data = {
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_AUTHORITY_HOST": url,
        "ca.crt": ca_pem,
    }
    return BackendConfig(
        type="azure",
        target_server=url,
        secret={k: v.encode() for k, v in data.items()},
        timeout=timeout,
        name="ns/azure",
    )


@pytest.fixture
async def provider(azure):
    p = create(config(azure[1], azure[2]))
    yield p
    await p.close()


CPU = f"metrics:{VM}/Percentage CPU"


# --- metrics ---------------------------------------------------------------------------


async def test_metrics_instant_is_the_newest_non_null_point_at_one_minute(azure, provider) -> None:
    result = await provider.query(CPU, Window(end=BASE))
    assert result.latest().value == 9.0  # ten full minutes in the 10-minute lookback, the open one is null
    sent = azure[0].metric_requests[-1]
    assert sent.query["metricnamespace"] == "Microsoft.Compute/virtualMachines"
    assert sent.query["metricnames"] == "Percentage CPU"
    assert sent.query["aggregation"] == "Average" and sent.query["interval"] == "PT1M"


async def test_metrics_range_without_step_is_one_grain_covering_the_range(azure, provider) -> None:
    result = await provider.query(f"{CPU}:Maximum", Window(range_seconds=300, end=BASE))
    assert azure[0].metric_requests[-1].query["interval"] == "PT5M"
    assert azure[0].metric_requests[-1].query["aggregation"] == "Maximum"
    assert [s.value for s in result.samples] == [0.0]


async def test_metrics_range_with_step_uses_the_step_grain(azure, provider) -> None:
    result = await provider.query(CPU, Window(range_seconds=1800, step_seconds=300, end=BASE))
    assert azure[0].metric_requests[-1].query["interval"] == "PT5M"
    assert [s.value for s in result.samples] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


async def test_metrics_json_form_with_filter(azure, provider) -> None:
    query = json.dumps(
        {"resourceId": VM, "metric": "Percentage CPU", "aggregation": "minimum", "filter": "LUN eq '0'"}
    )
    await provider.query(query, Window(end=BASE))
    sent = azure[0].metric_requests[-1]
    assert sent.query["filter"] == "LUN eq '0'" and sent.query["aggregation"] == "Minimum"


async def test_metrics_all_null_is_an_error_not_zero(provider) -> None:
    with pytest.raises(BackendError, match="no Average values"):
        await provider.query(f"metrics:{VM}/Empty", Window(end=BASE))


async def test_metrics_several_series_is_an_error(provider) -> None:
    with pytest.raises(BackendError, match="2 time series"):
        await provider.query(f"metrics:{VM}/Split", Window(end=BASE))


async def test_metrics_api_errors_are_one_line(provider) -> None:
    with pytest.raises(BackendError) as info:
        await provider.query(f"metrics:{VM}/Missing", Window(end=BASE))
    assert "HTTP 400" in info.value.message and "metric configuration" in info.value.message
    assert not info.value.retryable and not info.value.auth


async def test_throttling_is_retryable(provider) -> None:
    with pytest.raises(BackendError) as info:
        await provider.query(f"metrics:{VM}/Throttled", Window(end=BASE))
    assert info.value.retryable and "429" in info.value.message


async def test_a_slow_answer_times_out_as_retryable(azure) -> None:
    p = create(config(azure[1], azure[2], timeout=0.5))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(f"metrics:{VM}/Slow", Window(end=BASE))
    finally:
        await p.close()
    assert info.value.retryable and "in time" in info.value.message


# --- logs ------------------------------------------------------------------------------


async def test_logs_series_by_the_first_datetime_column_and_the_last_numeric_column(azure, provider) -> None:
    result = await provider.query(
        f"logs:{WS}:Perf | summarize avg(CounterValue), max(CounterValue) by bin(TimeGenerated, $step)",
        Window(range_seconds=600, step_seconds=60, end=BASE),
    )
    assert [(s.timestamp - BASE, s.value) for s in result.samples] == [(-120, 3.0), (-60, 4.0), (0, 5.0)]
    body = azure[0].logs_bodies[-1]
    assert "bin(TimeGenerated, 60s)" in body["query"]
    assert body["timespan"] == "2025-06-01T11:50:00.000Z/2025-06-01T12:00:00.000Z"


async def test_logs_named_column_and_null_values_are_skipped(provider) -> None:
    query = json.dumps({"workspaceId": WS, "query": "Perf | summarize", "column": "avg_CounterValue"})
    result = await provider.query(query, Window(range_seconds=600, end=BASE))
    assert [s.value for s in result.samples] == [1.5, 2.5]


async def test_logs_instant_single_row_without_time_column(azure, provider) -> None:
    result = await provider.query(
        f"logs:{WS}:Heartbeat | summarize count() by Computer | where OneRow", Window(end=BASE)
    )
    assert result.latest().value == 42.0
    assert azure[0].logs_bodies[-1].get("timespan") is None  # instant: the KQL decides its own window


async def test_logs_several_rows_without_time_column_is_an_error(provider) -> None:
    with pytest.raises(BackendError, match="2 rows"):
        await provider.query(f"logs:{WS}:TwoRows", Window())


async def test_logs_no_rows_is_an_error(provider) -> None:
    with pytest.raises(BackendError, match="no rows"):
        await provider.query(f"logs:{WS}:NoRows", Window())


async def test_logs_syntax_error_is_reported(provider) -> None:
    with pytest.raises(BackendError) as info:
        await provider.query(f"logs:{WS}:BadSyntax |", Window())
    assert "HTTP 400" in info.value.message and "\n" not in info.value.message


async def test_logs_step_placeholder_without_step_is_an_error(provider) -> None:
    with pytest.raises(BackendError, match=r"\$range/\$step"):
        await provider.query(f"logs:{WS}:Perf | summarize by bin(TimeGenerated, $step)", Window())


# --- credentials -----------------------------------------------------------------------


async def test_the_client_secret_is_exchanged_once_per_audience_and_the_token_reused(azure, provider) -> None:
    for _ in range(2):
        await provider.query(CPU, Window(end=BASE))
        await provider.query(f"logs:{WS}:OneRow", Window())
    assert azure[0].token_requests == 2  # metrics.monitor.azure.com and api.loganalytics.io


async def test_a_rejected_client_secret_is_an_auth_error_without_the_secret(azure) -> None:
    wrong = "Wr0ng~secret~value~that~must~not~leak"
    p = create(config(azure[1], azure[2], secret=wrong))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(CPU, Window(end=BASE))
    finally:
        await p.close()
    assert info.value.auth and "azure credentials failed" in info.value.message
    assert "AADSTS7000215" in info.value.message
    assert wrong not in str(info.value) and CLIENT_SECRET not in str(info.value)
    assert "\n" not in info.value.message


async def test_an_untrusted_server_certificate_is_refused(azure) -> None:
    other_ca = trustme.CA().cert_pem.bytes().decode()
    p = create(config(azure[1], other_ca, timeout=3))
    try:
        with pytest.raises(BackendError, match="TLS verification failed"):
            await p.query(CPU, Window(end=BASE))
    finally:
        await p.close()


def test_half_a_client_secret_identity_is_rejected_at_creation() -> None:
    with pytest.raises(BackendError, match="AZURE_CLIENT_ID"):
        create(
            BackendConfig(
                type="azure", target_server="eastus", secret={"AZURE_CLIENT_SECRET": CLIENT_SECRET.encode()}
            )
        )


# --- parsing ---------------------------------------------------------------------------


def test_compact_metrics_query() -> None:
    spec = parse_query(f"metrics:{VM}/Percentage CPU:maximum")
    assert spec == {
        "kind": "metrics",
        "resource": VM,
        "metric": "Percentage CPU",
        "aggregation": "Maximum",
        "namespace": "Microsoft.Compute/virtualMachines",
        "filter": None,
    }


def test_nested_resource_types_give_the_full_namespace() -> None:
    rid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"
    rid += "/blobServices/default"
    assert namespace_of(rid) == "Microsoft.Storage/storageAccounts/blobServices"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "CPU",
        "metrics:notaresource/CPU",
        f"metrics:{VM}/",
        "logs:ws-only",
        "{bad",
        '{"metric": "x"}',
        f'{{"resourceId": "{VM}", "metric": "x", "aggregation": "p99"}}',
    ],
)
def test_bad_queries_are_rejected_before_any_request(query: str) -> None:
    with pytest.raises(BackendError) as info:
        parse_query(query)
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("eastus", ("https://eastus.metrics.monitor.azure.com", "https://api.loganalytics.io/v1")),
        (
            "https://westeurope.metrics.monitor.azure.com",
            ("https://westeurope.metrics.monitor.azure.com", "https://api.loganalytics.io/v1"),
        ),
        ("https://api.loganalytics.io", (None, "https://api.loganalytics.io/v1")),
        ("https://127.0.0.1:8443/", ("https://127.0.0.1:8443", "https://127.0.0.1:8443/v1")),
    ],
)
def test_target_server_forms(target: str, expected) -> None:
    assert endpoints(target) == expected


async def test_metrics_need_a_region(azure) -> None:
    p = create(
        BackendConfig(
            type="azure",
            target_server="https://api.loganalytics.io",
            secret=config(azure[1], azure[2]).secret,
        )
    )
    try:
        with pytest.raises(BackendError, match="region"):
            await p.query(CPU, Window())
    finally:
        await p.close()


@pytest.mark.parametrize(
    ("seconds", "expected"), [(30, 60), (60, 60), (120, 300), (3600, 3600), (10**6, 86400)]
)
def test_grains_round_up_to_what_azure_accepts(seconds: float, expected: int) -> None:
    assert grain(seconds).total_seconds() == expected
