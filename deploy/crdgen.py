#!/usr/bin/env python3
"""Generate deploy/crds/*.yaml: the Keptn CRDs, as upstream Keptn defines them.

The schemas follow keptn/lifecycle-toolkit (metrics-operator and lifecycle-operator
`config/crd/bases`) field for field: names, versions, defaults, printer columns and
short names. Differences, all additive:

- every upstream version is served and ``v1`` is stored; conversion strategy ``None``
  (the schemas of v1alpha3 and later are identical, so relabelling is a conversion);
- ``KeptnMetricsProvider.spec.type`` lists our extra provider types (the enum is
  ``providers/registry.py``'s table, the aggregations ``metrics_server/aggregation.py``'s);
- the rules upstream's admission webhooks enforce are CEL ``x-kubernetes-validations``
  (no webhook to run) and durations carry a pattern.

Run ``python deploy/crdgen.py`` after editing; ``tests/test_deploy_manifests.py`` fails
when the committed files differ from what this script writes.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:  # run as a script from a checkout: read the registry beside it
    sys.path.insert(0, _REPO)
from metrics_server.aggregation import AGGREGATIONS  # noqa: E402
from metrics_server.controller.model import MAX_RETRIES, MAX_RETRY_INTERVAL_TEXT  # noqa: E402
from metrics_server.model import MAX_FETCH_INTERVAL_SECONDS, MAX_RANGE_TEXT  # noqa: E402
from metrics_server.names import (  # noqa: E402
    DNS1123_LABEL_MAX,
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_MAX,
    DNS1123_SUBDOMAIN_PATTERN,
)
from providers.registry import OUR_TYPES, TYPE_NAMES, UPSTREAM_TYPES  # noqa: E402

CRD_DIR = Path(__file__).resolve().parent / "crds"

Schema = dict[str, Any]

# Go's time.ParseDuration syntax (what upstream's webhooks call), anchored.
DURATION_PATTERN = r"^[-+]?(0|([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+)$"
QUANTITY: Schema = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": (
        r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
        r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ),
    "x-kubernetes-int-or-string": True,
}

ATOMIC: dict[str, Any] = {"x-kubernetes-map-type": "atomic"}


def at_most(duration: str) -> list[dict[str, str]]:
    """A CEL rule bounding a Go-duration string field."""
    return [{"rule": f"duration(self) <= duration('{duration}')", "message": f"must be at most {duration}"}]


def s(type_: str, description: str = "", **extra: Any) -> Schema:
    out: Schema = {"type": type_}
    if description:
        out["description"] = description
    out.update(extra)
    return out


def obj(
    description: str,
    properties: dict[str, Schema],
    required: list[str] | None = None,
    *,
    rules: list[dict[str, str]] | None = None,
    **extra: Any,
) -> Schema:
    out: Schema = {"type": "object"}
    if description:
        out["description"] = description
    out["properties"] = properties
    if required:
        out["required"] = sorted(required)
    out.update(extra)
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def root(description: str, spec: Schema | None, status: Schema | None) -> Schema:
    props: dict[str, Schema] = {
        "apiVersion": s(
            "string",
            "APIVersion defines the versioned schema of this representation of an object.",
        ),
        "kind": s("string", "Kind is a string value representing the REST resource this object represents."),
        "metadata": {"type": "object"},
    }
    if spec is not None:
        props["spec"] = spec
    if status is not None:
        props["status"] = status
    return {"type": "object", "description": description, "properties": props}


def object_name(description: str, **extra: Any) -> Schema:
    """A string that names a Kubernetes object: the API server's DNS-1123 subdomain rule."""
    return s(
        "string", description, maxLength=DNS1123_SUBDOMAIN_MAX, pattern=DNS1123_SUBDOMAIN_PATTERN, **extra
    )


def reference_name(description: str) -> Schema:
    """A name referenced from a lifecycle object: a valid REST path segment (upstream's own
    manifests reference names like `response_time_p95`, so DNS-1123 would reject them)."""
    return s(
        "string",
        description,
        maxLength=DNS1123_SUBDOMAIN_MAX,
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self != '.' && self != '..' && !self.contains('/') && !self.contains('%')",
                    "message": "may not be '.' or '..' and may not contain '/' or '%'",
                }
            ]
        },
    )


