"""Parsing the lifecycle kinds: upstream manifests accepted unchanged, mistakes named clearly."""

from __future__ import annotations

from typing import Any

import pytest

from metrics_server.controller.model import (
    parse_analysis,
    parse_analysis_definition,
    parse_evaluation,
    parse_evaluation_definition,
    parse_lifecycle,
    parse_value_template,
)
from metrics_server.model import ValidationError


def ked(objectives: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": "ked", "namespace": "apps"},
        "spec": {"objectives": objectives, **spec},
    }


def test_evaluation_definition_defaults() -> None:
    d = parse_evaluation_definition(ked([{"keptnMetricRef": {"name": "cpus"}, "evaluationTarget": ">4"}]))
    assert d.retries == 10 and d.retry_interval == "5s" and d.retry_interval_seconds == 5
    assert d.objectives[0].metric_ref.name == "cpus" and d.objectives[0].target.threshold == 4


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_evaluation_definition_versions(version: str) -> None:
    doc = ked([{"keptnMetricRef": {"name": "m", "namespace": "x"}, "evaluationTarget": "<1"}])
    doc["apiVersion"] = f"lifecycle.keptn.sh/{version}"
    assert parse_evaluation_definition(doc).objectives[0].metric_ref.namespace == "x"


@pytest.mark.parametrize(
    ("objective", "field_path", "fragment"),
    [
        (
            {"keptnMetricRef": {"name": "m"}, "evaluationTarget": "~4"},
            "spec.objectives[0].evaluationTarget",
            "operator",
        ),
        ({"keptnMetricRef": {"name": "m"}}, "spec.objectives[0].evaluationTarget", "is required"),
        ({"evaluationTarget": ">1"}, "spec.objectives[0].keptnMetricRef", "is required"),
        (
            {"keptnMetricRef": {}, "evaluationTarget": ">1"},
            "spec.objectives[0].keptnMetricRef",
            "is required",
        ),
    ],
)
def test_evaluation_definition_errors(objective: dict, field_path: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_evaluation_definition(ked([objective]))
    assert info.value.field_path == field_path and fragment in info.value.message
    assert info.value.obj == "KeptnEvaluationDefinition apps/ked"


def test_evaluation_definition_bad_retry_interval() -> None:
    with pytest.raises(ValidationError) as info:
        parse_evaluation_definition(ked([], retryInterval="5 seconds"))
    assert info.value.field_path == "spec.retryInterval"


def test_evaluation() -> None:
    e = parse_evaluation(
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnEvaluation",
            "metadata": {"name": "e"},
            "spec": {
                "evaluationDefinition": "ked",
                "workloadVersion": "1.0",
                "retries": 3,
                "retryInterval": "1m",
            },
        }
    )
    assert (e.meta.namespace, e.evaluation_definition, e.retries, e.retry_interval_seconds) == (
        "default",
        "ked",
        3,
        60,
    )


def analysis_doc(timeframe: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"analysisDefinition": {"name": "d"}, "timeframe": timeframe, **spec},
    }


def test_analysis_timeframes() -> None:
    a = parse_analysis(
        analysis_doc({"from": "2023-09-25T13:10:00Z", "to": "2023-09-25T13:15:00Z"}, args={"w": "x"})
    )
    start, end = a.timeframe.resolve(0)
    assert end - start == 300 and a.args == {"w": "x"}
    b = parse_analysis(analysis_doc({"recent": "5m"}))
    assert b.timeframe.resolve(1000.0) == (700.0, 1000.0)


@pytest.mark.parametrize(
    ("timeframe", "fragment"),
    [
        ({}, "set either recent"),
        ({"recent": "5m", "from": "2023-09-25T13:10:00Z"}, "set either recent"),
        ({"from": "2023-09-25T13:10:00Z"}, "set either recent"),
        ({"from": "2023-09-25T13:15:00Z", "to": "2023-09-25T13:10:00Z"}, "from must be before to"),
        ({"from": "yesterday", "to": "2023-09-25T13:10:00Z"}, "RFC3339"),
        ({"recent": "five minutes"}, "invalid duration"),
    ],
)
def test_analysis_timeframe_errors(timeframe: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_analysis(analysis_doc(timeframe))
    assert fragment in str(info.value)


def test_value_template_rejects_unsupported_syntax() -> None:
    doc = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisValueTemplate",
        "metadata": {"name": "t"},
        "spec": {"provider": {"name": "p"}, "query": "{{ .a | quote }}"},
    }
    with pytest.raises(ValidationError) as info:
        parse_value_template(doc)
    assert info.value.field_path == "spec.query" and "unsupported template action" in info.value.message


def test_analysis_definition_errors() -> None:
    base = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisDefinition",
        "metadata": {"name": "d"},
        "spec": {"objectives": [], "totalScore": {"passPercentage": 50, "warningPercentage": 60}},
    }
    with pytest.raises(ValidationError, match="warningPercentage must be smaller"):
        parse_analysis_definition(base)
    base["spec"] = {
        "objectives": [{"analysisValueTemplateRef": {"name": "t"}, "target": {"failure": {"lessThan": {}}}}],
        "totalScore": {"passPercentage": 50, "warningPercentage": 40},
    }
    with pytest.raises(ValidationError) as info:
        parse_analysis_definition(base)
    assert info.value.field_path == "spec.objectives[0].target.failure"


def test_other_kinds_are_ignored() -> None:
    assert parse_lifecycle({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}) is None
