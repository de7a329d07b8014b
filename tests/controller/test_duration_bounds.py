"""Lifecycle durations and retries have documented maxima, in the model and in the CRD schema."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from metrics_server.controller import model
from metrics_server.model import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def definition(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": "gate", "namespace": "apps"},
        "spec": {
            "objectives": [{"keptnMetricRef": {"name": "m"}, "evaluationTarget": "<10"}],
            **spec,
        },
    }


def analysis(recent: str) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": {"name": "a", "namespace": "apps"},
        "spec": {"analysisDefinition": {"name": "d"}, "timeframe": {"recent": recent}},
    }


def test_the_maxima_are_accepted() -> None:
    model.parse_lifecycle(definition(retries=model.MAX_RETRIES, retryInterval="24h"))
    model.parse_lifecycle(analysis("8784h"))


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (definition(retries=model.MAX_RETRIES + 1), "spec.retries"),
        (definition(retries=10**12), "spec.retries"),
        (definition(retryInterval="25h"), "spec.retryInterval"),
        (analysis("8785h"), "spec.timeframe.recent"),
        (analysis("1000000h"), "spec.timeframe.recent"),
    ],
)
def test_beyond_the_maxima_is_rejected_naming_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        model.parse_lifecycle(doc)
    assert err.value.field_path == field


def test_the_crd_schema_carries_the_same_bounds() -> None:
    spec = importlib.util.spec_from_file_location("crdgen_lifecycle_bounds", ROOT / "deploy" / "crdgen.py")
    assert spec is not None and spec.loader is not None
    crdgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crdgen)
    assert crdgen.MAX_RETRIES == model.MAX_RETRIES
    assert crdgen.MAX_RETRY_INTERVAL_TEXT == model.MAX_RETRY_INTERVAL_TEXT
    text = (ROOT / "deploy/crds/lifecycle.keptn.sh_keptnevaluationdefinitions.yaml").read_text()
    assert f"maximum: {model.MAX_RETRIES}" in text
    assert f"duration(self) <= duration('{model.MAX_RETRY_INTERVAL_TEXT}')" in text
    text = (ROOT / "deploy/crds/metrics.keptn.sh_analyses.yaml").read_text()
    assert f"duration(self) <= duration('{model.MAX_RECENT_TEXT}')" in text