def namespace_name(description: str) -> Schema:
    """A string that names a namespace (DNS-1123 label), or empty for "the object's own"."""
    return s("string", description, maxLength=DNS1123_LABEL_MAX, pattern=f"^$|{DNS1123_LABEL_PATTERN}")


def object_reference(what: str) -> Schema:
    return obj(
        f"{what}",
        {
            "name": reference_name("Name defines the name of the referenced object"),
            "namespace": namespace_name("Namespace defines the namespace of the referenced object"),
        },
        ["name"],
    )


def col(name: str, path: str, type_: str = "string", priority: int | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"jsonPath": path, "name": name, "type": type_}
    if priority is not None:
        c["priority"] = priority
    return c


def crd(
    group: str,
    kind: str,
    plural: str,
    versions: list[tuple[str, Schema, list[dict[str, Any]]]],
    short_names: list[str] | None = None,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_names:
        names["shortNames"] = short_names
    if categories:
        names["categories"] = categories
    out_versions = []
    for name, schema, columns in versions:
        v: dict[str, Any] = {"name": name}
        if columns:
            v["additionalPrinterColumns"] = columns
        v["schema"] = {"openAPIV3Schema": copy.deepcopy(schema)}
        v["served"] = True
        v["storage"] = name == "v1"
        v["subresources"] = {"status": {}}
        out_versions.append(v)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/part-of": "keptn-metrics", "crdGroup": group},
        },
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "conversion": {"strategy": "None"},
            "versions": out_versions,
        },
    }


# ---------------------------------------------------------------- metrics.keptn.sh


def range_spec(with_rules: bool) -> Schema:
    schema = obj(
        "Range represents the time range for which data is to be queried",
        {
            "aggregation": s(
                "string",
                "Aggregation defines the type of aggregation function to be applied on the data. "
                f"Accepted values: {', '.join(AGGREGATIONS)}",
                enum=list(AGGREGATIONS),
            ),
            "interval": s(
                "string",
                "Interval specifies the duration of the time interval for the data query",
                default="5m",
                pattern=DURATION_PATTERN,
            ),
            "step": s(
                "string",
                "Step represents the query resolution step width for the data query",
                pattern=DURATION_PATTERN,
            ),
            "storedResults": s(
                "integer",
                "StoredResults indicates the upper limit of how many past results should be stored "
                "in the status of a KeptnMetric",
                maximum=255,
                minimum=0,
            ),
        },
    )
    if with_rules:
        schema["x-kubernetes-validations"] = [
            {
                "rule": "has(self.step) == has(self.aggregation)",
                "message": "range.step and range.aggregation must be set together",
            },
            {
                "rule": f"!has(self.interval) || duration(self.interval) <= duration('{MAX_RANGE_TEXT}')",
                "message": f"range.interval must be at most {MAX_RANGE_TEXT}",
            },
            {
                "rule": f"!has(self.step) || duration(self.step) <= duration('{MAX_RANGE_TEXT}')",
                "message": f"range.step must be at most {MAX_RANGE_TEXT}",
            },
        ]
    return schema


