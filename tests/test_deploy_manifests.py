"""Manifest checks: deploy/ and examples/kubernetes/.

- every YAML parses; the generated CRDs and Helm chart are up to date;
- the CRDs' OpenAPI schemas (with Kubernetes defaulting, strict unknown-field checks and
  int-or-string) accept upstream Keptn manifests and reject invalid ones;
- the CEL ``x-kubernetes-validations`` rules are evaluated with cel-python (``celpy``),
  with the Kubernetes typing of ``format: date-time`` strings as timestamps;
- RBAC is least privilege, the Deployment is locked down, names and ports line up;
- the Helm chart renders exactly what kustomize builds, for each toggle.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import importlib.util
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples" / "kubernetes"
TEMPLATES = DEPLOY / "helm" / "keptn-metrics" / "templates"
HAS_KUBECTL = shutil.which("kubectl") is not None


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


crdgen = _module("crdgen")
render = _module("render")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def yaml_files() -> list[Path]:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), *EXAMPLES.rglob("*.yaml")]
    return sorted(p for p in files if TEMPLATES not in p.parents)


# ------------------------------------------------------------------ parse + fresh


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        if path.name in ("Chart.yaml", "values.yaml"):
            continue
        assert "apiVersion" in doc and "kind" in doc, f"{path}: object without apiVersion/kind"


def test_crds_are_generated_and_fresh() -> None:
    for name, text in crdgen.expected_files().items():
        assert (DEPLOY / "crds" / name).read_text(encoding="utf-8") == text, (
            f"run python deploy/crdgen.py ({name})"
        )


def test_chart_is_generated_and_fresh() -> None:
    assert render.main(["--check"]) == 0, "run python deploy/render.py"


# ------------------------------------------------------------ schema validation


def crds() -> dict[str, dict[str, Any]]:
    """kind -> CRD."""
    out = {}
    for path in (DEPLOY / "crds").glob("*_*.yaml"):
        crd = load_all(path)[0]
        out[crd["spec"]["names"]["kind"]] = crd
    return out


CRDS = crds()


def version_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, version = api_version.split("/")
    crd = CRDS[kind]
    assert crd["spec"]["group"] == group
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v["served"], f"{kind} {version} not served"
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{kind} has no version {version}")


def to_json_schema(schema: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """Kubernetes structural schema -> JSON schema; unknown fields are errors (kubectl's
    default --validate=strict), metadata is left to the API server."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "default"}
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v, False) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema:
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(schema["additionalProperties"], False)
    if "items" in schema:
        out["items"] = to_json_schema(schema["items"], False)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"not RFC 3339: {value!r}")
    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("byte", raises=ValueError)
