"""Analysis scoring, exactly as upstream Keptn's metrics-operator scores:

- each objective: failure criteria met -> score 0; else warning criteria met -> weight / 2;
  else (neither met) -> the full weight. A missing value (fetch error) scores 0.
- achieved percentage = total / maximum * 100 (0 when the maximum is 0).
- pass when the percentage >= passPercentage; otherwise warning when >= warningPercentage.
- a failed key objective (score 0) fails the analysis: pass and warning are both false.

`AnalysisResult.raw()` is the JSON upstream stores in `Analysis.status.raw` (same keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metrics_server.controller.model import AnalysisDefinition, AnalysisObjective
from metrics_server.controller.targets import AnalysisOperator


@dataclass(frozen=True)
class OperatorResult:
    operator: AnalysisOperator | None
    fulfilled: bool = False

    def raw(self) -> dict[str, Any]:
        op: dict[str, Any] = {}
        if self.operator is not None and self.operator.raw is not None:
            op = {
                k: ({kk: str(vv) for kk, vv in v.items()} if isinstance(v, Mapping) else v)
                for k, v in self.operator.raw.items()
                if v is not None
            }
        return {"operator": op, "fulfilled": self.fulfilled}


@dataclass(frozen=True)
class TargetResult:
    fail_result: OperatorResult = field(default_factory=lambda: OperatorResult(None))
    warn_result: OperatorResult = field(default_factory=lambda: OperatorResult(None))
    warning: bool = False
    passed: bool = False

    def raw(self) -> dict[str, Any]:
        return {
            "failResult": self.fail_result.raw(),
            "warnResult": self.warn_result.raw(),
            "warning": self.warning,
            "pass": self.passed,
        }


def evaluate_target(value: float, objective: AnalysisObjective) -> TargetResult:
    fail = OperatorResult(objective.failure)
    warn = OperatorResult(objective.warning)
    if objective.failure is not None:
        fail = OperatorResult(objective.failure, objective.failure.fulfilled(value))
        if fail.fulfilled:
            return TargetResult(fail, warn)
    if objective.warning is not None:
        warn = OperatorResult(objective.warning, objective.warning.fulfilled(value))
        if warn.fulfilled:
            return TargetResult(fail, warn, warning=True)
    return TargetResult(fail, warn, passed=True)


@dataclass(frozen=True)
class ObjectiveResult:
    objective: AnalysisObjective
    result: TargetResult
    value: float | None  # None: no value (the fetch failed)
    score: float
    query: str = ""
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.score == 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.result.passed:
            return "pass"
        if self.result.warning:
            return "warning"
        return "fail"

    def raw(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "result": self.result.raw(),
            "objective": dict(self.objective.raw),
            "value": _json_number(self.value or 0.0),
            "query": self.query,
            "score": _json_number(self.score),
        }
        if self.error:
            out["error"] = self.error
        return out


def score_objective(
    objective: AnalysisObjective, value: float | None, query: str = "", error: str = ""
) -> ObjectiveResult:
    if value is None:
        return ObjectiveResult(objective, TargetResult(), None, 0.0, query, error or "no value")
    result = evaluate_target(value, objective)
    if result.passed:
        score = float(objective.weight)
    elif result.warning:
        score = objective.weight / 2
    else:
        score = 0.0
    return ObjectiveResult(objective, result, value, score, query)


@dataclass(frozen=True)
class AnalysisResult:
    objective_results: tuple[ObjectiveResult, ...]
    total_score: float
    maximum_score: float
    passed: bool
    warning: bool

    @property
    def achieved_percentage(self) -> float:
        if self.maximum_score == 0.0:
            return 0.0
        if self.total_score == self.maximum_score:
            return 100.0
        return self.total_score / self.maximum_score * 100.0

    @property
    def key_objective_failed(self) -> bool:
        return any(r.failed and r.objective.key_objective for r in self.objective_results)

    def raw(self) -> dict[str, Any]:
        return {
            "objectiveResults": [r.raw() for r in self.objective_results],
            "totalScore": _json_number(self.total_score),
            "maximumScore": _json_number(self.maximum_score),
            "pass": self.passed,
            "warning": self.warning,
        }


@dataclass(frozen=True)
class ObjectiveValue:
    """What the fetch produced for one objective: a value or an error."""

    value: float | None
    query: str = ""
    error: str = ""


def score_analysis(definition: AnalysisDefinition, values: Mapping[str, ObjectiveValue]) -> AnalysisResult:
    """Score every objective of `definition`; `values` is keyed by `AnalysisObjective.stored_key`."""
    results = []
    total = maximum = 0.0
    key_failed = False
    for objective in definition.objectives:
        got = values.get(objective.stored_key)
        if got is None:
            result = score_objective(
                objective, None, error=f"required value '{objective.stored_key}' not available"
            )
        else:
            result = score_objective(objective, got.value, got.query, got.error)
        results.append(result)
        maximum += objective.weight
        total += result.score
        if result.failed and objective.key_objective:
            key_failed = True
    partial = AnalysisResult(tuple(results), total, maximum, False, False)
    percentage = partial.achieved_percentage
    passed = percentage >= definition.pass_percentage
    warning = not passed and percentage >= definition.warning_percentage
    if key_failed:
        passed = warning = False
    return AnalysisResult(tuple(results), total, maximum, passed, warning)


def _json_number(x: float) -> float | int:
    """Go marshals float64 1.0 as `1`: keep integral values integral in the JSON."""
    return int(x) if x == int(x) and abs(x) < 2**53 else x