def keptn_metric_schema(with_range: bool) -> Schema:
    spec_props: dict[str, Schema] = {
        "fetchIntervalSeconds": s(
            "integer",
            "FetchIntervalSeconds represents the update frequency in seconds that is used to update "
            "the metric",
            minimum=1,
            maximum=MAX_FETCH_INTERVAL_SECONDS,
        ),
        "provider": obj(
            "Provider represents the provider object",
            {"name": object_name("Name of the provider", minLength=1)},
            ["name"],
        ),
        "query": s("string", "Query represents the query to be run"),
    }
    status_props: dict[str, Schema] = {
        "errMsg": s("string", "ErrMsg represents the error details when the query could not be evaluated"),
        "lastUpdated": s(
            "string",
            "LastUpdated represents the time when the status data was last updated",
            format="date-time",
        ),
        "rawValue": s("string", "RawValue represents the resulting value in raw format", format="byte"),
        "value": s("string", "Value represents the resulting value"),
        # ours, additive (kubectl columns): upstream's lastUpdated also moves when a fetch fails
        "valueFetchedAt": s(
            "string",
            "ValueFetchedAt is when the current value was fetched (keptn-metrics)",
            format="date-time",
        ),
        "fetchFailed": s(
            "boolean", "FetchFailed is true while the last fetch failed; see errMsg (keptn-metrics)"
        ),
    }
    if with_range:
        spec_props["range"] = range_spec(with_rules=True)
        status_props["intervalResults"] = {
            "type": "array",
            "description": "IntervalResults contain a slice of all the interval results",
            "items": obj(
                "",
                {
                    "errMsg": s(
                        "string", "ErrMsg represents the error details when the query could not be evaluated"
                    ),
                    "lastUpdated": s(
                        "string",
                        "LastUpdated represents the time when the status data was last updated",
                        format="date-time",
                    ),
                    "range": range_spec(with_rules=False),
                    "value": s("string", "Value represents the resulting value"),
                },
                ["lastUpdated", "range", "value"],
            ),
        }
    return root(
        "KeptnMetric is the Schema for the keptnmetrics API",
        obj(
            "KeptnMetricSpec defines the desired state of KeptnMetric",
            spec_props,
            ["fetchIntervalSeconds", "provider", "query"],
        ),
        obj("KeptnMetricStatus defines the observed state of KeptnMetric", status_props),
    )


# ours, after upstream's columns (which stay first and unchanged); priority 1: `kubectl get -o wide`
METRIC_STATUS_COLUMNS = [
    col("Fetched", ".status.valueFetchedAt", "date"),
    col("Failed", ".status.fetchFailed", "boolean"),
    col("Error", ".status.errMsg", priority=1),
]
ANALYSIS_STATUS_COLUMNS = [
    col("From", ".status.timeframe.from", "date", priority=1),
    col("To", ".status.timeframe.to", "date", priority=1),
    col("Errors", ".status.storedValues.*.errMsg", priority=1),
]
EVALUATION_STATUS_COLUMNS = [
    col("Finished", ".status.endTime", "date"),
    col("Messages", ".status.evaluationStatus.*.message", priority=1),
]


def keptn_metrics() -> dict[str, Any]:
    old_cols = [
        col("Provider", ".spec.provider.name"),
        col("Query", ".spec.query"),
        col("Value", ".status.value"),
        *METRIC_STATUS_COLUMNS,
    ]
    cols = [
        col("Provider", ".spec.provider.name"),
        col("Query", ".spec.query"),
        col("Interval", ".spec.range.interval"),
        col("Value", ".status.value"),
        col("Step", ".spec.range.step"),
        col("Aggregation", ".spec.range.aggregation"),
        *METRIC_STATUS_COLUMNS,
    ]
    old, new = keptn_metric_schema(False), keptn_metric_schema(True)
    return crd(
        "metrics.keptn.sh",
        "KeptnMetric",
        "keptnmetrics",
        [
            ("v1alpha1", old, old_cols),
            ("v1alpha2", old, old_cols),
            ("v1alpha3", new, cols),
            ("v1beta1", new, cols),
            ("v1", new, cols),
        ],
    )


def provider_schema() -> Schema:
    return root(
        "KeptnMetricsProvider is the Schema for the keptnmetricsproviders API",
        obj(
            "KeptnMetricsProviderSpec defines the desired state of KeptnMetricsProvider",
            {
                "insecureSkipTlsVerify": s(
                    "boolean",
                    "InsecureSkipTlsVerify skips the verification of the provider's TLS certificate",
                    default=False,
                ),
                "secretKeyRef": obj(
                    "SecretKeyRef defines an optional secret for access credentials to the metrics provider.",
                    {
                        "key": s(
                            "string", "The key of the secret to select from. Must be a valid secret key."
                        ),
                        "name": s(
                            "string",
                            "Name of the referent (a Secret in the provider's namespace).",
                            default="",
                            maxLength=DNS1123_SUBDOMAIN_MAX,
                            pattern=f"^$|{DNS1123_SUBDOMAIN_PATTERN}",
                        ),
                        "optional": s("boolean", "Specify whether the Secret or its key must be defined"),
                    },
                    ["key"],
                    rules=None,
                    **ATOMIC,
                ),
                "targetServer": s(
                    "string",
                    "TargetServer defines URL (including port and protocol) at which the metrics provider "
                    "is reachable.",
                ),
                "type": s(
                    "string",
                    f"Type represents the provider type. Upstream: {', '.join(UPSTREAM_TYPES)}. "
                    f"keptn-metrics adds: {', '.join(OUR_TYPES)}.",
                    enum=list(TYPE_NAMES),
                ),
            },
            ["targetServer"],
        ),
        s("string", "unused field"),
    )


