"""KEDA scaler metadata: every malformed or out-of-range value is INVALID_ARGUMENT, counted as such."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiservice import selfmetrics
from tests.api.test_keda_grpc import ref, scaler  # noqa: F401 - the fixture

BAD_TARGETS = [
    "9.3e18",
    "1e19",
    "1.79e308",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "0",
    "garbage",
    "1e400",
    "0x10",
]


def count(method: str, code: grpc.StatusCode) -> int:
    return selfmetrics._counts.get((f"keda/grpc/{method}", code.value[0]), 0)


@pytest.mark.parametrize("target", BAD_TARGETS)
async def test_get_metric_spec_rejects_unusable_target_values(scaler, target: str) -> None:  # noqa: F811
    client, _ = scaler
    before_invalid = count("GetMetricSpec", grpc.StatusCode.INVALID_ARGUMENT)
    before_ok = count("GetMetricSpec", grpc.StatusCode.OK)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_metric_spec(ref("queue", targetValue=target))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "targetValue" in (err.value.details() or "")
    assert count("GetMetricSpec", grpc.StatusCode.INVALID_ARGUMENT) == before_invalid + 1
    assert count("GetMetricSpec", grpc.StatusCode.OK) == before_ok


async def test_the_largest_target_that_fits_int64_is_accepted(scaler) -> None:  # noqa: F811
    client, _ = scaler
    answer = await client.get_metric_spec(ref("queue", targetValue="9.2e18"))
    assert answer.metricSpecs[0].targetSize == 9_200_000_000_000_000_000


@pytest.mark.parametrize("method", ["IsActive", "GetMetrics"])
@pytest.mark.parametrize("value", ["nan", "inf", "garbage"])
async def test_activation_values_are_checked_on_every_method(scaler, method: str, value: str) -> None:  # noqa: F811
    client, _ = scaler
    request = ref("queue", activationValue=value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if method == "IsActive":
            await client.is_active(request)
        else:
            from apiservice import keda_proto as pb

            await client.get_metrics(pb.GetMetricsRequest(scaledObjectRef=request, metricName="queue"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_huge_metric_name_is_answered_with_a_bounded_message(scaler) -> None:  # noqa: F811
    client, _ = scaler
    with pytest.raises(grpc.aio.AioRpcError) as err:
        from apiservice import keda_proto as pb

        await client.get_metrics(pb.GetMetricsRequest(scaledObjectRef=ref("x" * 10_000)))
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert len(err.value.details() or "") < 500


_KNOWN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    metadata=st.dictionaries(
        st.sampled_from(
            [
                "keptnMetricName",
                "targetValue",
                "activationValue",
                "activationTargetValue",
                "keptnMetricNamespace",
                "metricName",
            ]
        ),
        st.one_of(st.text(max_size=30), st.floats().map(repr), st.integers().map(str)),
    )
)
async def test_any_metadata_gets_a_deliberate_status(scaler, metadata: dict[str, str]) -> None:  # noqa: F811
    client, _ = scaler
    from apiservice import keda_proto as pb

    request = pb.ScaledObjectRef(name="so", namespace="shop")
    for k, v in metadata.items():
        request.scalerMetadata[k] = v
    try:
        await client.get_metric_spec(request)
    except grpc.aio.AioRpcError as err:
        assert err.code() in _KNOWN, (metadata, err.code(), err.details())
