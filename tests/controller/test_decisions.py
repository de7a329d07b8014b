"""What reconciling decides, as tables: object + what was read + time -> status patch, Events, requeue."""

from __future__ import annotations

from typing import Any

import pytest

from metrics_server.controller.decisions import (
    NOTHING,
    AnalysisDecision,
    Decision,
    EvaluationInProgress,
    analysis_definition,
    analysis_timeframe,
    decide_analysis,
    decide_evaluation,
    triage_analysis,
    triage_evaluation,
)
from metrics_server.controller.evaluation import MetricReading
from metrics_server.controller.flags import ControllerOptions
from metrics_server.controller.model import AnalysisDefinition, KeptnEvaluationDefinition, parse_analysis
from metrics_server.controller.scoring import ObjectiveValue
from metrics_server.model import ObjectKey
from metrics_server.state import rfc3339

NOW = 1_700_000_000.0
STAMP = rfc3339(NOW)
RETRY = 10.0


def evaluation(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluation",
        "metadata": {"name": "e", "namespace": "apps", "uid": "u1"},
        "spec": {"evaluationDefinition": "ked", "retries": 3, "retryInterval": "7s", **spec},
    }
    if status is not None:
        doc["status"] = status
    return doc


def evaluation_definition(*targets: str) -> dict[str, Any]:
    objectives = [
        {"keptnMetricRef": {"name": f"m{i}"}, "evaluationTarget": target} for i, target in enumerate(targets)
    ]
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": "ked", "namespace": "apps"},
        "spec": {"objectives": objectives},
    }


def readings(*values: float | None) -> Any:
    def read(definition: KeptnEvaluationDefinition) -> dict[int, MetricReading]:
        assert len(definition.objectives) == len(values)
        return {
            i: MetricReading(v, f"{v:g}") if v is not None else MetricReading(None, "", "no value")
            for i, v in enumerate(values)
        }

    return read


def in_progress(status: dict[str, Any] | None = None) -> EvaluationInProgress:
    step = triage_evaluation(evaluation(status), "apps", NOW)
    assert isinstance(step, EvaluationInProgress)
    return step


def reasons(decision: Decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in decision.events]


# -- KeptnEvaluation: before reading anything ----------------------------------------------------


@pytest.mark.parametrize("overall", ["Succeeded", "Failed"])
def test_a_finished_evaluation_is_left_alone(overall: str) -> None:
    assert triage_evaluation(evaluation({"overallStatus": overall}), "apps", NOW) == NOTHING


def test_an_invalid_evaluation_fails_at_once_with_a_warning() -> None:
    doc = evaluation()
    del doc["spec"]["evaluationDefinition"]
    decision = triage_evaluation(doc, "apps", NOW)
    assert isinstance(decision, Decision)
    assert decision.status == {
        "overallStatus": "Failed",
        "retryCount": 0,
        "evaluationStatus": {},
        "startTime": STAMP,
        "endTime": STAMP,
    }
    assert reasons(decision) == [("Warning", "InvalidEvaluation")]
    assert "spec.evaluationDefinition" in decision.events[0].message
    assert decision.requeue_after is None


def test_an_evaluation_out_of_retries_fails_keeping_what_it_had() -> None:
    previous = {"m0": {"status": "Failed", "value": "1", "message": "no"}}
    status = {"retryCount": 3, "evaluationStatus": previous, "startTime": "2023-01-01T00:00:00Z"}
    decision = triage_evaluation(evaluation(status), "apps", NOW)
    assert isinstance(decision, Decision)
    assert decision.status == {
        "overallStatus": "Failed",
        "retryCount": 3,
        "evaluationStatus": previous,
        "startTime": "2023-01-01T00:00:00Z",
        "endTime": STAMP,
    }
    assert decision.events[0].message == "retryCount exceeded"


def test_an_unfinished_evaluation_asks_for_its_definition() -> None:
    step = in_progress({"overallStatus": "Progressing", "retryCount": 1, "startTime": "2023-01-01T00:00:00Z"})
    assert step.definition_key == ObjectKey("apps", "ked")
    assert (step.overall, step.retry_count, step.start_time) == ("Progressing", 1, "2023-01-01T00:00:00Z")


# -- KeptnEvaluation: with the definition and the readings ---------------------------------------