def keptn_metrics_providers() -> dict[str, Any]:
    schema = provider_schema()
    cols = [col("Type", ".spec.type"), col("TargetServer", ".spec.targetServer")]
    return crd(
        "metrics.keptn.sh",
        "KeptnMetricsProvider",
        "keptnmetricsproviders",
        [(v, schema, cols) for v in ("v1alpha2", "v1alpha3", "v1beta1", "v1")],
    )


def timeframe(with_rules: bool) -> Schema:
    schema = obj(
        "Timeframe specifies the range for the corresponding query in the AnalysisValueTemplate. "
        "Either a combination of 'from' and 'to' or the 'recent' property may be set.",
        {
            "from": s("string", "From is the time of start for the query (RFC3339)", format="date-time"),
            "recent": s(
                "string",
                "Recent describes a recent timeframe using a duration string, e.g. '5m'",
                pattern=DURATION_PATTERN,
                **({"x-kubernetes-validations": at_most(MAX_RANGE_TEXT)} if with_rules else {}),
            ),
            "to": s("string", "To is the time of end for the query (RFC3339)", format="date-time"),
        },
    )
    if with_rules:
        schema["x-kubernetes-validations"] = [
            {
                "rule": (
                    "has(self.recent) ? !has(self.from) && !has(self.to) : has(self.from) && has(self.to)"
                ),
                "message": "timeframe: set either recent, or both from and to",
            },
            {
                "rule": "!has(self.from) || !has(self.to) || self.from < self.to",
                "message": "timeframe: from must be before to",
            },
        ]
    return schema


def analysis_schema() -> Schema:
    return root(
        "Analysis is the Schema for the analyses API",
        obj(
            "AnalysisSpec defines the desired state of Analysis",
            {
                "analysisDefinition": object_reference(
                    "AnalysisDefinition refers to the AnalysisDefinition, a CRD that stores the "
                    "AnalysisValuesTemplates"
                ),
                "args": {
                    "type": "object",
                    "description": "Args corresponds to a map of key/value pairs that can be used to "
                    "substitute placeholders in the AnalysisValueTemplate query.",
                    "additionalProperties": {"type": "string"},
                },
                "timeframe": timeframe(with_rules=True),
            },
            ["analysisDefinition", "timeframe"],
        ),
        obj(
            "AnalysisStatus stores the status of the overall analysis returns also pass or warnings",
            {
                "pass": s("boolean", "Pass returns whether the SLO is satisfied"),
                "raw": s("string", "Raw contains the raw result of the SLO computation"),
                "state": s(
                    "string",
                    "State describes the current state of the Analysis (Pending/Progressing/Completed)",
                ),
                "storedValues": {
                    "type": "object",
                    "description": "StoredValues contains all analysis values that have already been "
                    "retrieved successfully",
                    "additionalProperties": obj(
                        "ProviderResult stores reference of already collected provider query associated "
                        "to its objective template",
                        {
                            "errMsg": s("string", "ErrMsg stores any possible error at retrieval time"),
                            "objectiveReference": object_reference(
                                "Objective store reference to corresponding objective template"
                            ),
                            "query": s("string", "Query represents the executed query"),
                            "value": s("string", "Value is the value the provider returned"),
                        },
                    ),
                },
                "timeframe": timeframe(with_rules=False),
                "warning": s("boolean", "Warning returns whether the analysis returned a warning"),
            },
            ["state", "timeframe"],
        ),
    )


def analyses() -> dict[str, Any]:
    cols = [
        col("AnalysisDefinition", ".spec.analysisDefinition.name"),
        col("State", ".status.state"),
        col("Warning", ".status.warning"),
        col("Pass", ".status.pass"),
        *ANALYSIS_STATUS_COLUMNS,
    ]
    schema = analysis_schema()
    return crd(
        "metrics.keptn.sh", "Analysis", "analyses", [(v, schema, cols) for v in ("v1alpha3", "v1beta1", "v1")]
    )


