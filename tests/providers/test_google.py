"""Google Cloud Monitoring provider: the real async gapic client against a local grpc.aio server.

The server is built from generic handlers and the client's own proto-plus message classes,
so every request and answer crosses a real gRPC wire. It answers by the filter's content
and records the requests it saw, so tests can check both the window translation and the
value read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

monitoring_v3 = pytest.importorskip("google.cloud.monitoring_v3")
grpc = pytest.importorskip("grpc")

from providers.base import BackendConfig, BackendError, Window  # noqa: E402
from providers.google import build_list_request, create, parse_target  # noqa: E402

BASE = 1_750_000_000.0  # newest point
DEPTH = 'metric.type="custom.googleapis.com/queue/depth"'


def _point(ts: float, **value: object) -> monitoring_v3.Point:
    when = datetime.fromtimestamp(ts, UTC)
    return monitoring_v3.Point(interval={"start_time": when, "end_time": when}, value=value)


def _series(points: list[monitoring_v3.Point], **labels: str) -> monitoring_v3.TimeSeries:
    return monitoring_v3.TimeSeries(
        metric={"type": "custom.googleapis.com/queue/depth", "labels": labels}, points=points
    )


def depth_series(**labels: str) -> monitoring_v3.TimeSeries:
    # The API lists points newest first; values 0..9 one a minute, 9 at BASE.
    return _series(
        [_point(BASE - (9 - i) * 60, double_value=float(i)) for i in reversed(range(10))], **labels
    )


class FakeMonitoring:
    def __init__(self) -> None:
        self.requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self.mql: list[str] = []

    async def list_time_series(self, request, context):
        self.requests.append(request)
        f = request.filter
        if "denied" in f:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "Permission monitoring.timeSeries.list denied"
            )
        if "unauthenticated" in f:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials."
            )
        if "quota" in f:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for quota metric 'Time series queries'"
            )
        if "invalid" in f:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Field filter had an invalid value")
        if "slow" in f:
            await asyncio.sleep(2)
        if "empty" in f:
            return monitoring_v3.ListTimeSeriesResponse()
        if "several" in f:
            return monitoring_v3.ListTimeSeriesResponse(
                time_series=[depth_series(zone="a"), depth_series(zone="b")]
            )
        if "int64" in f:
            return monitoring_v3.ListTimeSeriesResponse(time_series=[_series([_point(BASE, int64_value=42)])])
        if "distribution" in f:
            dist = {"count": 4, "mean": 12.5}
            return monitoring_v3.ListTimeSeriesResponse(
                time_series=[_series([_point(BASE, distribution_value=dist)])]
            )
        if "text" in f:
            return monitoring_v3.ListTimeSeriesResponse(
                time_series=[_series([_point(BASE, string_value="x")])]
            )
        if "paged" in f:
            if not request.page_token:
                return monitoring_v3.ListTimeSeriesResponse(time_series=[], next_page_token="p2")
            return monitoring_v3.ListTimeSeriesResponse(time_series=[depth_series()])
        return monitoring_v3.ListTimeSeriesResponse(time_series=[depth_series()])

    async def query_time_series(self, request, context):
        self.mql.append(request.query)
        if "nothing" in request.query:
            return monitoring_v3.QueryTimeSeriesResponse()
        points = [
            {
                "values": [{"double_value": float(v)}],
                "time_interval": {"end_time": datetime.fromtimestamp(BASE - (2 - v) * 60, UTC)},
            }
            for v in (2, 1, 0)
        ]
        return monitoring_v3.QueryTimeSeriesResponse(time_series_data=[{"point_data": points}])


def _handler(method, request_cls, response_cls):
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request_cls.deserialize, response_serializer=response_cls.serialize
    )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeMonitoring, str]]:
    impl = FakeMonitoring()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "google.monitoring.v3.MetricService",
                {
                    "ListTimeSeries": _handler(
                        impl.list_time_series,
                        monitoring_v3.ListTimeSeriesRequest,
                        monitoring_v3.ListTimeSeriesResponse,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.monitoring.v3.QueryService",
                {
                    "QueryTimeSeries": _handler(
                        impl.query_time_series,
                        monitoring_v3.QueryTimeSeriesRequest,
                        monitoring_v3.QueryTimeSeriesResponse,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield impl, f"grpc://127.0.0.1:{port}/projects/keptn-test"
    await server.stop(None)


@pytest.fixture
async def provider(fake):
    p = create(BackendConfig(type="google", target_server=fake[1], timeout=2, name="ns/gcp"))
    yield p
    await p.close()


# --- windows ---------------------------------------------------------------------------


async def test_instant_filter_yields_the_newest_point_from_a_ten_minute_lookback(fake, provider) -> None:
    result = await provider.query(DEPTH, Window(end=BASE))
    assert result.latest().value == 9.0
    assert [s.value for s in result.samples] == [float(i) for i in range(10)]  # oldest first
    sent = fake[0].requests[-1]
    assert sent.name == "projects/keptn-test" and sent.filter == DEPTH
    assert sent.interval.end_time.timestamp() == BASE
    assert sent.interval.start_time.timestamp() == BASE - 600
    assert not sent.aggregation.alignment_period  # raw points
    assert b"custom.googleapis.com/queue/depth" in result.raw


async def test_range_without_step_is_the_whole_interval(fake, provider) -> None:
    await provider.query(DEPTH, Window(range_seconds=1800, end=BASE))
    sent = fake[0].requests[-1]
    assert sent.interval.start_time.timestamp() == BASE - 1800


async def test_range_without_step_with_an_aligner_aligns_over_the_whole_range(fake, provider) -> None:
    query = (
        '{"filter": "metric.type=\\"custom.googleapis.com/queue/depth\\"", '
        '"aggregation": {"perSeriesAligner": "ALIGN_MAX"}}'
    )
    await provider.query(query, Window(range_seconds=300, end=BASE))
    agg = fake[0].requests[-1].aggregation
    assert agg.alignment_period.total_seconds() == 300
    assert agg.per_series_aligner == monitoring_v3.Aggregation.Aligner.ALIGN_MAX


async def test_range_with_step_sets_alignment_period_and_a_mean_aligner(fake, provider) -> None:
    result = await provider.query(DEPTH, Window(range_seconds=600, step_seconds=120, end=BASE))
    agg = fake[0].requests[-1].aggregation
    assert agg.alignment_period.total_seconds() == 120
    assert agg.per_series_aligner == monitoring_v3.Aggregation.Aligner.ALIGN_MEAN
    assert len(result.samples) == 10


async def test_json_query_passes_reducers_and_another_project(fake, provider) -> None:
    query = (
        '{"filter": "metric.type=\\"x\\"", "project": "other", "aggregation": '
        '{"perSeriesAligner": "ALIGN_RATE", "crossSeriesReducer": "REDUCE_SUM", "groupByFields": []}}'
    )
    await provider.query(query, Window(range_seconds=600, step_seconds=60, end=BASE))
    sent = fake[0].requests[-1]
    assert sent.name == "projects/other"
    assert sent.aggregation.cross_series_reducer == monitoring_v3.Aggregation.Reducer.REDUCE_SUM
    assert sent.aggregation.per_series_aligner == monitoring_v3.Aggregation.Aligner.ALIGN_RATE


@pytest.mark.parametrize(("marker", "value"), [("int64", 42.0), ("distribution", 12.5)])
async def test_integer_and_distribution_points(provider, marker: str, value: float) -> None:
    result = await provider.query(f'metric.type="{marker}"', Window(end=BASE))
    assert result.latest().value == value


async def test_pages_are_followed(provider) -> None:
    assert (await provider.query('metric.type="paged"', Window(end=BASE))).latest().value == 9.0


async def test_mql_gets_the_window_appended_and_reads_the_first_value_column(fake, provider) -> None:
    result = await provider.query(
        "mql: fetch gce_instance::compute.googleapis.com/instance/cpu/utilization",
        Window(range_seconds=600, step_seconds=60),
    )
    assert fake[0].mql[-1].endswith("| within 600s | every 60s")
    assert [s.value for s in result.samples] == [0.0, 1.0, 2.0]


async def test_mql_without_points_is_an_error(provider) -> None:
    with pytest.raises(BackendError, match="no points"):
        await provider.query("mql: fetch nothing", Window())


# --- errors ----------------------------------------------------------------------------


async def test_no_series_is_an_error_not_zero(provider) -> None:
    with pytest.raises(BackendError, match="no time series"):
        await provider.query('metric.type="empty"', Window(end=BASE))


async def test_several_series_is_an_error_that_suggests_a_reducer(provider) -> None:
    with pytest.raises(BackendError, match=r"2 time series.*crossSeriesReducer"):
        await provider.query('metric.type="several"', Window(end=BASE))


async def test_non_numeric_points_are_errors(provider) -> None:
    with pytest.raises(BackendError, match="string_value"):
        await provider.query('metric.type="text"', Window(end=BASE))


@pytest.mark.parametrize(
    ("marker", "auth", "retryable", "code"),
    [
        ("denied", True, False, "PERMISSION_DENIED"),
        ("unauthenticated", True, False, "UNAUTHENTICATED"),
        ("quota", False, True, "RESOURCE_EXHAUSTED"),
        ("invalid", False, False, "INVALID_ARGUMENT"),
    ],
)
async def test_grpc_errors_map_to_one_line_provider_errors(provider, marker, auth, retryable, code) -> None:
    with pytest.raises(BackendError) as info:
        await provider.query(f'metric.type="{marker}"', Window(end=BASE))
    err = info.value
    assert (err.auth, err.retryable) == (auth, retryable)
    assert code in err.message and "keptn-test" in err.message and "\n" not in err.message


async def test_a_slow_answer_times_out_as_retryable(fake) -> None:
    p = create(BackendConfig(type="google", target_server=fake[1], timeout=0.3))
    try:
        with pytest.raises(BackendError) as info:
            await p.query('metric.type="slow"', Window(end=BASE))
    finally:
        await p.close()
    assert info.value.retryable and "in time" in info.value.message


@pytest.mark.parametrize(
    "query",
    [
        "",
        "{not json",
        '{"nofilter": 1}',
        '{"filter": "x", "aggregation": {"perSeriesAligner": "ALIGN_BOGUS"}}',
    ],
)
def test_bad_queries_are_rejected_before_any_request(query: str) -> None:
    with pytest.raises(BackendError) as info:
        build_list_request(query, "p", Window(), BASE)
    assert "\n" not in info.value.message


async def test_unreachable_server_is_retryable() -> None:
    p = create(BackendConfig(type="google", target_server="grpc://127.0.0.1:9/projects/p", timeout=1))
    try:
        with pytest.raises(BackendError) as info:
            await p.query(DEPTH, Window())
    finally:
        await p.close()
    assert info.value.retryable


def test_a_broken_service_account_key_is_an_auth_error_without_its_content() -> None:
    secret = b'{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nsupersecretvalue"}'
    with pytest.raises(BackendError) as info:
        create(
            BackendConfig(
                type="google", target_server="my-project", secret={"sa.json": secret}, secret_key="sa.json"
            )
        )
    assert info.value.auth and "supersecretvalue" not in str(info.value)


def test_a_service_account_key_from_the_secret_is_used(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    import json

    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "1",
        "private_key": key,
        "client_email": "keptn@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    p = create(
        BackendConfig(
            type="google",
            target_server="projects/p",
            secret={"key.json": json.dumps(info).encode()},
            secret_key="key.json",
        )
    )
    assert p._credentials.service_account_email == "keptn@p.iam.gserviceaccount.com"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("my-project", ("monitoring.googleapis.com", "my-project", False)),
        ("projects/my-project", ("monitoring.googleapis.com", "my-project", False)),
        ("https://monitoring.example.com/projects/p1", ("monitoring.example.com:443", "p1", False)),
        ("grpc://127.0.0.1:8085/projects/p2", ("127.0.0.1:8085", "p2", True)),
    ],
)
def test_target_server_forms(target: str, expected) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["http://x/projects/p", "grpc://127.0.0.1:1/", "projects/"])
def test_bad_target_servers(target: str) -> None:
    with pytest.raises(BackendError):
        parse_target(target)
