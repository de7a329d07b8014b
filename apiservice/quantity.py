"""Kubernetes `resource.Quantity` in canonical DecimalSI form, exactly as apimachinery writes it.

Canonical form (apimachinery `Quantity.CanonicalizeBytes`): no precision lost, no fractional
digits, the largest suffix whose exponent is a multiple of 3, sign only when negative.
Precision is limited to nano units; finer values are rounded up, away from zero, as
`ParseQuantity` does. Examples: 1.5 -> "1500m", 1000 -> "1k", 1500 -> "1500",
0.0015 -> "1500u", 1e-12 -> "1n".

We only serve values HPA can use: HPA reads `MilliValue()` (an int64), so values whose
magnitude is 2**63 / 1000 or more (about 9.2e15) are refused rather than overflowing, and
NaN or infinite values are never formatted.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Decimal, InvalidOperation, localcontext

__all__ = ["MAX_SERVABLE", "QuantityError", "format_quantity", "parse_quantity", "servable"]

MAX_SERVABLE = Decimal(2**63 - 1) / 1000  # MilliValue() must fit an int64

_SUFFIX_FOR_EXPONENT = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_DECIMAL_SUFFIXES = {v: k for k, v in _SUFFIX_FOR_EXPONENT.items()}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY = re.compile(r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(.*)$")
_NANO = Decimal("1e-9")


class QuantityError(ValueError):
    """A value that cannot be served as a Quantity (NaN, infinite, out of HPA's range)."""


def _exact(value: float | int | Decimal | str) -> Decimal:
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value} is not a finite number")
        d = Decimal(repr(value))  # shortest digits that round-trip: 0.1 -> 0.1, not 0.1000000000000000055
    else:
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise QuantityError(f"{value!r} is not a number") from None
    if not d.is_finite():
        raise QuantityError(f"{value} is not a finite number")
    return d


def servable(value: float | None) -> bool:
    """True when `value` can be written as a Quantity HPA can read without overflow."""
    return value is not None and math.isfinite(value) and abs(value) < MAX_SERVABLE


def format_quantity(value: float | int | Decimal | str) -> str:
    """The canonical DecimalSI string of `value` (see module docstring)."""
    d = _exact(value)
    if abs(d) >= MAX_SERVABLE:
        raise QuantityError(
            f"{value} is too large for a Kubernetes quantity HPA can read (max {MAX_SERVABLE:.4g})"
        )
    if d.is_zero():
        return "0"
    with localcontext() as ctx:
        ctx.prec = 60
        if d.as_tuple().exponent < -9:  # type: ignore[operator]
            d = d.quantize(_NANO, rounding=ROUND_UP)  # nano precision, rounded away from zero
        sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    shift = exponent % 3  # Python's modulo is non-negative: move down to a multiple of 3
    mantissa *= 10**shift
    exponent -= shift
    suffix = _SUFFIX_FOR_EXPONENT[exponent]
    return f"{'-' if sign else ''}{mantissa}{suffix}"


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes quantity (DecimalSI, BinarySI or exponent form) to its exact value.

    Like `ParseQuantity`, values finer than nano units are rounded up (away from zero).
    """
    m = _QUANTITY.match(text.strip())
    if not m:
        raise QuantityError(f"{text!r} is not a quantity")
    sign, number, suffix = m.groups()
    value = Decimal(number)
    if suffix in _DECIMAL_SUFFIXES:
        value = value.scaleb(_DECIMAL_SUFFIXES[suffix])
    elif suffix in _BINARY_SUFFIXES:
        value = value * (2 ** _BINARY_SUFFIXES[suffix])
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        value = value.scaleb(int(suffix[1:]))
    else:
        raise QuantityError(f"{text!r} has an unknown suffix {suffix!r}")
    if sign == "-":
        value = -value
    with localcontext() as ctx:
        ctx.prec = 80
        if value.as_tuple().exponent < -9:  # type: ignore[operator]
            value = value.quantize(_NANO, rounding=ROUND_UP)
    return value