OPERATORS = ["lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual", "equalTo"]
RANGE_OPERATORS = ["inRange", "notInRange"]


def operator_schema(description: str) -> Schema:
    value = obj(
        "OperatorValue represents the value to which the result is compared",
        {"fixedValue": {**QUANTITY, "description": "FixedValue defines the value for comparison"}},
        ["fixedValue"],
    )
    rng = obj(
        "RangeValue represents a range which the value should fit",
        {
            "highBound": {**QUANTITY, "description": "HighBound defines the higher bound of the range"},
            "lowBound": {**QUANTITY, "description": "LowBound defines the lower bound of the range"},
        },
        ["highBound", "lowBound"],
    )
    props: dict[str, Schema] = {name: copy.deepcopy(value) for name in OPERATORS}
    props.update({name: copy.deepcopy(rng) for name in RANGE_OPERATORS})
    has_list = ", ".join(f"has(self.{name})" for name in OPERATORS + RANGE_OPERATORS)
    return obj(
        description,
        props,
        rules=[
            {
                "rule": f"[{has_list}].filter(x, x).size() == 1",
                "message": "exactly one operator must be set",
            }
        ],
    )


def analysis_definition_schema() -> Schema:
    return root(
        "AnalysisDefinition is the Schema for the analysisdefinitions APIs",
        obj(
            "AnalysisDefinitionSpec defines the desired state of AnalysisDefinition",
            {
                "objectives": {
                    "type": "array",
                    "description": "Objectives defines a list of objectives to evaluate for an analysis",
                    # bounds the CEL cost estimate of the per-objective rules (upstream: unbounded)
                    "maxItems": 1000,
                    "items": obj(
                        "Objective defines an objective for analysis",
                        {
                            "analysisValueTemplateRef": object_reference(
                                "AnalysisValueTemplateRef refers to the appropriate AnalysisValueTemplate"
                            ),
                            "keyObjective": s(
                                "boolean",
                                "KeyObjective defines whether the whole analysis fails when this "
                                "objective's target is not met",
                                default=False,
                            ),
                            "target": obj(
                                "Target defines failure or warning criteria",
                                {
                                    "failure": operator_schema(
                                        "Failure defines limits up to which an analysis fails"
                                    ),
                                    "warning": operator_schema(
                                        "Warning defines limits where the result does not pass or fail"
                                    ),
                                },
                                rules=[
                                    {
                                        "rule": "!has(self.warning) || has(self.failure)",
                                        "message": "a warning target needs a failure target",
                                    }
                                ],
                            ),
                            "weight": s(
                                "integer",
                                "Weight can be used to emphasize the importance of one Objective over "
                                "the others",
                                default=1,
                            ),
                        },
                        ["analysisValueTemplateRef"],
                    ),
                },
                "totalScore": obj(
                    "TotalScore defines the required score for an analysis to be successful",
                    {
                        "passPercentage": s(
                            "integer",
                            "PassPercentage defines the threshold to reach for an analysis to pass",
                            minimum=0,
                            maximum=100,
                        ),
                        "warningPercentage": s(
                            "integer",
                            "WarningPercentage defines the threshold to reach for an analysis to pass with a "
                            "'warning' status",
                            minimum=0,
                            maximum=100,
                        ),
                    },
                    ["passPercentage", "warningPercentage"],
                    rules=[
                        {
                            "rule": "self.warningPercentage < self.passPercentage",
                            "message": "warningPercentage must be smaller than passPercentage",
                        }
                    ],
                ),
            },
            ["totalScore"],
        ),
        s("string", "unused field"),
    )


def analysis_definitions() -> dict[str, Any]:
    schema = analysis_definition_schema()
    return crd(
        "metrics.keptn.sh",
        "AnalysisDefinition",
        "analysisdefinitions",
        [(v, schema, []) for v in ("v1alpha3", "v1beta1", "v1")],
    )


