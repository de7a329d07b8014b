"""KeptnEvaluation objectives: read a KeptnMetric's value, compare it with the target.

Shared by the in-cluster controller (values from the KeptnMetric status, as upstream) and
`keptn-metrics evaluate` (values fetched live). Messages use upstream's wording where
upstream has one ("value '7' met objective '>5'"); a stale or erroring metric never passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metrics_server.controller.model import EvaluationObjective, KeptnEvaluationDefinition
from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.state import STALENESS_FACTOR, MetricState, format_value, parse_rfc3339

SUCCEEDED = "Succeeded"
FAILED = "Failed"
PROGRESSING = "Progressing"
PENDING = "Pending"

@dataclass(frozen=True)
class MetricReading:
    """A metric's value as an objective sees it; `problem` says why it cannot be used."""

    value: float | None
    text: str = ""
    problem: str = ""

    @property
    def usable(self) -> bool:
        return self.value is not None and not self.problem


def _stale(key: ObjectKey, text: str, age: float, interval: float, factor: float) -> str:
    return (
        f"value '{text}' of KeptnMetric {key} is stale: last updated {age:.0f}s ago, more than "
        f"{factor:g} x fetchIntervalSeconds ({interval:g}s)"
    )


def reading_from_status(
    metric: KeptnMetric, now: float, staleness_factor: float = STALENESS_FACTOR
) -> MetricReading:
    """The value written in `KeptnMetric.status` (value, lastUpdated, errMsg)."""
    status: Mapping[str, Any] = metric.status or {}
    text = status.get("value")
    err = str(status.get("errMsg") or "")
    if err:
        return MetricReading(None, text or "", f"KeptnMetric {metric.key} reports an error: {err}")
    if not isinstance(text, str) or not text:
        return MetricReading(None, "", f"empty value for: {metric.meta.name}")
    try:
        value = float(text)
    except ValueError:
        return MetricReading(None, text, f"value '{text}' of KeptnMetric {metric.key} is not a number")
    if not math.isfinite(value):
        return MetricReading(None, text, f"value '{text}' of KeptnMetric {metric.key} is not a finite number")
    updated = parse_rfc3339(str(status.get("lastUpdated") or ""))
    limit = staleness_factor * metric.fetch_interval_seconds
    if staleness_factor > 0:
        if updated is None:
            return MetricReading(
                value, text, f"value '{text}' of KeptnMetric {metric.key} has no lastUpdated time"
            )
        age = now - updated
        if age > limit:
            return MetricReading(
                value, text, _stale(metric.key, text, age, metric.fetch_interval_seconds, staleness_factor)
            )
    return MetricReading(value, text)


def reading_from_state(
    state: MetricState, now: float, staleness_factor: float = STALENESS_FACTOR
) -> MetricReading:
    """The evaluator's own cache (the leader's fresher copy of the same status)."""
    if state.error:
        return MetricReading(
            None, state.value_text, f"KeptnMetric {state.key} reports an error: {state.error}"
        )
    if state.value is None or state.last_success is None:
        return MetricReading(None, "", f"empty value for: {state.key.name}")
    text = state.value_text or format_value(state.value)
    age = state.age(now) or 0.0
    if staleness_factor > 0 and age > staleness_factor * state.fetch_interval:
        return MetricReading(
            state.value, text, _stale(state.key, text, age, state.fetch_interval, staleness_factor)
        )
    return MetricReading(state.value, text)


def metric_candidates(
    objective: EvaluationObjective, namespace: str, server_namespace: str
) -> list[ObjectKey]:
    """Where the objective's KeptnMetric may live, in upstream's order: the ref's namespace if
    set; else the evaluation's namespace, then the Keptn (server) namespace."""
    ref = objective.metric_ref
    if ref.namespace:
        return [ObjectKey(ref.namespace, ref.name)]
    keys = [ObjectKey(namespace, ref.name)]
    if server_namespace and server_namespace != namespace:
        keys.append(ObjectKey(server_namespace, ref.name))
    return keys


def not_found_message(objective: EvaluationObjective) -> str:
    return f'keptnmetrics.metrics.keptn.sh "{objective.metric_ref.name}" not found'


@dataclass(frozen=True)
class ObjectiveOutcome:
    objective: EvaluationObjective
    value: str
    status: str  # Succeeded | Failed
    message: str
    measured: bool  # a value was compared with the target (False: no usable value)

    def status_item(self) -> dict[str, str]:
        return {"value": self.value, "status": self.status, "message": self.message}


def check_objective(objective: EvaluationObjective, reading: MetricReading) -> ObjectiveOutcome:
    target = objective.target
    if not reading.usable:
        return ObjectiveOutcome(objective, reading.text, FAILED, reading.problem or "no value", False)
    assert reading.value is not None
    if target.check(reading.value):
        return ObjectiveOutcome(
            objective, reading.text, SUCCEEDED, f"value '{reading.text}' met objective '{target.text}'", True
        )
    return ObjectiveOutcome(
        objective,
        reading.text,
        FAILED,
        f"value '{reading.text}' did not meet objective '{target.text}'",
        True,
    )


@dataclass(frozen=True)
class AttemptResult:
    outcomes: tuple[ObjectiveOutcome, ...]
    evaluation_status: dict[str, dict[str, str]]

    @property
    def succeeded(self) -> bool:
        return all(o.status == SUCCEEDED for o in self.outcomes)

    @property
    def definite_failure(self) -> bool:
        """Some objective had a usable value that missed its target (not merely no value)."""
        return any(o.status == FAILED and o.measured for o in self.outcomes)


def run_attempt(
    definition: KeptnEvaluationDefinition,
    readings: Mapping[int, MetricReading],
    previous: Mapping[str, Any] | None = None,
) -> AttemptResult:
    """One attempt over all objectives. As upstream, an objective that already Succeeded in an
    earlier attempt (in `previous` = status.evaluationStatus) is kept and not re-checked.
    `readings` is keyed by objective index."""
    outcomes = []
    status: dict[str, dict[str, str]] = {}
    previous = previous or {}
    for i, objective in enumerate(definition.objectives):
        name = objective.metric_ref.name
        before = previous.get(name)
        if isinstance(before, Mapping) and before.get("status") == SUCCEEDED:
            outcome = ObjectiveOutcome(
                objective, str(before.get("value", "")), SUCCEEDED, str(before.get("message", "")), True
            )
        else:
            outcome = check_objective(objective, readings.get(i, MetricReading(None, "", "no value")))
        outcomes.append(outcome)
        status[name] = outcome.status_item()
    return AttemptResult(tuple(outcomes), status)