@pytest.mark.parametrize(
    ("status", "patch"),
    [
        (None, {"overallStatus": "Pending", "retryCount": 0, "evaluationStatus": {}, "startTime": STAMP}),
        ({"overallStatus": "Pending", "startTime": STAMP}, None),  # already said: no write
    ],
)
def test_a_missing_definition_is_waited_for(
    status: dict[str, Any] | None, patch: dict[str, Any] | None
) -> None:
    decision = decide_evaluation(in_progress(status), None, readings(), NOW, RETRY)
    assert decision == Decision(patch, (), RETRY)


def test_an_invalid_definition_fails_the_evaluation() -> None:
    decision = decide_evaluation(in_progress(), evaluation_definition("~4"), readings(1), NOW, RETRY)
    assert decision.status is not None and decision.status["overallStatus"] == "Failed"
    assert reasons(decision) == [("Warning", "InvalidEvaluationDefinition")]
    assert decision.requeue_after is None


@pytest.mark.parametrize(
    ("status", "values", "overall", "retry_count", "events", "requeue"),
    [
        # first attempt, all met: started + succeeded, done
        (
            None,
            (5, 0),
            "Succeeded",
            1,
            [("Normal", "EvaluationStarted"), ("Normal", "EvaluationSucceeded")],
            None,
        ),
        # first attempt, one missed: started, try again after spec.retryInterval
        (None, (5, 9), "Progressing", 1, [("Normal", "EvaluationStarted")], 7.0),
        # a later attempt that still misses: no Event, try again
        ({"overallStatus": "Progressing", "retryCount": 1}, (5, 9), "Progressing", 2, [], 7.0),
        # the last attempt misses: failed with a warning naming the objective
        (
            {"overallStatus": "Progressing", "retryCount": 2},
            (5, None),
            "Failed",
            3,
            [("Warning", "EvaluationFailed")],
            None,
        ),
        # the last attempt meets: succeeded
        (
            {"overallStatus": "Progressing", "retryCount": 2},
            (5, 0),
            "Succeeded",
            3,
            [("Normal", "EvaluationSucceeded")],
            None,
        ),
    ],
)
def test_an_attempt(
    status: dict[str, Any] | None,
    values: tuple[float | None, ...],
    overall: str,
    retry_count: int,
    events: list[tuple[str, str]],
    requeue: float | None,
) -> None:
    decision = decide_evaluation(
        in_progress(status), evaluation_definition(">4", "<1"), readings(*values), NOW, RETRY
    )
    assert decision.status is not None
    assert (decision.status["overallStatus"], decision.status["retryCount"]) == (overall, retry_count)
    assert set(decision.status["evaluationStatus"]) == {"m0", "m1"}
    assert ("endTime" in decision.status) == (overall != "Progressing")
    assert reasons(decision) == events
    assert decision.requeue_after == requeue


def test_a_failed_evaluation_names_the_failing_objectives() -> None:
    step = in_progress({"overallStatus": "Progressing", "retryCount": 2})
    decision = decide_evaluation(step, evaluation_definition(">4", "<1"), readings(5, 9), NOW, RETRY)
    assert decision.events[-1].message.startswith("retryCount exceeded (3): m1: ")


def test_objectives_that_already_succeeded_are_kept_and_vanished_ones_removed() -> None:
    previous = {
        "m0": {"status": "Succeeded", "value": "5", "message": "earlier"},
        "gone": {"status": "Failed", "value": "", "message": "x"},
    }
    step = in_progress({"overallStatus": "Progressing", "retryCount": 1, "evaluationStatus": previous})
    decision = decide_evaluation(step, evaluation_definition(">4", "<1"), readings(None, 0), NOW, RETRY)
    assert decision.status is not None
    ev = decision.status["evaluationStatus"]
    assert ev["m0"]["message"] == "earlier" and ev["gone"] is None  # merge patch: null deletes
    assert decision.status["overallStatus"] == "Succeeded"


# -- Analysis ------------------------------------------------------------------------------------


def analysis(status: dict[str, Any] | None = None, timeframe: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": {"name": "a", "namespace": "apps", "uid": "u2"},
        "spec": {"analysisDefinition": {"name": "d"}, "timeframe": timeframe or {"recent": "5m"}},
    }
    if status is not None:
        doc["status"] = status
    return doc


def analysis_definition_doc(**total: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisDefinition",
        "metadata": {"name": "d", "namespace": "apps"},
        "spec": {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "t"},
                    "target": {"failure": {"greaterThan": {"fixedValue": 10}}},
                }
            ],
            "totalScore": total or {"passPercentage": 90, "warningPercentage": 60},
        },
    }