def _is_base64(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Kubernetes structural defaulting: fill absent properties of present objects."""
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                if key not in schema.get("properties", {}):
                    obj[key] = apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj


# ------------------------------------------------------------------ CEL (celpy)


def _cel_value(obj: Any, schema: dict[str, Any]) -> Any:
    """Python value with the Kubernetes CEL typing: date-time strings are timestamps."""
    from celpy import celtypes

    if isinstance(obj, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: _cel_value(v, props.get(k) or (extra if isinstance(extra, dict) else {}))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_cel_value(v, schema.get("items", {})) for v in obj]
    if isinstance(obj, str) and schema.get("format") == "date-time":
        return celtypes.TimestampType(obj)
    return obj


def _walk_rules(
    obj: Any, schema: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, str], Any, Any]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, obj, schema
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                yield from _walk_rules(obj[key], sub, f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                yield from _walk_rules(value, extra, f"{path}[{key}]")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _walk_rules(item, schema.get("items", {}), f"{path}[{i}]")


_CEL_PROGRAMS: dict[str, Any] = {}


def cel_errors(obj: Any, schema: dict[str, Any]) -> list[str]:
    import celpy

    env = celpy.Environment()
    errors = []
    for path, rule, value, sub in _walk_rules(obj, schema, "self"):
        program = _CEL_PROGRAMS.get(rule["rule"])
        if program is None:
            program = _CEL_PROGRAMS[rule["rule"]] = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(_cel_value(value, sub))})
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    return errors


def validate(manifest: dict[str, Any]) -> dict[str, Any]:
    """Validate like the API server (schema, then CEL); return the defaulted object."""
    schema = version_schema(manifest["apiVersion"], manifest["kind"])
    obj = apply_defaults(copy.deepcopy(manifest), schema)
    validator = jsonschema.Draft7Validator(to_json_schema(schema), format_checker=FORMATS)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    if errors:
        raise ValueError("; ".join(errors))
    cel = cel_errors(obj, schema)
    if cel:
        raise ValueError("; ".join(cel))
    return obj


def m(api_version: str, kind: str, spec: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns"},
    }
    if spec is not None:
        doc["spec"] = spec
    doc.update(extra)
    return doc


MK, LK = "metrics.keptn.sh", "lifecycle.keptn.sh"

VALID = [
    # KeptnMetric: upstream docs, every version
    m(
        f"{MK}/v1alpha1",
        "KeptnMetric",
        {"provider": {"name": "prometheus"}, "query": "q", "fetchIntervalSeconds": 5},
    ),
    m(
        f"{MK}/v1alpha2",
        "KeptnMetric",
        {"provider": {"name": "my-provider"}, "query": "q", "fetchIntervalSeconds": 5},
    ),
    m(f"{MK}/v1alpha3", "KeptnMetric", {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10}),
    m(
        f"{MK}/v1alpha3",
        "KeptnMetric",
        {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10, "range": {"interval": "3m"}},
    ),
    m(
        f"{MK}/v1beta1",
        "KeptnMetric",
        {
            "provider": {"name": "my-provider"},
            "query": "sum(kube_pod_container_resource_limits{resource='cpu'})",
            "fetchIntervalSeconds": 5,
            "range": {"interval": "5m", "step": "1m", "aggregation": "p90", "storedResults": 3},
        },
    ),
    m(
        f"{MK}/v1",
        "KeptnMetric",
        {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": {"interval": "1h30m"}},
        status={
            "value": "1500",
            "rawValue": base64.b64encode(b"1500.0").decode(),
            "lastUpdated": "2024-01-02T03:04:05Z",
            "intervalResults": [
                {"value": "1", "range": {"interval": "5m"}, "lastUpdated": "2024-01-02T03:04:05.123+01:00"}
            ],
        },
    ),
    # KeptnMetricsProvider
    m(f"{MK}/v1alpha2", "KeptnMetricsProvider", {"targetServer": "http://prometheus:9090"}),
    m(
        f"{MK}/v1alpha3",
        "KeptnMetricsProvider",
        {
            "type": "dynatrace",
            "targetServer": "https://abc.live.dynatrace.com",
            "secretKeyRef": {"name": "dt-api-token", "key": "DT_TOKEN"},
        },
    ),
    m(
        f"{MK}/v1beta1",
        "KeptnMetricsProvider",
        {"type": "datadog", "targetServer": "https://api.datadoghq.com"},
    ),
    m(
        f"{MK}/v1",
        "KeptnMetricsProvider",
        {
            "type": "prometheus",
            "targetServer": "https://prom:9090",
            "insecureSkipTlsVerify": True,
            "secretKeyRef": {"name": "prom", "key": "password", "optional": True},
        },
    ),
    *[
        m(f"{MK}/v1", "KeptnMetricsProvider", {"type": t, "targetServer": "https://x"})
        for t in (
            "thanos",
            "cortex",
            "dql",
            "elastic",
            "cloudwatch",
            "google",
            "azure",
            "http",
            "openmetrics",
        )
    ],
    # AnalysisValueTemplate
    m(
        f"{MK}/v1",
        "AnalysisValueTemplate",
        {
            "provider": {"name": "prometheus"},
            "query": "sum(kube_pod_container_resource_limits{node='{{.nodename}}'}) "
            "- sum(kube_node_status_capacity)",
        },
    ),
    m(f"{MK}/v1alpha3", "AnalysisValueTemplate", {"provider": {"name": "p", "namespace": "o"}, "query": "q"}),
    # AnalysisDefinition (upstream sample)
    m(
        f"{MK}/v1beta1",
        "AnalysisDefinition",
        {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "response-time-p95"},
                    "target": {
                        "failure": {"lessThan": {"fixedValue": 600}},
                        "warning": {"inRange": {"lowBound": 300, "highBound": 500}},
                    },
                    "weight": 1,
                    "keyObjective": False,
                },
                {
                    "analysisValueTemplateRef": {"name": "error-rate", "namespace": "other"},
                    "target": {"failure": {"greaterThan": {"fixedValue": "500m"}}},
                },
                {"analysisValueTemplateRef": {"name": "informational"}},
            ],
            "totalScore": {"passPercentage": 60, "warningPercentage": 50},
        },
    ),
    m(
        f"{MK}/v1",
        "AnalysisDefinition",
        {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "t"},
                    "target": {"failure": {"notInRange": {"lowBound": "1k", "highBound": "2.5k"}}},
                    "keyObjective": True,
                }
            ],
            "totalScore": {"passPercentage": 90, "warningPercentage": 75},
        },
    ),
    # Analysis
    m(
        f"{MK}/v1alpha3",
        "Analysis",
        {
            "timeframe": {"from": "2023-05-05T05:05:05Z", "to": "2023-05-05T10:10:10Z"},
            "args": {"project": "my-project", "stage": "dev"},
            "analysisDefinition": {"name": "ed-my-proj-dev-svc1"},
        },
    ),
    m(
        f"{MK}/v1",
        "Analysis",
        {"timeframe": {"recent": "5m"}, "analysisDefinition": {"name": "d", "namespace": "o"}},
    ),
    m(
        f"{MK}/v1",
        "Analysis",
        {"timeframe": {"recent": "1h"}, "analysisDefinition": {"name": "d"}},
        status={
            "state": "Completed",
            "pass": True,
            "raw": "{}",
            "timeframe": {"from": "2023-05-05T05:05:05Z", "to": "2023-05-05T10:10:10Z"},
            "storedValues": {
                "t": {"objectiveReference": {"name": "t"}, "query": "q", "value": "1", "errMsg": ""}
            },
        },
    ),
    # KeptnEvaluationDefinition
    m(
        f"{LK}/v1alpha1",
        "KeptnEvaluationDefinition",
        {"source": "prometheus", "objectives": [{"name": "n", "query": "q", "evaluationTarget": "<10"}]},
    ),
    m(
        f"{LK}/v1alpha3",
        "KeptnEvaluationDefinition",
        {
            "objectives": [
                {"keptnMetricRef": {"name": "available-cpus", "namespace": "ns"}, "evaluationTarget": ">1"}
            ]
        },
    ),
    m(
        f"{LK}/v1beta1",
        "KeptnEvaluationDefinition",
        {"objectives": [{"keptnMetricRef": {"name": "m"}, "evaluationTarget": "<500"}]},
    ),
    m(
        f"{LK}/v1",
        "KeptnEvaluationDefinition",
        {
            "objectives": [{"keptnMetricRef": {"name": "m"}, "evaluationTarget": ">=1"}],
            "retryInterval": "10s",
        },
    ),
    # KeptnEvaluation
    m(
        f"{LK}/v1alpha3",
        "KeptnEvaluation",
        {"workload": "w", "workloadVersion": "0.1.0", "evaluationDefinition": "d", "checkType": "pre-eval"},
    ),
    m(
        f"{LK}/v1",
        "KeptnEvaluation",
        {
            "appName": "a",
            "appVersion": "1",
            "workloadVersion": "1",
            "evaluationDefinition": "d",
            "retries": 3,
        },
        status={
            "overallStatus": "Failed",
            "retryCount": 3,
            "evaluationStatus": {
                "m": {"value": "12", "status": "Failed", "message": "value '12' did not meet"}
            },
            "startTime": "2024-01-01T00:00:00Z",
            "endTime": "2024-01-01T00:01:00Z",
        },
    ),
]

INVALID = [
    # (manifest, fragment of the expected error)
    (m(f"{MK}/v1", "KeptnMetric", {"provider": {"name": "p"}, "query": "q"}), "fetchIntervalSeconds"),
    (m(f"{MK}/v1", "KeptnMetric", {"provider": {}, "query": "q", "fetchIntervalSeconds": 5}), "name"),
    (
        m(f"{MK}/v1", "KeptnMetric", {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": "5"}),
        "integer",
    ),
    (
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": {"step": "1m"}},
        ),
        "step and range.aggregation must be set together",
    ),
    (
        m(
            f"{MK}/v1beta1",
            "KeptnMetric",
            {
                "provider": {"name": "p"},
                "query": "q",
                "fetchIntervalSeconds": 5,
                "range": {"aggregation": "max"},
            },
        ),
        "must be set together",
    ),
    (
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {
                "provider": {"name": "p"},
                "query": "q",
                "fetchIntervalSeconds": 5,
                "range": {"step": "1m", "aggregation": "p50"},
            },
        ),
        "p50",
    ),
    (
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {
                "provider": {"name": "p"},
                "query": "q",
                "fetchIntervalSeconds": 5,
                "range": {"storedResults": 256},
            },
        ),
        "256",
    ),
    (
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {
                "provider": {"name": "p"},
                "query": "q",
                "fetchIntervalSeconds": 5,
                "range": {"interval": "5 minutes"},
            },
        ),
        "does not match",
    ),
    (
        m(
            f"{MK}/v1alpha2",
            "KeptnMetric",
            {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": {"interval": "5m"}},
        ),
        "Additional properties",
    ),
    (
        m(f"{MK}/v1", "KeptnMetric", {"provider": {"name": "p"}, "query": "q", "fetchIntervalSecond": 5}),
        "Additional",
    ),
    (
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5},
            status={"lastUpdated": "yesterday"},
        ),
        "is not a 'date-time'",
    ),
    (m(f"{MK}/v1", "KeptnMetricsProvider", {"type": "prometheus"}), "targetServer"),
    (m(f"{MK}/v1", "KeptnMetricsProvider", {"type": "influxdb", "targetServer": "http://x"}), "influxdb"),
    (
        m(f"{MK}/v1", "KeptnMetricsProvider", {"targetServer": "http://x", "secretKeyRef": {"name": "s"}}),
        "key",
    ),
    (m(f"{MK}/v1", "AnalysisValueTemplate", {"provider": {"name": "p"}}), "query"),
    (
        m(f"{MK}/v1", "Analysis", {"timeframe": {}, "analysisDefinition": {"name": "d"}}),
        "set either recent, or both from and to",
    ),
    (
        m(
            f"{MK}/v1",
            "Analysis",
            {
                "timeframe": {"recent": "5m", "from": "2023-05-05T05:05:05Z"},
                "analysisDefinition": {"name": "d"},
            },
        ),
        "set either recent",
    ),
    (
        m(
            f"{MK}/v1",
            "Analysis",
            {"timeframe": {"from": "2023-05-05T05:05:05Z"}, "analysisDefinition": {"name": "d"}},
        ),
        "set either recent",
    ),
    (
        m(
            f"{MK}/v1beta1",
            "Analysis",
            {
                "timeframe": {"from": "2023-05-05T10:00:00Z", "to": "2023-05-05T11:00:00+02:00"},
                "analysisDefinition": {"name": "d"},
            },
        ),
        "from must be before to",
    ),
    (m(f"{MK}/v1", "Analysis", {"timeframe": {"recent": "5m"}}), "analysisDefinition"),
    (
        m(f"{MK}/v1", "Analysis", {"timeframe": {"recent": "five"}, "analysisDefinition": {"name": "d"}}),
        "match",
    ),
    (
        m(
            f"{MK}/v1",
            "AnalysisDefinition",
            {
                "objectives": [
                    {
                        "analysisValueTemplateRef": {"name": "t"},
                        "target": {
                            "failure": {"lessThan": {"fixedValue": 1}, "greaterThan": {"fixedValue": 2}}
                        },
                    }
                ],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        ),
        "exactly one operator",
    ),
    (
        m(
            f"{MK}/v1",
            "AnalysisDefinition",
            {
                "objectives": [{"analysisValueTemplateRef": {"name": "t"}, "target": {"failure": {}}}],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        ),
        "exactly one operator",
    ),
    (
        m(
            f"{MK}/v1",
            "AnalysisDefinition",
            {
                "objectives": [
                    {
                        "analysisValueTemplateRef": {"name": "t"},
                        "target": {"warning": {"lessThan": {"fixedValue": 1}}},
                    }
                ],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        ),
        "a warning target needs a failure target",
    ),
    (
        m(
            f"{MK}/v1",
            "AnalysisDefinition",
            {
                "objectives": [
                    {
                        "analysisValueTemplateRef": {"name": "t"},
                        "target": {"failure": {"lessThan": {"fixedValue": "ten"}}},
                    }
                ],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        ),
        "ten",
    ),
    (
        m(f"{MK}/v1", "AnalysisDefinition", {"totalScore": {"passPercentage": 101, "warningPercentage": 75}}),
        "101",
    ),
    (
        m(f"{MK}/v1", "AnalysisDefinition", {"totalScore": {"passPercentage": 50, "warningPercentage": 75}}),
        "warningPercentage must be smaller than passPercentage",
    ),
    (
        m(f"{MK}/v1", "AnalysisDefinition", {"totalScore": {"passPercentage": 75, "warningPercentage": 75}}),
        "warningPercentage must be smaller than passPercentage",
    ),
    (m(f"{MK}/v1", "AnalysisDefinition", {"objectives": []}), "totalScore"),
    (
        m(f"{LK}/v1", "KeptnEvaluationDefinition", {"objectives": [{"keptnMetricRef": {"name": "m"}}]}),
        "evaluationTarget",
    ),
    (
        m(
            f"{LK}/v1alpha1",
            "KeptnEvaluationDefinition",
            {"objectives": [{"name": "n", "evaluationTarget": "<1"}]},
        ),
        "source",
    ),
    (m(f"{LK}/v1", "KeptnEvaluation", {"workloadVersion": "1"}), "evaluationDefinition"),
    (
        m(
            f"{LK}/v1",
            "KeptnEvaluation",
            {"evaluationDefinition": "d", "workloadVersion": "1", "retryInterval": "soon"},
        ),
        "match",
    ),
    (
        m(
            f"{LK}/v1",
            "KeptnEvaluation",
            {"evaluationDefinition": "d", "workloadVersion": "1", "failAction": "x"},
        ),
        "Additional",
    ),
]


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}-{doc['apiVersion'].split('/')[1]}"


@pytest.mark.parametrize("manifest", VALID, ids=[_id(d) for d in VALID])
def test_upstream_manifests_are_accepted(manifest: dict[str, Any]) -> None:
    validate(manifest)


@pytest.mark.parametrize("manifest,fragment", INVALID, ids=[f"{_id(d)}-{f[:24]}" for d, f in INVALID])
def test_invalid_manifests_are_rejected(manifest: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        validate(manifest)


def test_defaults_are_applied() -> None:
    metric = validate(
        m(
            f"{MK}/v1",
            "KeptnMetric",
            {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": {}},
        )
    )
    assert metric["spec"]["range"] == {"interval": "5m"}
    provider = validate(
        m(f"{MK}/v1", "KeptnMetricsProvider", {"targetServer": "http://x", "secretKeyRef": {"key": "k"}})
    )
    assert provider["spec"]["insecureSkipTlsVerify"] is False
    assert provider["spec"]["secretKeyRef"]["name"] == ""
    definition = validate(
        m(
            f"{MK}/v1",
            "AnalysisDefinition",
            {
                "objectives": [{"analysisValueTemplateRef": {"name": "t"}}],
                "totalScore": {"passPercentage": 90, "warningPercentage": 75},
            },
        )
    )
    assert definition["spec"]["objectives"][0]["weight"] == 1
    assert definition["spec"]["objectives"][0]["keyObjective"] is False
    evaluation = validate(
        m(f"{LK}/v1", "KeptnEvaluation", {"evaluationDefinition": "d", "workloadVersion": "1"})
    )
    assert (evaluation["spec"]["retries"], evaluation["spec"]["retryInterval"]) == (10, "5s")
    ked = validate(m(f"{LK}/v1", "KeptnEvaluationDefinition", {"objectives": []}))
    assert (ked["spec"]["retries"], ked["spec"]["retryInterval"]) == (10, "5s")


def test_crd_versions_storage_and_subresources() -> None:
    expected_versions = {
        "KeptnMetric": ["v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1"],
        "KeptnMetricsProvider": ["v1alpha2", "v1alpha3", "v1beta1", "v1"],
        "Analysis": ["v1alpha3", "v1beta1", "v1"],
        "AnalysisDefinition": ["v1alpha3", "v1beta1", "v1"],
        "AnalysisValueTemplate": ["v1alpha3", "v1beta1", "v1"],
        "KeptnEvaluationDefinition": ["v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1"],
        "KeptnEvaluation": ["v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1"],
    }
    assert set(CRDS) == set(expected_versions)
    for kind, crd in CRDS.items():
        versions = crd["spec"]["versions"]
        assert [v["name"] for v in versions] == expected_versions[kind]
        assert all(v["served"] for v in versions)
        assert [v["name"] for v in versions if v["storage"]] == ["v1"]
        assert all(v["subresources"] == {"status": {}} for v in versions)
        assert crd["spec"]["scope"] == "Namespaced"
    assert CRDS["KeptnEvaluationDefinition"]["spec"]["names"]["shortNames"] == ["ked"]
    assert CRDS["KeptnEvaluation"]["spec"]["names"]["shortNames"] == ["ke"]
    columns = [c["name"] for c in CRDS["KeptnMetric"]["spec"]["versions"][-1]["additionalPrinterColumns"]]
    assert columns[:6] == ["Provider", "Query", "Interval", "Value", "Step", "Aggregation"]  # upstream first


# ---------------------------------------------------------- kubectl get columns

UPSTREAM_COLUMNS = {
    ("KeptnMetric", "v1alpha1"): ["Provider", "Query", "Value"],
    ("KeptnMetric", "v1"): ["Provider", "Query", "Interval", "Value", "Step", "Aggregation"],
    ("Analysis", "v1"): ["AnalysisDefinition", "State", "Warning", "Pass"],
    ("KeptnEvaluation", "v1"): [
        "AppName",
        "AppVersion",
        "WorkloadName",
        "WorkloadVersion",
        "RetryCount",
        "EvaluationStatus",
        "OverallStatus",
    ],
}
OUR_COLUMNS = {  # name -> (jsonPath, type, priority): after upstream's, never instead of them
    "KeptnMetric": [
        ("Fetched", ".status.valueFetchedAt", "date", 0),
        ("Failed", ".status.fetchFailed", "boolean", 0),
        ("Error", ".status.errMsg", "string", 1),
    ],
    "Analysis": [
        ("From", ".status.timeframe.from", "date", 1),
        ("To", ".status.timeframe.to", "date", 1),
        ("Errors", ".status.storedValues.*.errMsg", "string", 1),
    ],
    "KeptnEvaluation": [
        ("Finished", ".status.endTime", "date", 0),
        ("Messages", ".status.evaluationStatus.*.message", "string", 1),
    ],
}


def _columns(kind: str, version: str) -> list[dict[str, Any]]:
    v = next(v for v in CRDS[kind]["spec"]["versions"] if v["name"] == version)
    return list(v["additionalPrinterColumns"])


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema a printer column's JSONPath points at (`*`: every value of a map)."""
    node = schema
    for part in path.strip(".").split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def test_upstream_columns_stay_first_and_ours_follow() -> None:
    for (kind, version), upstream in UPSTREAM_COLUMNS.items():
        columns = _columns(kind, version)
        assert [c["name"] for c in columns[: len(upstream)]] == upstream, (kind, version)
        assert all("priority" not in c for c in columns[: len(upstream)])
        ours = [(c["name"], c["jsonPath"], c["type"], c.get("priority", 0)) for c in columns[len(upstream) :]]
        assert ours == OUR_COLUMNS[kind], (kind, version)
    for kind in OUR_COLUMNS:  # the same columns in every served version
        for v in CRDS[kind]["spec"]["versions"]:
            assert [c["name"] for c in v["additionalPrinterColumns"]][-len(OUR_COLUMNS[kind]) :] == [
                name for name, *_ in OUR_COLUMNS[kind]
            ]


def test_every_column_points_at_a_field_and_ours_at_one_of_their_type() -> None:
    types = {"date": ("string", "date-time"), "boolean": ("boolean", None), "string": ("string", None)}
    for kind, crd in CRDS.items():
        ours = {name for name, *_ in OUR_COLUMNS.get(kind, [])}
        for v in crd["spec"]["versions"]:
            for c in v.get("additionalPrinterColumns", []):
                field = _schema_at(v["schema"]["openAPIV3Schema"], c["jsonPath"])  # KeyError: a typo
                if c["name"] in ours:
                    want_type, want_format = types[c["type"]]
                    assert field["type"] == want_type, (kind, v["name"], c["name"])
                    assert field.get("format") == want_format, (kind, v["name"], c["name"])


def test_the_server_writes_the_fields_our_metric_columns_show() -> None:
    import time

    from metrics_server.model import ObjectKey
    from metrics_server.state import MetricState, rfc3339

    state = MetricState(key=ObjectKey("apps", "queue"), fetch_interval=10)
    state.value, state.value_text, state.last_success = 4.0, "4", time.time() - 30
    state.last_attempt, state.error = time.time(), "HTTP 503 from http://prometheus:9090"
    status = state.status()
    assert status["valueFetchedAt"] == rfc3339(state.last_success)  # the value's own time ...
    assert status["lastUpdated"] == rfc3339(state.last_attempt)  # ... not the failed attempt's
    assert status["fetchFailed"] is True and status["errMsg"].startswith("HTTP 503")
    obj = validate(m("metrics.keptn.sh/v1", "KeptnMetric", METRIC_SPEC_FOR_COLUMNS, status=status))
    assert obj["status"]["fetchFailed"] is True
    state.error = ""
    assert state.status()["fetchFailed"] is False


METRIC_SPEC_FOR_COLUMNS = {"provider": {"name": "prom"}, "query": "up", "fetchIntervalSeconds": 10}


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl (client-go's JSONPath, as the server's printer)")
@pytest.mark.parametrize("kind", sorted(OUR_COLUMNS))
def test_columns_evaluate_with_client_go_jsonpath(kind: str, tmp_path: Path) -> None:
    import subprocess

    samples = {
        "KeptnMetric": {
            "valueFetchedAt": "2026-01-02T03:04:05Z",
            "fetchFailed": True,
            "errMsg": "HTTP 503",
            "value": "4",
        },
        "Analysis": {
            "timeframe": {"from": "2026-01-02T03:00:00Z", "to": "2026-01-02T03:05:00Z"},
            "storedValues": {"a": {"errMsg": "no data", "value": ""}, "b": {"value": "1"}},
        },
        "KeptnEvaluation": {
            "endTime": "2026-01-02T03:04:05Z",
            "evaluationStatus": {"cpu": {"status": "Failed", "value": "9", "message": "9 > 5"}},
        },
    }
    expected = {
        "Fetched": "2026-01-02T03:04:05Z",
        "Failed": "true",
        "Error": "HTTP 503",
        "From": "2026-01-02T03:00:00Z",
        "To": "2026-01-02T03:05:00Z",
        "Errors": "no data",
        "Finished": "2026-01-02T03:04:05Z",
        "Messages": "9 > 5",
    }
    doc = tmp_path / "obj.yaml"  # kubectl --local needs a kind it knows; the JSONPath does not care
    doc.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                                   "status": samples[kind]}))  # fmt: skip
    for name, path, _type, _priority in OUR_COLUMNS[kind]:
        out = subprocess.run(
            ["kubectl", "label", "--local", "-f", str(doc), "x=y", "-o", f"jsonpath={{{path}}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert out == expected[name], (kind, name, out)


def test_same_schema_from_v1alpha3_on() -> None:
    """Conversion strategy None relabels objects: the schemas must really be the same."""
    for kind in (
        "KeptnMetric",
        "KeptnMetricsProvider",
        "Analysis",
        "AnalysisDefinition",
        "AnalysisValueTemplate",
    ):
        versions = CRDS[kind]["spec"]["versions"]
        v1 = versions[-1]["schema"]
        for v in versions:
            if v["name"] in ("v1alpha3", "v1beta1"):
                assert v["schema"] == v1, (kind, v["name"])


def test_cel_rules_compile() -> None:
    import celpy

    env = celpy.Environment()
    for crd in CRDS.values():
        for v in crd["spec"]["versions"]:
            for _, rule, _, _ in _walk_rules_schema(v["schema"]["openAPIV3Schema"]):
                env.compile(rule["rule"])
                assert rule.get("message")


def _walk_rules_schema(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, str], None, None]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield "", rule, None, None
    for sub in schema.get("properties", {}).values():
        yield from _walk_rules_schema(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _walk_rules_schema(schema[key])


# ------------------------------------------------------------------- examples


def examples() -> dict[str, dict[str, Any]]:
    out = {}
    for path in EXAMPLES.glob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


EXAMPLE_OBJECTS = examples()


def test_example_keptn_resources_validate() -> None:
    keptn = [
        d for d in EXAMPLE_OBJECTS.values() if d["apiVersion"].startswith(("metrics.keptn.sh", "lifecycle."))
    ]
    assert {d["kind"] for d in keptn} >= {"KeptnMetric", "KeptnMetricsProvider"}
    for doc in keptn:
        validate(doc)


def test_example_hpa_targets_a_keptn_metric() -> None:
    hpa = EXAMPLE_OBJECTS["HorizontalPodAutoscaler/podtato-head-entry"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Object"
    described = metric["object"]["describedObject"]
    assert described["apiVersion"] == "metrics.keptn.sh/v1" and described["kind"] == "KeptnMetric"
    assert metric["object"]["metric"]["name"] == described["name"]
    assert metric["object"]["target"]["type"] == "Value"
    target = EXAMPLE_OBJECTS[f"KeptnMetric/{described['name']}"]
    assert target["metadata"]["namespace"] == hpa["metadata"]["namespace"]


def _service_ports() -> dict[str, int]:
    service = next(d for d in load_all(DEPLOY / "base" / "service.yaml"))
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def test_example_keda_scaled_objects() -> None:
    ports = _service_ports()
    scaled = [d for d in EXAMPLE_OBJECTS.values() if d["kind"] == "ScaledObject"]
    triggers = {t["type"]: (so, t) for so in scaled for t in so["spec"]["triggers"]}
    _, rest = triggers["metrics-api"]
    url = rest["metadata"]["url"]
    match = re.fullmatch(r"http://keptn-metrics\.keptn-system\.svc:(\d+)/api/v1/metrics/([^/]+)/([^/]+)", url)
    assert match and int(match[1]) == ports["metrics"]
    assert f"KeptnMetric/{match[3]}" in EXAMPLE_OBJECTS
    assert rest["metadata"]["valueLocation"] == "value"
    _, ext = triggers["external"]
    meta = ext["metadata"]
    assert meta["scalerAddress"] == f"keptn-metrics.keptn-system.svc:{ports['grpc']}"
    assert {"keptnMetricName", "keptnMetricNamespace", "targetValue", "activationValue"} <= set(meta)
    assert f"KeptnMetric/{meta['keptnMetricName']}" in EXAMPLE_OBJECTS
    targets = [
        d["spec"]["scaleTargetRef"]["name"] for d in EXAMPLE_OBJECTS.values() if d["kind"] == "ScaledObject"
    ]
    targets.append(
        EXAMPLE_OBJECTS["HorizontalPodAutoscaler/podtato-head-entry"]["spec"]["scaleTargetRef"]["name"]
    )
    assert len(targets) == len(set(targets)), "two autoscalers on one workload"


# ------------------------------------------------------------- base manifests


BASE = render.by_key(render.kustomize_build(DEPLOY / "base"))


def get(kind: str, name: str) -> dict[str, Any]:
    return next(d for (_, k, _, n), d in BASE.items() if k == kind and n == name)


def test_rbac_least_privilege() -> None:
    role = get("ClusterRole", "keptn-metrics")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"], "secrets are read by name only: no list/watch"
        if "apiservices" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "patch"}
            assert set(rule["resourceNames"]) == {
                "v1beta2.custom.metrics.k8s.io",
                "v1beta1.custom.metrics.k8s.io",
            }
        writes = set(rule["verbs"]) & {"create", "update", "patch", "delete", "deletecollection"}
        if writes:
            assert all(r.endswith("/status") or r in ("events", "apiservices") for r in rule["resources"]), (
                rule
            )
    reads = {r for rule in role["rules"] for r in rule["resources"] if "watch" in rule["verbs"]}
    assert reads == {
        "keptnmetrics",
        "keptnmetricsproviders",
        "analyses",
        "analysisdefinitions",
        "analysisvaluetemplates",
        "keptnevaluations",
        "keptnevaluationdefinitions",
    }
    all_rules = [r for d in BASE.values() if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    for rule in all_rules:
        if "secrets" in rule["resources"]:
            assert not {"list", "watch"} & set(rule["verbs"])
    lease_role = get("Role", "keptn-metrics-leader-election")
    assert lease_role["metadata"]["namespace"] == "keptn-system"
    assert lease_role["rules"][0]["resources"] == ["leases"]
    bindings = {
        d["roleRef"]["name"]: d for d in BASE.values() if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }
    assert bindings["system:auth-delegator"]["kind"] == "ClusterRoleBinding"
    reader = bindings["extension-apiserver-authentication-reader"]
    assert reader["kind"] == "RoleBinding" and reader["metadata"]["namespace"] == "kube-system"
    # nothing for the HPA: the bootstrap role system:controller:horizontal-pod-autoscaler
    # already grants get/list/watch on both metrics APIs (tests/test_rbac.py shows it)
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "keptn-metrics", "namespace": "keptn-system"}
        ]


def test_deployment_is_locked_down() -> None:
    deploy = get("Deployment", "keptn-metrics")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "keptn-metrics"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["topologySpreadConstraints"] and pod["affinity"]["podAntiAffinity"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/keptn-metrics/keptn-metrics:0.1.0"
    assert container["command"] == ["keptn-metrics", "serve"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args == {
        "secure-port": "6443",
        "metrics-port": "9999",
        "grpc-port": "9998",
        "bind-address": "0.0.0.0",
        "cert-dir": "/tmp/certs",
        "leader-elect": "true",
        "shards": "$(SHARDS)",  # expanded by the kubelet from the env entry below
        "peer-port": "8444",
        "log-format": "json",
        "apiservice-ca-injection": "v1beta2.custom.metrics.k8s.io,v1beta1.custom.metrics.k8s.io",
        "self-signed-hosts": "keptn-metrics.keptn-system.svc,keptn-metrics.keptn-system.svc.cluster.local",
    }
    env = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {
        "POD_NAMESPACE": "metadata.namespace",
        "POD_NAME": "metadata.name",
        "POD_IP": "status.podIP",
        "SHARDS": "16",
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 6443, "metrics": 9999, "grpc": 9998, "peer": 8444}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get_ = container[probe]["httpGet"]
        assert (get_["path"], get_["scheme"], ports[get_["port"]]) == (path, "HTTPS", 6443)


def test_service_apiservices_pdb_networkpolicy_line_up() -> None:
    deploy = get("Deployment", "keptn-metrics")
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    container_ports = {
        p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    service = get("Service", "keptn-metrics")
    assert service["spec"]["selector"] == selector
    ports = {p["port"]: container_ports[p["targetPort"]] for p in service["spec"]["ports"]}
    assert ports == {443: 6443, 9999: 9999, 9998: 9998}
    pdb = get("PodDisruptionBudget", "keptn-metrics")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == selector
    apiservices = {d["metadata"]["name"]: d["spec"] for d in BASE.values() if d["kind"] == "APIService"}
    assert set(apiservices) == {"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}
    assert apiservices["v1beta2.custom.metrics.k8s.io"]["versionPriority"] == 200
    assert apiservices["v1beta1.custom.metrics.k8s.io"]["versionPriority"] == 100
    for spec in apiservices.values():
        assert spec["groupPriorityMinimum"] == 100
        assert not spec.get("insecureSkipTLSVerify")
        assert spec["service"] == {"name": "keptn-metrics", "namespace": "keptn-system", "port": 443}
    policy = get("NetworkPolicy", "keptn-metrics")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    api_rule, client_rule, peers = policy["spec"]["ingress"]
    assert "from" not in api_rule, "the kube-apiserver's source address is not predictable"
    assert {p["port"] for p in api_rule["ports"]} == {6443}
    # KEDA and Prometheus only: 9998/9999 are not open to every pod (issue 10)
    assert {p["port"] for p in client_rule["ports"]} == {9999, 9998}
    (peer,) = client_rule["from"]
    assert set(peer) == {"namespaceSelector"} and peer["namespaceSelector"]
    # value streaming between replicas: the peer port only from the other replicas
    assert peers["from"] == [{"podSelector": {"matchLabels": selector}}]
    assert [p["port"] for p in peers["ports"]] == [container_ports["peer"]]
    namespaced = [
        d
        for d in BASE.values()
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "APIService")
    ]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"keptn-system", "kube-system"}


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", f) for f in froms)
    assert "USER 65532:65532" in text
    assert "'.[all]'" in text
    assert 'ENTRYPOINT ["keptn-metrics"]' in text


# ------------------------------------------------------------- chart == kustomize


def _compare(values: dict[str, Any], kustomization: Path) -> None:
    rendered = render.by_key(render.render_chart(values))
    built = render.by_key(render.kustomize_build(kustomization))
    assert set(rendered) == set(built)
    for key, doc in built.items():
        assert rendered[key] == doc, key


def test_chart_default_equals_default_kustomization() -> None:
    _compare({"namespace": {"create": True}}, DEPLOY / "default")


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl kustomize for patches/components")
def test_chart_external_metrics_equals_overlay() -> None:
    _compare(
        {"namespace": {"create": True}, "externalMetrics": {"enabled": True}},
        DEPLOY / "overlays" / "external-metrics",
    )


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl kustomize for patches/components")
def test_chart_cert_manager_equals_overlay() -> None:
    _compare(
        {"namespace": {"create": True}, "certManager": {"enabled": True}},
        DEPLOY / "overlays" / "cert-manager",
    )


def test_chart_toggles_combine() -> None:
    docs = render.by_key(
        render.render_chart({"certManager": {"enabled": True}, "externalMetrics": {"enabled": True}})
    )
    apiservices = [d for d in docs.values() if d["kind"] == "APIService"]
    assert len(apiservices) == 3
    for svc in apiservices:
        assert (
            svc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "keptn-system/keptn-metrics-serving"
        )
    deploy = next(d for d in docs.values() if d["kind"] == "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--apiservice-ca-injection") for a in args)
    assert "--tls-cert-file=/etc/keptn-metrics/tls/tls.crt" in args
    role = next(
        d for d in docs.values() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "keptn-metrics"
    )
    assert not any("apiservices" in r["resources"] for r in role["rules"])
    assert not any(d["kind"] == "Namespace" for d in docs.values())


def test_chart_values_and_release_namespace() -> None:
    docs = render.render_chart(
        {
            "replicaCount": 3,
            "shards": 24,
            "image": {"tag": "9.9.9"},
            "networkPolicy": {"enabled": False},
            "resources": {},
        },
        namespace="monitoring",
    )
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["metadata"]["namespace"] == "monitoring"
    assert deploy["spec"]["replicas"] == 3
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "SHARDS", "value": "24"} in container["env"] and "--shards=$(SHARDS)" in container["args"]
    assert container["image"] == "ghcr.io/keptn-metrics/keptn-metrics:9.9.9"
    assert not any(d["kind"] == "NetworkPolicy" for d in docs)
    apiservice = next(d for d in docs if d["kind"] == "APIService")
    assert apiservice["spec"]["service"]["namespace"] == "monitoring"
    binding = next(
        d for d in docs if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "keptn-metrics"
    )
    assert binding["subjects"][0]["namespace"] == "monitoring"


def test_template_renderer_trims_like_go_templates() -> None:
    ctx = {"Values": {"a": True, "b": False, "r": {"x": 1}}, "Release": {"Namespace": "n"}}
    text = (
        "x:\n  {{- if .Values.a }}\n  y: 1\n  {{- else }}\n  y: 2\n  {{- end }}\n"
        "z: {{ .Release.Namespace }}\n"
    )
    assert render.render_template(text, ctx) == "x:\n  y: 1\nz: n\n"
    assert render.render_template("{{- if not .Values.b }}k{{ end }}", ctx) == "k"
    assert render.render_template("r:\n  {{- toYaml .Values.r | nindent 2 }}\n", ctx) == "r:\n  x: 1\n"


@pytest.mark.skipif(not HAS_KUBECTL, reason="needs kubectl kustomize for patches/components")
def test_chart_both_toggles_equal_cert_manager_overlay_with_component(tmp_path: Path) -> None:
    copy_of_deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_of_deploy, ignore=shutil.ignore_patterns("helm", "__pycache__"))
    overlay = copy_of_deploy / "overlays" / "cert-manager"
    with (overlay / "kustomization.yaml").open("a", encoding="utf-8") as f:
        f.write("components:\n- ../../components/external-metrics\n")
    _compare(
        {
            "namespace": {"create": True},
            "certManager": {"enabled": True},
            "externalMetrics": {"enabled": True},
        },
        overlay,
    )


def test_scale_out_overlay_sets_replicas_and_shards() -> None:
    docs = render.kustomize_build(ROOT / "deploy" / "overlays" / "scale-out")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 4
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHARDS"]["value"] == "32"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
