"""Target parsing: upstream's `>N`/`<N`, our `>=`, `<=`, `==`, `=`, `!=`, and Quantities."""

from __future__ import annotations

import math

import pytest

from metrics_server.controller.targets import (
    TargetError,
    parse_analysis_operator,
    parse_evaluation_target,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5.0),
        ("-5", -5.0),
        ("+2.5", 2.5),
        (".5", 0.5),
        ("500m", 0.5),
        ("1k", 1000.0),
        ("1.5k", 1500.0),
        ("2M", 2e6),
        ("3G", 3e9),
        ("1Ki", 1024.0),
        ("2Gi", 2 * 2**30),
        ("250u", 250e-6),
        ("7n", 7e-9),
        ("1e3", 1000.0),
        ("1.5E-2", 0.015),
        (42, 42.0),
        (0.25, 0.25),
    ],
)
def test_quantities(text: object, expected: float) -> None:
    assert parse_quantity(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1KB", "5 k", "NaN", "inf", "--1", "1e", True, None, [1]])
def test_invalid_quantities(text: object) -> None:
    with pytest.raises(TargetError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("target", "value", "passes"),
    [
        # upstream's two operators
        (">5", 6, True),
        (">5", 5, False),
        ("<5", 4, True),
        ("<5", 5, False),
        (">0.5", 0.6, True),
        ("<10", -1, True),
        # ours
        (">=5", 5, True),
        (">=5", 4.99, False),
        ("<=5", 5, True),
        ("<=5", 5.01, False),
        ("==5", 5, True),
        ("==5", 5.1, False),
        ("=5", 5, True),
        ("!=0", 1, True),
        ("!=0", 0, False),
        # quantities and whitespace
        ("<500m", 0.4, True),
        ("<500m", 0.5, False),
        (">1k", 1001, True),
        ("<= 2Gi", 2 * 2**30, True),
        (" > 1e3 ", 1000, False),
        # NaN never passes
        ("!=0", math.nan, False),
    ],
)
def test_evaluation_targets(target: str, value: float, passes: bool) -> None:
    assert parse_evaluation_target(target).check(value) is passes


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("", "is required"),
        ("5", "must be an operator"),
        (">", "must be an operator"),
        ("=>5", "not a number"),
        (">>5", "not a number"),
        ("<abc", "not a number"),
        ("~5", "must be an operator"),
        ("> 5 6", "must be an operator"),
        (">5%", "not a number"),
    ],
)
def test_invalid_evaluation_targets(target: str, fragment: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_evaluation_target(target)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "value", "fulfilled"),
    [
        ({"lessThan": {"fixedValue": 5}}, 4, True),
        ({"lessThan": {"fixedValue": 5}}, 5, False),
        ({"lessThanOrEqual": {"fixedValue": "5"}}, 5, True),
        ({"greaterThan": {"fixedValue": "500m"}}, 0.6, True),
        ({"greaterThan": {"fixedValue": "500m"}}, 0.5, False),
        ({"greaterThanOrEqual": {"fixedValue": "1k"}}, 1000, True),
        ({"equalTo": {"fixedValue": 0}}, 0, True),
        ({"equalTo": {"fixedValue": 0}}, 0.1, False),
        # inRange is inclusive at both ends
        ({"inRange": {"lowBound": 1, "highBound": 5}}, 1, True),
        ({"inRange": {"lowBound": 1, "highBound": 5}}, 5, True),
        ({"inRange": {"lowBound": 1, "highBound": 5}}, 5.01, False),
        ({"notInRange": {"lowBound": 1, "highBound": 5}}, 0.99, True),
        ({"notInRange": {"lowBound": 1, "highBound": 5}}, 1, False),
        ({"notInRange": {"lowBound": 1, "highBound": 5}}, 6, True),
    ],
)
def test_analysis_operators(raw: dict, value: float, fulfilled: bool) -> None:
    assert parse_analysis_operator(raw, "target.failure").fulfilled(value) is fulfilled


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "must set one of"),
        ({"between": {"fixedValue": 1}}, "unknown operator 'between'"),
        ({"lessThan": {"fixedValue": 1}, "greaterThan": {"fixedValue": 2}}, "several operators"),
        ({"lessThan": {}}, "fixedValue is required"),
        ({"lessThan": {"fixedValue": "ten"}}, "not a number"),
        ({"inRange": {"lowBound": 5}}, "highBound is required"),
        ({"inRange": {"lowBound": 5, "highBound": 1}}, "must be smaller than highBound"),
        ({"inRange": {"lowBound": 5, "highBound": 5}}, "must be smaller than highBound"),
        ({"notInRange": {"lowBound": "1k", "highBound": 1000}}, "must be smaller than highBound"),
        ("lessThan", "must be an object"),
    ],
)
def test_invalid_analysis_operators(raw: object, fragment: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_analysis_operator(raw, "spec.objectives[0].target.failure")
    assert fragment in str(info.value)