def analysis_value_templates() -> dict[str, Any]:
    schema = root(
        "AnalysisValueTemplate is the Schema for the analysisvaluetemplates API",
        obj(
            "Spec contains the specification for the AnalysisValueTemplate",
            {
                "provider": object_reference(
                    "Provider refers to the KeptnMetricsProvider which should be used to retrieve the data"
                ),
                "query": s(
                    "string",
                    "Query represents the query to be run. It can include placeholders that are defined "
                    "using the go template syntax.",
                ),
            },
            ["provider", "query"],
        ),
        s("string", "unused field"),
    )
    cols = [col("Provider", ".spec.provider.name")]
    return crd(
        "metrics.keptn.sh",
        "AnalysisValueTemplate",
        "analysisvaluetemplates",
        [(v, schema, cols) for v in ("v1alpha3", "v1beta1", "v1")],
    )


# -------------------------------------------------------------- lifecycle.keptn.sh


def evaluation_definition_schema(version: str) -> Schema:
    if version in ("v1alpha1", "v1alpha2"):
        spec = obj(
            "KeptnEvaluationDefinitionSpec defines the desired state of KeptnEvaluationDefinition",
            {
                "objectives": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "evaluationTarget": {"type": "string"},
                            "name": {"type": "string"},
                            "query": {"type": "string"},
                        },
                        "required": ["evaluationTarget", "name", "query"],
                    },
                },
                "source": {"type": "string"},
            },
            ["objectives", "source"],
        )
    else:
        props: dict[str, Schema] = {
            "objectives": {
                "type": "array",
                "description": "Objectives is a list of objectives that have to be met for a KeptnEvaluation "
                "referencing this KeptnEvaluationDefinition to be successful.",
                "items": {
                    "type": "object",
                    "properties": {
                        "evaluationTarget": s(
                            "string",
                            "EvaluationTarget specifies the target value for the references KeptnMetric. "
                            "Upstream: '<N' or '>N'; keptn-metrics also accepts '>=', '<=', '==', '=', '!='.",
                        ),
                        "keptnMetricRef": obj(
                            "KeptnMetricRef references the KeptnMetric that should be evaluated.",
                            {
                                "name": object_name("Name is the name of the referenced KeptnMetric."),
                                "namespace": namespace_name(
                                    "Namespace is the namespace where the referenced KeptnMetric is located.",
                                ),
                            },
                            ["name"],
                        ),
                    },
                    "required": ["evaluationTarget", "keptnMetricRef"],
                },
            },
        }
        if version == "v1":
            props["retries"] = s(
                "integer",
                "Retries indicates how many times the KeptnEvaluation can be attempted in the case of an "
                "error or missed evaluation objective, before considering the KeptnEvaluation to be failed.",
                default=10,
                minimum=0,
                maximum=MAX_RETRIES,
            )
            props["retryInterval"] = s(
                "string",
                "RetryInterval specifies the interval at which the KeptnEvaluation is retried in the case "
                "of an error or a missed objective.",
                default="5s",
                pattern=DURATION_PATTERN,
                **{"x-kubernetes-validations": at_most(MAX_RETRY_INTERVAL_TEXT)},
            )
        spec = obj(
            "Spec describes the desired state of the KeptnEvaluationDefinition.", props, ["objectives"]
        )
    return root(
        "KeptnEvaluationDefinition is the Schema for the keptnevaluationdefinitions API",
        spec,
        s("string", "unused field"),
    )


def keptn_evaluation_definitions() -> dict[str, Any]:
    versions = ("v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1")
    return crd(
        "lifecycle.keptn.sh",
        "KeptnEvaluationDefinition",
        "keptnevaluationdefinitions",
        [(v, evaluation_definition_schema(v), []) for v in versions],
        short_names=["ked"],
    )


