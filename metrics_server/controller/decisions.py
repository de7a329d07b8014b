"""What reconciling a KeptnEvaluation or an Analysis decides, without doing any of it.

Each function here is pure: given the object, what was read for it and the time, it returns
a `Decision` (the status merge patch, the Events, when to look again). The controller in
`runtime.py` does the reads and carries decisions out, so every rule is testable as a table.

A reconcile reads in stages (the definition only for an unfinished object, the values only
with a valid definition), so each object kind has one function per stage:

- KeptnEvaluation: `triage_evaluation` (the object alone), then `decide_evaluation` (with
  its KeptnEvaluationDefinition and the metric readings);
- Analysis: `triage_analysis`, `analysis_definition` (with its AnalysisDefinition), then
  `decide_analysis` (with the values collected over the timeframe).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from metrics_server.controller.analysis import stored_values
from metrics_server.controller.evaluation import (
    FAILED,
    PENDING,
    PROGRESSING,
    SUCCEEDED,
    AttemptResult,
    MetricReading,
    run_attempt,
)
from metrics_server.controller.flags import ControllerOptions
from metrics_server.controller.model import (
    Analysis,
    AnalysisDefinition,
    KeptnEvaluation,
    KeptnEvaluationDefinition,
    parse_analysis,
    parse_analysis_definition,
    parse_evaluation,
    parse_evaluation_definition,
)
from metrics_server.controller.scoring import AnalysisResult, ObjectiveValue, score_analysis
from metrics_server.kube.client import KubeObject
from metrics_server.kube.events import Event
from metrics_server.model import ObjectKey, ValidationError
from metrics_server.state import rfc3339


@dataclass(frozen=True)
class Decision:
    """One reconcile's effects: the Events are recorded, `status` is merged into .status (None:
    no write), then the object is looked at again after `requeue_after` seconds (None: only
    when it changes)."""

    status: KubeObject | None = None
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None


NOTHING = Decision()


# -- KeptnEvaluation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationInProgress:
    """A valid KeptnEvaluation that still has attempts left, as its status records them."""

    evaluation: KeptnEvaluation
    overall: str | None
    retry_count: int
    previous: KubeObject  # status.evaluationStatus: objectives that Succeeded are not re-checked
    start_time: str

    @property
    def definition_key(self) -> ObjectKey:
        return ObjectKey(self.evaluation.meta.namespace, self.evaluation.evaluation_definition)


def _evaluation_failed(
    now: float,
    reason: str,
    message: str,
    evaluation_status: KubeObject,
    retry_count: int,
    start_time: str = "",
) -> Decision:
    stamp = rfc3339(now)
    status = {
        "overallStatus": FAILED,
        "retryCount": retry_count,
        "evaluationStatus": evaluation_status,
        "startTime": start_time or stamp,
        "endTime": stamp,
    }
    return Decision(status, (Event("Warning", reason, message),))


def triage_evaluation(doc: Mapping[str, Any], namespace: str, now: float) -> Decision | EvaluationInProgress:
    """Finished, invalid or out of retries: the final Decision; else what the next attempt needs."""
    try:
        evaluation = parse_evaluation(doc, namespace)
    except ValidationError as exc:
        return _evaluation_failed(now, "InvalidEvaluation", str(exc), {}, 0)
    status = evaluation.status
    overall = status.get("overallStatus")
    if overall in (SUCCEEDED, FAILED):
        return NOTHING
    retry_count = int(status.get("retryCount") or 0)
    previous = status.get("evaluationStatus")
    previous = dict(previous) if isinstance(previous, Mapping) else {}
    start_time = str(status.get("startTime") or rfc3339(now))
    if retry_count >= evaluation.retries:
        return _evaluation_failed(
            now, "EvaluationFailed", "retryCount exceeded", previous, retry_count, start_time
        )
    return EvaluationInProgress(evaluation, overall, retry_count, previous, start_time)


def decide_evaluation(
    step: EvaluationInProgress,
    raw_definition: Mapping[str, Any] | None,
    readings: Callable[[KeptnEvaluationDefinition], Mapping[int, MetricReading]],
    now: float,
    definition_retry_interval: float,
) -> Decision:
    """One attempt. `raw_definition` is None when it does not exist (yet): wait for it, Pending.
    `readings` gives each objective's metric reading (by index) for the parsed definition."""
    if raw_definition is None:
        pending = None
        if step.overall is None:
            pending = {
                "overallStatus": PENDING,
                "retryCount": step.retry_count,
                "evaluationStatus": {},
                "startTime": step.start_time,
            }
        return Decision(pending, requeue_after=definition_retry_interval)
    try:
        definition = parse_evaluation_definition(raw_definition, step.definition_key.namespace)
    except ValidationError as exc:
        return _evaluation_failed(
            now, "InvalidEvaluationDefinition", str(exc), step.previous, step.retry_count, step.start_time
        )
    attempt = run_attempt(definition, readings(definition), step.previous)
    return _after_attempt(step, definition, attempt, now)