def parsed_definition() -> AnalysisDefinition:
    definition = analysis_definition(parse_analysis(analysis()), analysis_definition_doc(), NOW, RETRY)
    assert isinstance(definition, AnalysisDefinition)
    return definition


OPTIONS = ControllerOptions(
    analysis_max_retries=3, analysis_retry_interval=10.0, analysis_max_retry_interval=15.0
)
TIMEFRAME = {"from": rfc3339(NOW - 300), "to": STAMP}


def test_a_completed_analysis_is_left_alone() -> None:
    assert triage_analysis(analysis({"state": "Completed"}), "apps") == NOTHING


def test_an_invalid_analysis_only_warns() -> None:
    decision = triage_analysis(analysis(timeframe={"recent": "five minutes"}), "apps")
    assert isinstance(decision, Decision)
    assert (decision.status, reasons(decision), decision.requeue_after) == (
        None,
        [("Warning", "InvalidAnalysis")],
        None,
    )


@pytest.mark.parametrize(
    ("status", "patch"),
    [
        (None, {"state": "Pending", "timeframe": TIMEFRAME}),
        ({"state": "Pending"}, None),
    ],
)
def test_a_missing_analysis_definition_is_waited_for(
    status: dict[str, Any] | None, patch: dict[str, Any] | None
) -> None:
    decision = analysis_definition(parse_analysis(analysis(status)), None, NOW, RETRY)
    assert decision == Decision(patch, (), RETRY)


def test_an_invalid_analysis_definition_warns_and_is_retried() -> None:
    bad = analysis_definition_doc(passPercentage=50, warningPercentage=60)
    decision = analysis_definition(parse_analysis(analysis()), bad, NOW, RETRY)
    assert isinstance(decision, Decision)
    assert (decision.status, reasons(decision), decision.requeue_after) == (
        None,
        [("Warning", "InvalidAnalysisDefinition")],
        RETRY,
    )


def test_the_timeframe_is_fixed_at_the_first_attempt() -> None:
    first = analysis_timeframe(parse_analysis(analysis()), NOW)
    assert first == TIMEFRAME
    later = analysis_timeframe(parse_analysis(analysis({"timeframe": first})), NOW + 3600)
    assert later == first


@pytest.mark.parametrize(
    ("value", "attempt", "state", "events", "requeue", "completed"),
    [
        (ObjectiveValue(3.0, "q"), 1, "Completed", [("Normal", "AnalysisCompleted")], None, True),
        (ObjectiveValue(30.0, "q"), 1, "Completed", [("Warning", "AnalysisFailed")], None, True),
        # a missing value is retried with exponential backoff capped by the maximum
        (ObjectiveValue(None, "q", "timeout"), 1, "Progressing", [("Warning", "AnalysisRetry")], 10.0, False),
        (ObjectiveValue(None, "q", "timeout"), 2, "Progressing", [("Warning", "AnalysisRetry")], 15.0, False),
        # out of retries: completed with the objective scored 0
        (ObjectiveValue(None, "q", "timeout"), 3, "Completed", [("Warning", "AnalysisFailed")], None, True),
    ],
)
def test_after_collecting_values(
    value: ObjectiveValue,
    attempt: int,
    state: str,
    events: list[tuple[str, str]],
    requeue: float | None,
    completed: bool,
) -> None:
    decision = decide_analysis(parsed_definition(), {"t": value}, TIMEFRAME, attempt, OPTIONS)
    assert isinstance(decision, AnalysisDecision)
    assert decision.status is not None
    assert decision.status["state"] == state and decision.status["timeframe"] == TIMEFRAME
    assert set(decision.status["storedValues"]) == {"t"}
    assert reasons(decision) == events
    assert decision.requeue_after == requeue
    assert (decision.result is not None) == completed
    if completed:
        assert decision.status["pass"] is (events[0][1] == "AnalysisCompleted")
        assert isinstance(decision.status["raw"], str)


def test_a_completion_after_retries_names_the_missing_values() -> None:
    decision = decide_analysis(
        parsed_definition(), {"t": ObjectiveValue(None, "q", "timeout")}, TIMEFRAME, 3, OPTIONS
    )
    assert "values missing after retries: t: timeout" in decision.events[0].message


def test_a_retry_says_which_attempt_and_when() -> None:
    decision = decide_analysis(
        parsed_definition(), {"t": ObjectiveValue(None, "q", "timeout")}, TIMEFRAME, 2, OPTIONS
    )
    assert decision.events[0].message == "attempt 2 of 3: t: timeout; retrying in 15s"
