"""Aggregations (percentiles on sorted values) and value formatting."""

from __future__ import annotations

import base64
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics_server.aggregation import aggregate
from metrics_server.model import ObjectKey
from metrics_server.state import RAW_VALUE_LIMIT, MetricState, format_value

UNSORTED = [7.0, 1.0, 9.0, 3.0, 5.0, 2.0, 8.0, 4.0, 6.0, 10.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("max", 10),
        ("min", 1),
        ("avg", 5.5),
        ("median", 5.5),
        ("p90", 9),
        ("p95", 10),
        ("p99", 10),
    ],
)
def test_aggregations_on_unsorted_samples(name: str, expected: float) -> None:
    # upstream computes percentiles on unsorted input: p90 of this list would be 6
    assert aggregate(name, UNSORTED) == expected


def test_percentile_nearest_rank_on_odd_counts() -> None:
    assert aggregate("p90", [3, 1, 2]) == 3
    assert aggregate("median", [3, 1, 2]) == 2
    assert aggregate("p90", [42]) == 42


def test_aggregation_errors() -> None:
    with pytest.raises(ValueError):
        aggregate("max", [])
    with pytest.raises(ValueError):
        aggregate("p50", [1.0])


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=50))
def test_percentiles_are_ordered_and_within_bounds(values: list[float]) -> None:
    p90, p95, p99 = (aggregate(n, values) for n in ("p90", "p95", "p99"))
    assert min(values) <= p90 <= p95 <= p99 <= max(values)
    assert p90 in values


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42.0, "42"),
        (1.5, "1.5"),
        (-3.25, "-3.25"),
        (0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (123456789.125, "123456789.125"),
        (1e6, "1000000"),  # Go's %v would print 1e+06
        (123456789.0, "123456789"),  # Go's %v: 1.23456789e+08
        (2.5e-300, "2.5e-300"),
    ],
)
def test_values_are_the_shortest_round_trip_decimal(value: float, text: str) -> None:
    assert format_value(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_formatted_values_round_trip(value: float) -> None:
    assert float(format_value(value)) == value


def test_non_finite_values_are_never_formatted() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            format_value(bad)


def test_raw_value_is_capped_at_one_mebibyte() -> None:
    state = MetricState(key=ObjectKey("ns", "m"), fetch_interval=10, raw=b"x" * (RAW_VALUE_LIMIT + 10))
    assert len(base64.b64decode(state.status()["rawValue"])) == RAW_VALUE_LIMIT
