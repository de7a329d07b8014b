"""Analysis scoring, table-driven on upstream's rules (failure 0, warning weight/2, pass weight)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from metrics_server.controller.model import AnalysisDefinition, parse_analysis_definition
from metrics_server.controller.scoring import ObjectiveValue, score_analysis, score_objective


def definition(objectives: list[dict[str, Any]], passing: int = 90, warning: int = 75) -> AnalysisDefinition:
    return parse_analysis_definition(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "AnalysisDefinition",
            "metadata": {"name": "def", "namespace": "default"},
            "spec": {
                "objectives": objectives,
                "totalScore": {"passPercentage": passing, "warningPercentage": warning},
            },
        }
    )


def obj(
    name: str, failure: dict | None = None, warning: dict | None = None, weight: int = 1, key: bool = False
):
    target: dict[str, Any] = {}
    if failure:
        target["failure"] = failure
    if warning:
        target["warning"] = warning
    return {
        "analysisValueTemplateRef": {"name": name},
        "target": target,
        "weight": weight,
        "keyObjective": key,
    }


FAIL_GT_10 = {"greaterThan": {"fixedValue": 10}}
WARN_GT_5 = {"greaterThan": {"fixedValue": 5}}


@pytest.mark.parametrize(
    ("value", "score", "status"),
    [
        (11, 0.0, "fail"),  # failure criteria met
        (10, 1.0, "warning"),  # not a failure, but a warning: half the weight (2 / 2)
        (6, 1.0, "warning"),
        (5, 2.0, "pass"),  # neither: the full weight
        (0, 2.0, "pass"),
    ],
)
def test_objective_score(value: float, score: float, status: str) -> None:
    d = definition([obj("a", FAIL_GT_10, WARN_GT_5, weight=2)])
    result = score_objective(d.objectives[0], value)
    assert (result.score, result.status) == (score, status)


def test_objective_without_criteria_passes() -> None:
    d = definition([obj("a")])
    assert score_objective(d.objectives[0], 123).score == 1.0


def test_objective_without_value_scores_zero() -> None:
    d = definition([obj("a", FAIL_GT_10)])
    result = score_objective(d.objectives[0], None, error="connection refused")
    assert (result.score, result.status, result.error) == (0.0, "error", "connection refused")


@pytest.mark.parametrize(
    ("values", "passing", "warning", "total", "maximum", "passed", "warned"),
    [
        # all pass
        ({"a": 1, "b": 1, "c": 1}, 90, 75, 4, 4, True, False),
        # weights: a (2) passes, b (1) fails -> 3/4 = 75%
        ({"a": 1, "b": 50, "c": 1}, 90, 60, 3, 4, False, True),
        # a warns (weight 2 -> 1), rest pass -> 3/4 = 75% -> warning at 75 (inclusive)
        ({"a": 7, "b": 1, "c": 1}, 90, 75, 3, 4, False, True),
        # same score, pass threshold inclusive
        ({"a": 7, "b": 1, "c": 1}, 75, 50, 3, 4, True, False),
        # below both thresholds
        ({"a": 50, "b": 1, "c": 1}, 90, 75, 2, 4, False, False),
    ],
)
def test_analysis_percentages(
    values: dict[str, float],
    passing: int,
    warning: int,
    total: float,
    maximum: float,
    passed: bool,
    warned: bool,
) -> None:
    d = definition(
        [obj("a", FAIL_GT_10, WARN_GT_5, weight=2), obj("b", FAIL_GT_10), obj("c", FAIL_GT_10)],
        passing,
        warning,
    )
    result = score_analysis(d, {k: ObjectiveValue(v) for k, v in values.items()})
    assert (result.total_score, result.maximum_score) == (total, maximum)
    assert (result.passed, result.warning) == (passed, warned)


def test_key_objective_failure_fails_the_analysis() -> None:
    d = definition(
        [obj("a", FAIL_GT_10, weight=10), obj("key", FAIL_GT_10, key=True)], passing=50, warning=10
    )
    result = score_analysis(d, {"a": ObjectiveValue(1), "key": ObjectiveValue(11)})
    assert result.achieved_percentage == pytest.approx(10 / 11 * 100)
    assert (result.passed, result.warning, result.key_objective_failed) == (False, False, True)


def test_key_objective_warning_does_not_fail() -> None:
    d = definition([obj("key", FAIL_GT_10, WARN_GT_5, weight=2, key=True)], passing=50, warning=10)
    result = score_analysis(d, {"key": ObjectiveValue(7)})
    assert (result.passed, result.warning) == (True, False)


def test_missing_value_scores_zero_with_upstream_message() -> None:
    d = definition([obj("a", FAIL_GT_10), obj("b", FAIL_GT_10)], passing=50, warning=10)
    result = score_analysis(d, {"a": ObjectiveValue(1)})
    assert result.passed  # 1/2 = 50%
    assert result.objective_results[1].error == "required value 'b' not available"


def test_no_objectives() -> None:
    # passPercentage 0 cannot pass validation (warningPercentage must be smaller): set it after
    result = score_analysis(dataclasses.replace(definition([], passing=1, warning=0), pass_percentage=0), {})
    assert result.achieved_percentage == 0.0 and result.passed


def test_stored_key_with_namespace() -> None:
    d = definition([{"analysisValueTemplateRef": {"name": "t", "namespace": "other"}, "target": {}}])
    assert d.objectives[0].stored_key == "t-other"


def test_raw_json_has_upstream_keys() -> None:
    d = definition(
        [
            obj("rt", {"greaterThan": {"fixedValue": "500m"}}, {"greaterThan": {"fixedValue": "300m"}}),
            obj("errors", {"greaterThan": {"fixedValue": 0}}, key=True),
        ],
        passing=60,
        warning=50,
    )
    result = score_analysis(d, {"rt": ObjectiveValue(0.00475, "q1"), "errors": ObjectiveValue(0, "q2")})
    raw = json.loads(json.dumps(result.raw()))
    assert set(raw) == {"objectiveResults", "totalScore", "maximumScore", "pass", "warning"}
    assert (
        raw["totalScore"] == 2
        and raw["maximumScore"] == 2
        and raw["pass"] is True
        and raw["warning"] is False
    )
    first, second = raw["objectiveResults"]
    assert first["result"] == {
        "failResult": {"operator": {"greaterThan": {"fixedValue": "500m"}}, "fulfilled": False},
        "warnResult": {"operator": {"greaterThan": {"fixedValue": "300m"}}, "fulfilled": False},
        "warning": False,
        "pass": True,
    }
    assert first["objective"] == {
        "analysisValueTemplateRef": {"name": "rt"},
        "target": {
            "failure": {"greaterThan": {"fixedValue": "500m"}},
            "warning": {"greaterThan": {"fixedValue": "300m"}},
        },
        "weight": 1,
    }
    assert first["value"] == 0.00475 and first["score"] == 1 and first["query"] == "q1"
    # no warning criteria: an empty operator, as upstream marshals it
    assert second["result"]["warnResult"] == {"operator": {}, "fulfilled": False}
    assert second["objective"]["keyObjective"] is True
    assert second["value"] == 0
