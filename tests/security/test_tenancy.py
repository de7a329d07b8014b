"""The tenancy model (issue 10, item 2, "AnalysisValueTemplate in tenant-a with provider
namespace tenant-b queried with tenant-b's credentials")."""

from __future__ import annotations

from typing import Any

import pytest

from metrics_server.controller.analysis import AnalysisConfigError, prepare
from metrics_server.controller.model import parse_analysis, parse_analysis_definition, parse_value_template
from metrics_server.model import KeptnMetricsProvider, ObjectKey, ObjectMeta, parse_provider
from metrics_server.tenancy import ALLOWED_NAMESPACES_ANNOTATION, may_read_metric, may_use_provider

SERVER_NS = "keptn-system"


def meta(ns: str, allowed: str | None = None) -> ObjectMeta:
    return ObjectMeta(
        ns, "x", annotations={ALLOWED_NAMESPACES_ANNOTATION: allowed} if allowed is not None else {}
    )


@pytest.mark.parametrize(
    ("provider_ns", "allowed", "consumer", "ok"),
    [
        ("tenant-a", None, "tenant-a", True),  # own namespace
        (SERVER_NS, None, "tenant-b", True),  # upstream's shared fallback
        ("tenant-b", None, "tenant-a", False),  # another tenant's credentials
        ("tenant-b", "tenant-c, tenant-a", "tenant-a", True),  # opted in, comma list
        ("tenant-b", "tenant-c tenant-d", "tenant-a", False),
        ("tenant-b", "*", "tenant-z", True),
        ("tenant-b", "", "tenant-a", False),
    ],
)
def test_provider_use(provider_ns: str, allowed: str | None, consumer: str, ok: bool) -> None:
    assert may_use_provider(meta(provider_ns, allowed), consumer, SERVER_NS) is ok


def test_metric_reads() -> None:
    assert may_read_metric(meta("tenant-a"), "tenant-a")
    assert not may_read_metric(meta("tenant-b"), "tenant-a")
    assert may_read_metric(meta("tenant-b", "tenant-a"), "tenant-a")
    assert not may_read_metric(meta(SERVER_NS), "tenant-a")
    assert may_read_metric(meta(SERVER_NS), "tenant-a", SERVER_NS)


# -- through an Analysis ---------------------------------------------------------------------------


def _doc(
    kind: str, ns: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "metrics.keptn.sh/v1", "kind": kind, "metadata": md, "spec": spec}


def setup(provider_ns: str, annotations: dict[str, str] | None = None) -> tuple[Any, ...]:
    template = parse_value_template(
        _doc(
            "AnalysisValueTemplate",
            "tenant-a",
            "t",
            {"provider": {"name": "prom", "namespace": provider_ns}, "query": "up"},
        )
    )
    definition = parse_analysis_definition(
        _doc(
            "AnalysisDefinition",
            "tenant-a",
            "d",
            {
                "objectives": [{"analysisValueTemplateRef": {"name": "t"}, "target": {}}],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        )
    )
    analysis = parse_analysis(
        _doc(
            "Analysis", "tenant-a", "a", {"analysisDefinition": {"name": "d"}, "timeframe": {"recent": "5m"}}
        )
    )
    provider = parse_provider(
        _doc(
            "KeptnMetricsProvider",
            provider_ns,
            "prom",
            {"type": "prometheus", "targetServer": "http://p"},
            annotations,
        )
    )
    providers: dict[ObjectKey, KeptnMetricsProvider] = {provider.key: provider}
    return analysis, definition, definition.objectives[0], {template.key: template}.get, providers.get


def test_template_cannot_borrow_another_tenants_provider() -> None:
    analysis, definition, objective, templates, providers = setup("tenant-b")
    with pytest.raises(AnalysisConfigError, match=ALLOWED_NAMESPACES_ANNOTATION):
        prepare(analysis, definition, objective, templates, providers, SERVER_NS)


def test_provider_that_opts_in_can_be_used() -> None:
    analysis, definition, objective, templates, providers = setup(
        "tenant-b", {ALLOWED_NAMESPACES_ANNOTATION: "tenant-a"}
    )
    assert prepare(
        analysis, definition, objective, templates, providers, SERVER_NS
    ).provider.key == ObjectKey("tenant-b", "prom")


def test_server_namespace_provider_stays_shared() -> None:
    analysis, definition, objective, templates, providers = setup(SERVER_NS)
    assert (
        prepare(analysis, definition, objective, templates, providers, SERVER_NS).provider.meta.namespace
        == SERVER_NS
    )


# -- through a KeptnEvaluation ---------------------------------------------------------------------


def evaluation_reading(metric_annotations: dict[str, str] | None, metric_ns: str = "tenant-b") -> Any:
    from metrics_server.controller.flags import ControllerOptions
    from metrics_server.controller.model import parse_evaluation_definition
    from metrics_server.controller.runtime import LifecycleController, RealClock
    from metrics_server.model import parse_metric
    from metrics_server.state import MetricStates
    from metrics_server.store.base import IndexedStore

    store = IndexedStore(server_namespace=SERVER_NS)
    md: dict[str, Any] = {"name": "revenue", "namespace": metric_ns}
    if metric_annotations:
        md["annotations"] = metric_annotations
    doc = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": md,
        "spec": {"provider": {"name": "prom"}, "query": "q", "fetchIntervalSeconds": 10},
    }
    store.apply(parse_metric(doc))
    definition = parse_evaluation_definition(
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnEvaluationDefinition",
            "metadata": {"name": "gate", "namespace": "tenant-a"},
            "spec": {
                "objectives": [
                    {"keptnMetricRef": {"name": "revenue", "namespace": metric_ns}, "evaluationTarget": ">1"}
                ]
            },
        }
    )
    controller = LifecycleController(None, store, MetricStates(), ControllerOptions(), RealClock())  # type: ignore[arg-type]
    return controller._reading(definition, 0)


def test_evaluation_cannot_read_another_tenants_metric() -> None:
    reading = evaluation_reading(None)
    assert reading.value is None and ALLOWED_NAMESPACES_ANNOTATION in reading.problem


def test_evaluation_reads_a_metric_that_opts_in_and_the_server_namespace() -> None:
    assert (
        ALLOWED_NAMESPACES_ANNOTATION
        not in evaluation_reading({ALLOWED_NAMESPACES_ANNOTATION: "tenant-a"}).problem
    )
    assert ALLOWED_NAMESPACES_ANNOTATION not in evaluation_reading(None, metric_ns=SERVER_NS).problem