def evaluation_schema(version: str) -> Schema:
    spec_props: dict[str, Schema] = {
        "appName": s("string", "AppName defines the KeptnApp for which the KeptnEvaluation is done."),
        "appVersion": s(
            "string", "AppVersion defines the version of the KeptnApp for which the KeptnEvaluation is done."
        ),
        "checkType": s(
            "string",
            "Type indicates whether the KeptnEvaluation is part of the pre- or postDeployment phase.",
        ),
        "evaluationDefinition": object_name(
            "EvaluationDefinition refers to the name of the KeptnEvaluationDefinition which includes the "
            "objectives for the KeptnEvaluation.",
        ),
        "retries": s(
            "integer",
            "Retries indicates how many times the KeptnEvaluation can be attempted in the case of an error "
            "or missed evaluation objective, before considering the KeptnEvaluation to be failed.",
            default=10,
            minimum=0,
            maximum=MAX_RETRIES,
        ),
        "retryInterval": s(
            "string",
            "RetryInterval specifies the interval at which the KeptnEvaluation is retried in the case of an "
            "error or a missed objective.",
            default="5s",
            pattern=DURATION_PATTERN,
            **{"x-kubernetes-validations": at_most(MAX_RETRY_INTERVAL_TEXT)},
        ),
        "workload": s("string", "Workload defines the KeptnWorkload for which the KeptnEvaluation is done."),
        "workloadVersion": s(
            "string",
            "WorkloadVersion defines the version of the KeptnWorkload for which the KeptnEvaluation is done.",
        ),
    }
    if version in ("v1alpha1", "v1alpha2", "v1alpha3"):
        spec_props["failAction"] = {"type": "string"}
    status = obj(
        "Status describes the current state of the KeptnEvaluation.",
        {
            "endTime": s(
                "string",
                "EndTime represents the time at which the KeptnEvaluation finished.",
                format="date-time",
            ),
            "evaluationStatus": {
                "type": "object",
                "description": "EvaluationStatus describes the status of each objective of the "
                "KeptnEvaluationDefinition referenced by the KeptnEvaluation.",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "message": s(
                            "string",
                            "Message contains additional information about the evaluation of an objective.",
                        ),
                        "status": s(
                            "string", "Status indicates the status of the objective being evaluated."
                        ),
                        "value": s(
                            "string", "Value represents the value of the KeptnMetric being evaluated."
                        ),
                    },
                    "required": ["status", "value"],
                },
            },
            "overallStatus": s(
                "string",
                "OverallStatus describes the overall status of the KeptnEvaluation.",
                default="Pending",
            ),
            "retryCount": s(
                "integer",
                "RetryCount indicates how many times the KeptnEvaluation has been attempted already.",
                default=0,
            ),
            "startTime": s(
                "string",
                "StartTime represents the time at which the KeptnEvaluation started.",
                format="date-time",
            ),
        },
        ["evaluationStatus", "overallStatus", "retryCount"],
    )
    return root(
        "KeptnEvaluation is the Schema for the keptnevaluations API",
        obj(
            "Spec describes the desired state of the KeptnEvaluation.",
            spec_props,
            ["evaluationDefinition", "workloadVersion"],
        ),
        status,
    )


def keptn_evaluations() -> dict[str, Any]:
    cols = [
        col("AppName", ".spec.appName"),
        col("AppVersion", ".spec.appVersion"),
        col("WorkloadName", ".spec.workload"),
        col("WorkloadVersion", ".spec.workloadVersion"),
        col("RetryCount", ".status.retryCount"),
        col("EvaluationStatus", ".status.evaluationStatus"),
        col("OverallStatus", ".status.overallStatus"),
        *EVALUATION_STATUS_COLUMNS,
    ]
    versions = ("v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1")
    return crd(
        "lifecycle.keptn.sh",
        "KeptnEvaluation",
        "keptnevaluations",
        [(v, evaluation_schema(v), cols) for v in versions],
        short_names=["ke"],
    )


# ----------------------------------------------------------------------- output


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object."""
    crds = [
        keptn_metrics(),
        keptn_metrics_providers(),
        analyses(),
        analysis_definitions(),
        analysis_value_templates(),
        keptn_evaluation_definitions(),
        keptn_evaluations(),
    ]
    out = {}
    for c in crds:
        plural, group = c["spec"]["names"]["plural"], c["spec"]["group"]
        out[f"{group}_{plural}.yaml"] = c
    return out


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by deploy/crdgen.py; do not edit by hand.\n"


def dump(doc: dict[str, Any]) -> str:
    return (
        HEADER
        + "---\n"
        + yaml.dump(doc, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=100)
    )


def kustomization(files: list[str]) -> str:
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    return HEADER + yaml.safe_dump(body, sort_keys=False)


def expected_files() -> dict[str, str]:
    crds = all_crds()
    files = {name: dump(doc) for name, doc in crds.items()}
    files["kustomization.yaml"] = kustomization(list(crds))
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in expected_files().items():
        path = CRD_DIR / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale, run python deploy/crdgen.py:", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