def _after_attempt(
    step: EvaluationInProgress, definition: KeptnEvaluationDefinition, attempt: AttemptResult, now: float
) -> Decision:
    retry_count = step.retry_count + 1
    status: KubeObject = {
        "retryCount": retry_count,
        "evaluationStatus": {
            **{k: None for k in step.previous if k not in attempt.evaluation_status},
            **attempt.evaluation_status,
        },
        "startTime": step.start_time,
    }
    events: list[Event] = []
    if retry_count == 1 and step.overall in (None, PENDING):
        events.append(Event("Normal", "EvaluationStarted", f"evaluating {definition.key}"))
    if attempt.succeeded:
        status.update(overallStatus=SUCCEEDED, endTime=rfc3339(now))
        message = (
            f"all {len(attempt.outcomes)} objectives of {definition.key} met after {retry_count} attempt(s)"
        )
        return Decision(status, (*events, Event("Normal", "EvaluationSucceeded", message)))
    if retry_count >= step.evaluation.retries:
        failing = "; ".join(
            f"{o.objective.metric_ref.name}: {o.message}" for o in attempt.outcomes if o.status == FAILED
        )
        status.update(overallStatus=FAILED, endTime=rfc3339(now))
        message = f"retryCount exceeded ({retry_count}): {failing}"
        return Decision(status, (*events, Event("Warning", "EvaluationFailed", message)))
    status["overallStatus"] = PROGRESSING
    return Decision(status, tuple(events), requeue_after=step.evaluation.retry_interval_seconds)


# -- Analysis ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisDecision(Decision):
    """`result` is set when the Analysis completes (its gauges are reported then)."""

    result: AnalysisResult | None = None


def triage_analysis(doc: Mapping[str, Any], namespace: str) -> Decision | Analysis:
    """Invalid or Completed: the final Decision; else the parsed Analysis to work on."""
    try:
        analysis = parse_analysis(doc, namespace)
    except ValidationError as exc:
        return Decision(events=(Event("Warning", "InvalidAnalysis", str(exc)),))
    if analysis.status.get("state") == "Completed":
        return NOTHING
    return analysis


def analysis_timeframe(analysis: Analysis, now: float) -> dict[str, str]:
    """The timeframe stored at the first attempt (a `recent` one must not move), else resolved now."""
    stored = analysis.status.get("timeframe")
    if isinstance(stored, Mapping) and stored.get("from") and stored.get("to"):
        return {"from": str(stored["from"]), "to": str(stored["to"])}
    start, end = analysis.timeframe.resolve(now)
    return {"from": rfc3339(start), "to": rfc3339(end)}


def analysis_definition(
    analysis: Analysis, raw_definition: Mapping[str, Any] | None, now: float, definition_retry_interval: float
) -> Decision | AnalysisDefinition:
    """The parsed AnalysisDefinition, or the Decision to wait for a missing or invalid one."""
    if raw_definition is None:
        pending = None
        if not analysis.status.get("state"):
            pending = {"state": "Pending", "timeframe": analysis_timeframe(analysis, now)}
        return Decision(pending, requeue_after=definition_retry_interval)
    try:
        return parse_analysis_definition(raw_definition, analysis.definition_key.namespace)
    except ValidationError as exc:
        event = Event("Warning", "InvalidAnalysisDefinition", str(exc))
        return Decision(events=(event,), requeue_after=definition_retry_interval)


def decide_analysis(
    definition: AnalysisDefinition,
    values: Mapping[str, ObjectiveValue],
    timeframe: dict[str, str],
    attempt: int,
    options: ControllerOptions,
) -> AnalysisDecision:
    """After attempt number `attempt` (from 1): retry the missing values with backoff, or score."""
    stored = stored_values(definition, values)
    errors = {k: v.error for k, v in values.items() if v.error}
    if errors and attempt < options.analysis_max_retries:
        delay = min(
            options.analysis_retry_interval * 2 ** (attempt - 1),
            options.analysis_max_retry_interval,
        )
        message = (
            f"attempt {attempt} of {options.analysis_max_retries}: "
            + "; ".join(f"{k}: {v}" for k, v in errors.items())
            + f"; retrying in {delay:g}s"
        )
        return AnalysisDecision(
            {"state": "Progressing", "storedValues": stored, "timeframe": timeframe},
            (Event("Warning", "AnalysisRetry", message),),
            requeue_after=delay,
        )
    result = score_analysis(definition, values)
    status = {
        "state": "Completed",
        "pass": result.passed,
        "warning": result.warning,
        "raw": json.dumps(result.raw(), separators=(",", ":")),
        "storedValues": stored,
        "timeframe": timeframe,
    }
    return AnalysisDecision(status, (_verdict(result, errors),), result=result)


def _verdict(result: AnalysisResult, errors: Mapping[str, str]) -> Event:
    verdict = "passed" if result.passed else "ended with a warning" if result.warning else "failed"
    message = (
        f"analysis {verdict}: score {result.total_score:g}/{result.maximum_score:g} "
        f"({result.achieved_percentage:.1f}%)"
    )
    if errors:
        message += "; values missing after retries: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    if result.passed:
        return Event("Normal", "AnalysisCompleted", message)
    return Event("Warning", "AnalysisWarning" if result.warning else "AnalysisFailed", message)


__all__ = [
    "NOTHING",
    "AnalysisDecision",
    "Decision",
    "EvaluationInProgress",
    "analysis_definition",
    "analysis_timeframe",
    "decide_analysis",
    "decide_evaluation",
    "triage_analysis",
    "triage_evaluation",
]
