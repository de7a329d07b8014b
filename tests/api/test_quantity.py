"""Canonical DecimalSI Quantity: a table in the spirit of apimachinery's quantity tests, plus properties."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiservice.quantity import MAX_SERVABLE, QuantityError, format_quantity, parse_quantity, servable

TABLE = [
    # docs/api.md, "Values"
    (1.5, "1500m"),
    (1000, "1k"),
    (1500, "1500"),
    (0.0015, "1500u"),
    # zero and signs
    (0, "0"),
    (0.0, "0"),
    (-0.0, "0"),
    (-1.5, "-1500m"),
    (-1000, "-1k"),
    # the largest suffix that loses nothing, exponent a multiple of 3
    (1, "1"),
    (10, "10"),
    (100, "100"),
    (1e3, "1k"),
    (1e4, "10k"),
    (1e5, "100k"),
    (1e6, "1M"),
    (1e9, "1G"),
    (1e12, "1T"),
    (1e15, "1P"),
    (1234567, "1234567"),
    (1234000, "1234k"),
    (12e6, "12M"),
    (0.1, "100m"),
    (0.01, "10m"),
    (0.001, "1m"),
    (0.0001, "100u"),
    (1e-6, "1u"),
    (1e-9, "1n"),
    (0.5, "500m"),
    (2.25, "2250m"),
    (123.456, "123456m"),
    (1.0000001, "1000000100n"),
    # finer than nano rounds up, away from zero (ParseQuantity semantics)
    (1e-10, "1n"),
    (1.5e-9, "2n"),
    (-1e-12, "-1n"),
    (0.0000000011, "2n"),
    # values from strings (exact decimals)
    ("0.3", "300m"),
    ("100.000", "100"),
    ("1e3", "1k"),
    ("12.5e-3", "12500u"),
]


@pytest.mark.parametrize(("value", "text"), TABLE)
def test_table(value, text):
    assert format_quantity(value) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1500m", "1.5"),
        ("1k", "1000"),
        ("1Ki", "1024"),
        ("1.5Gi", str(1.5 * 2**30)),
        ("1e3", "1000"),
        ("1E", "1e18"),
        ("5n", "5e-9"),
        ("100u", "0.0001"),
        ("-2M", "-2000000"),
        ("0.1m", "0.0001"),
        (".5", "0.5"),
        ("1e-12", "1e-9"),
    ],
)
def test_parse(text, value):
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e16, -1e16, float(MAX_SERVABLE) * 2])
def test_not_servable(value):
    assert not servable(value)
    with pytest.raises(QuantityError):
        format_quantity(value)


@pytest.mark.parametrize("bad", ["", "abc", "1x", "1.2.3", "--1"])
def test_parse_rejects(bad):
    with pytest.raises(QuantityError):
        parse_quantity(bad)


finite = st.floats(min_value=-9e15, max_value=9e15, allow_nan=False, allow_infinity=False)


@given(finite)
def test_round_trip(value):
    text = format_quantity(value)
    parsed = parse_quantity(text)
    exact = Decimal(repr(value))
    if exact.as_tuple().exponent >= -9:  # representable at nano precision: exact
        assert parsed == exact
    else:  # rounded up to nano, away from zero
        assert abs(parsed - exact) <= Decimal("1e-9")
        assert abs(parsed) >= abs(exact)
    assert format_quantity(parsed) == text  # canonical form is a fixed point


@given(finite)
def test_canonical_shape(value):
    text = format_quantity(value)
    digits = text.lstrip("-").rstrip("numkMGTP")
    assert digits.isdigit()  # no fractional digits, no exponent
    assert text == "0" or not digits.startswith("0")
    if text != "0" and text[-1] in "numkMGTP" and text[-1] != "n":
        assert not digits.endswith("000")  # otherwise a larger suffix would fit


@given(finite, finite)
def test_ordering_preserved(a, b):
    pa, pb = parse_quantity(format_quantity(a)), parse_quantity(format_quantity(b))
    if a < b:
        assert pa <= pb
    elif a > b:
        assert pa >= pb
    else:
        assert pa == pb
