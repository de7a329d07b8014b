"""Aggregations over the samples of a range+step query.

Percentiles use the nearest-rank method on *sorted* values (gonum's `stat.Empirical`,
which upstream calls on unsorted data by mistake): p-th percentile = the smallest sample
such that at least p% of samples are <= it, i.e. sorted[ceil(p/100 * n) - 1].
`median` is the conventional median (mean of the two middle values for an even count).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence


def _percentile(p: float) -> Callable[[Sequence[float]], float]:
    def compute(values: Sequence[float]) -> float:
        ordered = sorted(values)
        rank = max(1, math.ceil(p / 100.0 * len(ordered)))
        return ordered[rank - 1]

    compute.__name__ = f"p{p:g}"
    return compute


def _avg(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# In upstream's order (the CRD enum, error messages and `--aggregation` choices read it).
AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "p90": _percentile(90),
    "p95": _percentile(95),
    "p99": _percentile(99),
    "max": max,
    "min": min,
    "avg": _avg,
    "median": statistics.median,
}
AGGREGATIONS: tuple[str, ...] = tuple(AGGREGATORS)


def aggregate(name: str, values: Sequence[float]) -> float:
    """Aggregate finite samples; raises ValueError for an unknown name or no samples."""
    if not values:
        raise ValueError("no samples to aggregate")
    try:
        fn = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregation {name!r}") from None
    return float(fn(values))
