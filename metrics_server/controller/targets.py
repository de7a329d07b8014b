"""Objective targets: KeptnEvaluation `evaluationTarget` strings and Analysis operators.

Numbers are Kubernetes Quantities (`500m`, `1k`, `2Gi`, `1e3`, `-0.5`), the grammar
AnalysisDefinition's `fixedValue` uses; plain decimals are Quantities too, so every
upstream `>N` / `<N` target keeps its meaning.

evaluationTarget grammar (upstream accepts only `>N` and `<N`):

    >N  <N  >=N  <=N  ==N  =N  !=N        whitespace around the operator is allowed

Anything else raises TargetError with a message that says what is accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "ANALYSIS_OPERATORS",
    "EVALUATION_OPERATORS",
    "AnalysisOperator",
    "EvaluationTarget",
    "TargetError",
    "parse_analysis_operator",
    "parse_evaluation_target",
    "parse_quantity",
]


class TargetError(ValueError):
    """A target or quantity we cannot interpret; the message is meant for users."""


# The Kubernetes Quantity pattern (the CRDs' `fixedValue` pattern).
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
_SUFFIX: dict[str, Decimal] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: Any) -> float:
    """A Kubernetes Quantity (string or int) as a float: `500m` -> 0.5, `1k` -> 1000, `1Ki` -> 1024."""
    if isinstance(value, bool):
        raise TargetError(f"{value!r} is not a number")
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TargetError(f"{value!r} is not a finite number")
        return value
    if not isinstance(value, str):
        raise TargetError(f"{value!r} is not a number")
    text = value.strip()
    m = _QUANTITY.match(text)
    if not m:
        raise TargetError(
            f"{value!r} is not a number or Kubernetes quantity (examples: 5, 0.25, 500m, 1k, 2Gi, 1e3)"
        )
    suffix = m.group("suffix") or ""
    try:
        number = Decimal(m.group("num"))
        if suffix[:1] in ("e", "E"):
            number = number * (Decimal(10) ** Decimal(suffix[1:]))
        else:
            number = number * _SUFFIX[suffix]
    except (InvalidOperation, OverflowError):
        raise TargetError(f"{value!r} is out of range") from None
    result = float(number)
    if not math.isfinite(result):
        raise TargetError(f"{value!r} is out of range")
    return result


# -- KeptnEvaluation ------------------------------------------------------------------------

EVALUATION_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
    ">": lambda v, t: v > t,
    "<": lambda v, t: v < t,
    "=": lambda v, t: v == t,
}
_TARGET = re.compile(r"^\s*(?P<op>>=|<=|==|!=|>|<|=)\s*(?P<num>\S+)\s*$")


@dataclass(frozen=True)
class EvaluationTarget:
    text: str  # as written, for messages
    operator: str
    threshold: float

    def check(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return EVALUATION_OPERATORS[self.operator](value, self.threshold)


def parse_evaluation_target(text: Any) -> EvaluationTarget:
    if not isinstance(text, str) or not text.strip():
        raise TargetError("evaluationTarget is required (for example '>5', '<=500m', '!=0')")
    m = _TARGET.match(text)
    if not m:
        raise TargetError(
            f"evaluationTarget {text!r} must be an operator (>, <, >=, <=, ==, =, !=) followed by a number, "
            "for example '>5', '<=500m' or '!=0'"
        )
    try:
        threshold = parse_quantity(m.group("num"))
    except TargetError as exc:
        raise TargetError(f"evaluationTarget {text!r}: {exc}") from None
    return EvaluationTarget(text=text, operator=m.group("op"), threshold=threshold)


# -- Analysis -------------------------------------------------------------------------------

ANALYSIS_OPERATORS = (
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "equalTo",
    "inRange",
    "notInRange",
)
# upstream's precedence when several operators are set in one object
_PRECEDENCE = (
    "equalTo",
    "lessThanOrEqual",
    "lessThan",
    "greaterThanOrEqual",
    "greaterThan",
    "inRange",
    "notInRange",
)


@dataclass(frozen=True)
class AnalysisOperator:
    """One `target.failure` or `target.warning` object; `raw` is kept for the status `raw` JSON."""

    name: str
    low: float  # the fixedValue, or the lowBound of a range
    high: float = 0.0  # highBound of a range
    raw: Mapping[str, Any] | None = None
    low_text: str = ""  # the numbers as written, for messages
    high_text: str = ""

    def fulfilled(self, value: float) -> bool:
        if math.isnan(value):
            return False
        n = self.name
        if n == "equalTo":
            return value == self.low
        if n == "lessThanOrEqual":
            return value <= self.low
        if n == "lessThan":
            return value < self.low
        if n == "greaterThanOrEqual":
            return value >= self.low
        if n == "greaterThan":
            return value > self.low
        if n == "inRange":  # inclusive on both ends, as upstream
            return self.low <= value <= self.high
        return value < self.low or value > self.high  # notInRange

    def describe(self) -> str:
        symbols = {
            "lessThan": "<",
            "lessThanOrEqual": "<=",
            "greaterThan": ">",
            "greaterThanOrEqual": ">=",
            "equalTo": "==",
        }
        low = self.low_text or f"{self.low:g}"
        high = self.high_text or f"{self.high:g}"
        if self.name in symbols:
            return f"{symbols[self.name]} {low}"
        if self.name == "inRange":
            return f"in [{low}, {high}]"
        return f"not in [{low}, {high}]"


def parse_analysis_operator(raw: Any, where: str) -> AnalysisOperator:
    """Parse `{greaterThan: {fixedValue: 500m}}` or `{inRange: {lowBound: 1, highBound: 5}}`."""
    if not isinstance(raw, Mapping):
        raise TargetError(f"{where} must be an object with one of {', '.join(ANALYSIS_OPERATORS)}")
    unknown = [k for k in raw if k not in ANALYSIS_OPERATORS]
    if unknown:
        raise TargetError(
            f"{where}: unknown operator {unknown[0]!r} (use one of {', '.join(ANALYSIS_OPERATORS)})"
        )
    present = [k for k in _PRECEDENCE if raw.get(k) is not None]
    if not present:
        raise TargetError(f"{where} must set one of {', '.join(ANALYSIS_OPERATORS)}")
    if len(present) > 1:
        raise TargetError(f"{where} sets several operators ({', '.join(present)}); set exactly one")
    name = present[0]
    body = raw[name]
    if not isinstance(body, Mapping):
        raise TargetError(f"{where}.{name} must be an object")
    if name in ("inRange", "notInRange"):
        for bound in ("lowBound", "highBound"):
            if bound not in body:
                raise TargetError(f"{where}.{name}.{bound} is required")
        try:
            low = parse_quantity(body["lowBound"])
            high = parse_quantity(body["highBound"])
        except TargetError as exc:
            raise TargetError(f"{where}.{name}: {exc}") from None
        if low >= high:  # upstream's webhook: the lower bound must be smaller than the higher bound
            low_text, high_text = body["lowBound"], body["highBound"]
            raise TargetError(
                f"{where}.{name}: lowBound {low_text} must be smaller than highBound {high_text}"
            )
        return AnalysisOperator(
            name, low, high, raw=dict(raw), low_text=str(body["lowBound"]), high_text=str(body["highBound"])
        )
    if "fixedValue" not in body:
        raise TargetError(f"{where}.{name}.fixedValue is required")
    try:
        fixed = parse_quantity(body["fixedValue"])
    except TargetError as exc:
        raise TargetError(f"{where}.{name}.fixedValue: {exc}") from None
    return AnalysisOperator(name, fixed, raw=dict(raw), low_text=str(body["fixedValue"]))
