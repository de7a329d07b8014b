"""The lifecycle resources, parsed and validated: KeptnEvaluationDefinition, KeptnEvaluation
(lifecycle.keptn.sh) and AnalysisValueTemplate, AnalysisDefinition, Analysis (metrics.keptn.sh).

Field names and defaults are upstream Keptn's (see deploy/crds). Errors are the shared
`ValidationError(obj, field, message)`, so they read like every other manifest problem.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metrics_server.controller.targets import (
    AnalysisOperator,
    EvaluationTarget,
    TargetError,
    parse_analysis_operator,
    parse_evaluation_target,
)
from metrics_server.controller.template import TemplateError, placeholders
from metrics_server.durations import DurationError, parse_duration
from metrics_server.model import MAX_RANGE_TEXT, ObjectKey, ObjectMeta, parse_meta
from metrics_server.validation import (
    ValidationError,
    check_api_version,
    describe_object,
    expect_map,
    namespace_name,
    object_name,
    reference_name,
)

LIFECYCLE_GROUP = "lifecycle.keptn.sh"
LIFECYCLE_VERSIONS = ("v1", "v1beta1", "v1alpha3", "v1alpha2", "v1alpha1")
METRICS_GROUP = "metrics.keptn.sh"
ANALYSIS_VERSIONS = ("v1", "v1beta1", "v1alpha3")

DEFAULT_RETRIES = 10
DEFAULT_RETRY_INTERVAL = "5s"
# Bounds (upstream has none; deploy/crdgen.py carries the same numbers): a gate that retries
# for ever, or an analysis over decades, is a mistake, never a plan.
MAX_RETRIES = 1000
MAX_RETRY_INTERVAL_TEXT = "24h"
MAX_RECENT_TEXT = MAX_RANGE_TEXT  # 8784h, as KeptnMetric range.interval


@dataclass(frozen=True)
class ObjectRef:
    name: str
    namespace: str = ""

    def key(self, default_namespace: str) -> ObjectKey:
        return ObjectKey(self.namespace or default_namespace, self.name)

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out


# -- evaluations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationObjective:
    metric_ref: ObjectRef
    target: EvaluationTarget


@dataclass(frozen=True)
class KeptnEvaluationDefinition:
    meta: ObjectMeta
    objectives: tuple[EvaluationObjective, ...]
    retries: int = DEFAULT_RETRIES
    retry_interval: str = DEFAULT_RETRY_INTERVAL

    @property
    def key(self) -> ObjectKey:
        return self.meta.key

    @property
    def retry_interval_seconds(self) -> float:
        return parse_duration(self.retry_interval)


@dataclass(frozen=True)
class KeptnEvaluation:
    meta: ObjectMeta
    evaluation_definition: str
    workload_version: str = ""
    workload: str = ""
    app_name: str = ""
    app_version: str = ""
    check_type: str = ""
    retries: int = DEFAULT_RETRIES
    retry_interval: str = DEFAULT_RETRY_INTERVAL
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> ObjectKey:
        return self.meta.key

    @property
    def retry_interval_seconds(self) -> float:
        return parse_duration(self.retry_interval)


# -- analyses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisValueTemplate:
    meta: ObjectMeta
    provider: ObjectRef
    query: str

    @property
    def key(self) -> ObjectKey:
        return self.meta.key


@dataclass(frozen=True)
class AnalysisObjective:
    template_ref: ObjectRef
    failure: AnalysisOperator | None
    warning: AnalysisOperator | None
    weight: int = 1
    key_objective: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)  # the objective as upstream marshals it

    @property
    def stored_key(self) -> str:
        """Upstream's key in `status.storedValues`: name, or name-namespace when a namespace is set."""
        ref = self.template_ref
        return f"{ref.name}-{ref.namespace}" if ref.namespace else ref.name


@dataclass(frozen=True)
class AnalysisDefinition:
    meta: ObjectMeta
    objectives: tuple[AnalysisObjective, ...]
    pass_percentage: int
    warning_percentage: int

    @property
    def key(self) -> ObjectKey:
        return self.meta.key


@dataclass(frozen=True)
class Timeframe:
    start: float | None = None  # `from` (Unix seconds)
    end: float | None = None  # `to`
    recent: str | None = None

    def resolve(self, now: float) -> tuple[float, float]:
        """(from, to): a `recent` timeframe ends now."""
        if self.recent is not None:
            return now - parse_duration(self.recent), now
        assert self.start is not None and self.end is not None
        return self.start, self.end


@dataclass(frozen=True)
class Analysis:
    meta: ObjectMeta
    definition: ObjectRef
    timeframe: Timeframe
    args: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> ObjectKey:
        return self.meta.key

    @property
    def definition_key(self) -> ObjectKey:
        return self.definition.key(self.meta.namespace)


LifecycleResource = (
    KeptnEvaluationDefinition | KeptnEvaluation | AnalysisValueTemplate | AnalysisDefinition | Analysis
)


# -- parsing --------------------------------------------------------------------------------


def _string(value: Any, obj: str, path: str, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise ValidationError(obj, path, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(obj, path, "must be a string")
    return value


def _object_ref(value: Any, obj: str, path: str) -> ObjectRef:
    raw = expect_map(value, obj, path)
    if not raw:
        raise ValidationError(obj, path, "is required")
    name = reference_name(_string(raw.get("name"), obj, f"{path}.name", required=True), obj, f"{path}.name")
    namespace = _string(raw.get("namespace"), obj, f"{path}.namespace")
    if namespace:
        namespace_name(namespace, obj, f"{path}.namespace")
    return ObjectRef(name=name, namespace=namespace)


def _non_negative_int(value: Any, default: int, obj: str, path: str) -> int:
    """`value` (absent or null: `default`) if it is an integer >= 0."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(obj, path, f"must be a non-negative integer, got {value!r}")
    return value


def _retries(spec: Mapping[str, Any], obj: str) -> tuple[int, str]:
    retries = _non_negative_int(spec.get("retries"), DEFAULT_RETRIES, obj, "spec.retries")
    if retries > MAX_RETRIES:
        raise ValidationError(obj, "spec.retries", f"must be at most {MAX_RETRIES}, got {retries}")
    interval = spec.get("retryInterval") or DEFAULT_RETRY_INTERVAL
    if not isinstance(interval, str):
        raise ValidationError(obj, "spec.retryInterval", "must be a Go duration string such as 5s")
    try:
        seconds = parse_duration(interval)
    except DurationError as exc:
        raise ValidationError(obj, "spec.retryInterval", str(exc)) from None
    if seconds < 0:
        raise ValidationError(obj, "spec.retryInterval", "must not be negative")
    if seconds > parse_duration(MAX_RETRY_INTERVAL_TEXT):
        raise ValidationError(
            obj, "spec.retryInterval", f"must be at most {MAX_RETRY_INTERVAL_TEXT}, got {interval!r}"
        )
    return retries, interval


def parse_evaluation_definition(
    doc: Mapping[str, Any], default_namespace: str = "default"
) -> KeptnEvaluationDefinition:
    obj = describe_object(doc, default_namespace)
    check_api_version(doc, obj, LIFECYCLE_GROUP, LIFECYCLE_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    raw_objectives = spec.get("objectives")
    if not isinstance(raw_objectives, list):
        raise ValidationError(
            obj, "spec.objectives", "is required (a list of keptnMetricRef + evaluationTarget)"
        )
    objectives = []
    for i, item in enumerate(raw_objectives):
        path = f"spec.objectives[{i}]"
        item = expect_map(item, obj, path)
        ref = _object_ref(item.get("keptnMetricRef"), obj, f"{path}.keptnMetricRef")
        try:
            target = parse_evaluation_target(item.get("evaluationTarget"))
        except TargetError as exc:
            raise ValidationError(obj, f"{path}.evaluationTarget", str(exc)) from None
        objectives.append(EvaluationObjective(ref, target))
    retries, interval = _retries(spec, obj)
    return KeptnEvaluationDefinition(meta, tuple(objectives), retries, interval)


def parse_evaluation(doc: Mapping[str, Any], default_namespace: str = "default") -> KeptnEvaluation:
    obj = describe_object(doc, default_namespace)
    check_api_version(doc, obj, LIFECYCLE_GROUP, LIFECYCLE_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    retries, interval = _retries(spec, obj)
    return KeptnEvaluation(
        meta=meta,
        evaluation_definition=object_name(
            _string(spec.get("evaluationDefinition"), obj, "spec.evaluationDefinition", True),
            obj,
            "spec.evaluationDefinition",
        ),
        workload_version=_string(spec.get("workloadVersion"), obj, "spec.workloadVersion"),
        workload=_string(spec.get("workload"), obj, "spec.workload"),
        app_name=_string(spec.get("appName"), obj, "spec.appName"),
        app_version=_string(spec.get("appVersion"), obj, "spec.appVersion"),
        check_type=_string(spec.get("checkType"), obj, "spec.checkType"),
        retries=retries,
        retry_interval=interval,
        status=dict(expect_map(doc.get("status"), obj, "status")),
    )


def parse_value_template(doc: Mapping[str, Any], default_namespace: str = "default") -> AnalysisValueTemplate:
    obj = describe_object(doc, default_namespace)
    check_api_version(doc, obj, METRICS_GROUP, ANALYSIS_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    query = _string(spec.get("query"), obj, "spec.query", required=True)
    try:
        placeholders(query)
    except TemplateError as exc:
        raise ValidationError(obj, "spec.query", str(exc)) from None
    return AnalysisValueTemplate(meta, _object_ref(spec.get("provider"), obj, "spec.provider"), query)


def _canonical_operator(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The operator as upstream marshals it: Quantities as strings."""
    out: dict[str, Any] = {}
    for name, body in raw.items():
        if body is None:
            continue
        out[name] = {k: str(v) for k, v in body.items()} if isinstance(body, Mapping) else body
    return out


def parse_analysis_definition(
    doc: Mapping[str, Any], default_namespace: str = "default"
) -> AnalysisDefinition:
    obj = describe_object(doc, default_namespace)
    check_api_version(doc, obj, METRICS_GROUP, ANALYSIS_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    raw_objectives = spec.get("objectives") or []
    if not isinstance(raw_objectives, list):
        raise ValidationError(obj, "spec.objectives", "must be a list")
    objectives = []
    seen: set[str] = set()
    for i, item in enumerate(raw_objectives):
        path = f"spec.objectives[{i}]"
        item = expect_map(item, obj, path)
        ref = _object_ref(item.get("analysisValueTemplateRef"), obj, f"{path}.analysisValueTemplateRef")
        target = expect_map(item.get("target"), obj, f"{path}.target")
        ops: dict[str, AnalysisOperator | None] = {}
        raw_target: dict[str, Any] = {}
        for kind in ("failure", "warning"):
            raw_op = target.get(kind)
            if raw_op is None:
                ops[kind] = None
                continue
            try:
                ops[kind] = parse_analysis_operator(raw_op, f"{path}.target.{kind}")
            except TargetError as exc:
                raise ValidationError(obj, f"{path}.target.{kind}", str(exc)) from None
            raw_target[kind] = _canonical_operator(raw_op)
        weight = _non_negative_int(item.get("weight"), 1, obj, f"{path}.weight")
        key_objective = item.get("keyObjective", False)
        if not isinstance(key_objective, bool):
            raise ValidationError(obj, f"{path}.keyObjective", "must be a boolean")
        raw: dict[str, Any] = {
            "analysisValueTemplateRef": ref.to_json(),
            "target": raw_target,
            "weight": weight,
        }
        if key_objective:
            raw["keyObjective"] = True
        objective = AnalysisObjective(ref, ops["failure"], ops["warning"], weight, key_objective, raw)
        if objective.stored_key in seen:
            raise ValidationError(
                obj, f"{path}.analysisValueTemplateRef", f"{ref.name!r} is used by two objectives"
            )
        seen.add(objective.stored_key)
        objectives.append(objective)
    total = expect_map(spec.get("totalScore"), obj, "spec.totalScore")
    if not total:
        raise ValidationError(obj, "spec.totalScore", "is required (passPercentage and warningPercentage)")
    percentages = {}
    for name in ("passPercentage", "warningPercentage"):
        value = total.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ValidationError(
                obj, f"spec.totalScore.{name}", f"must be an integer from 0 to 100, got {value!r}"
            )
        percentages[name] = value
    if percentages["warningPercentage"] >= percentages["passPercentage"]:  # upstream's webhook rule
        raise ValidationError(obj, "spec.totalScore", "warningPercentage must be smaller than passPercentage")
    return AnalysisDefinition(
        meta, tuple(objectives), percentages["passPercentage"], percentages["warningPercentage"]
    )


def parse_time(value: Any, obj: str, path: str) -> float:
    if isinstance(value, dt.datetime):  # YAML loads unquoted timestamps as datetimes
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if not isinstance(value, str):
        raise ValidationError(obj, path, "must be an RFC3339 time such as 2024-01-02T15:04:05Z")
    try:
        stamp = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            obj, path, f"{value!r} is not an RFC3339 time such as 2024-01-02T15:04:05Z"
        ) from None
    if stamp.tzinfo is None:
        raise ValidationError(obj, path, f"{value!r} needs a time zone (Z or +hh:mm)")
    return stamp.timestamp()


def parse_analysis(doc: Mapping[str, Any], default_namespace: str = "default") -> Analysis:
    obj = describe_object(doc, default_namespace)
    check_api_version(doc, obj, METRICS_GROUP, ANALYSIS_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    definition = _object_ref(spec.get("analysisDefinition"), obj, "spec.analysisDefinition")
    tf = expect_map(spec.get("timeframe"), obj, "spec.timeframe")
    has_recent = tf.get("recent") not in (None, "")
    has_from, has_to = tf.get("from") not in (None, ""), tf.get("to") not in (None, "")
    if (has_recent and (has_from or has_to)) or (not has_recent and not (has_from and has_to)):
        raise ValidationError(obj, "spec.timeframe", "set either recent, or both from and to")
    if has_recent:
        recent = tf["recent"]
        try:
            seconds = parse_duration(recent)
        except DurationError as exc:
            raise ValidationError(obj, "spec.timeframe.recent", str(exc)) from None
        if seconds <= 0:
            raise ValidationError(obj, "spec.timeframe.recent", "must be greater than zero")
        if seconds > parse_duration(MAX_RECENT_TEXT):
            raise ValidationError(
                obj, "spec.timeframe.recent", f"must be at most {MAX_RECENT_TEXT}, got {recent!r}"
            )
        timeframe = Timeframe(recent=recent)
    else:
        start = parse_time(tf["from"], obj, "spec.timeframe.from")
        end = parse_time(tf["to"], obj, "spec.timeframe.to")
        if not start < end:
            raise ValidationError(obj, "spec.timeframe", "from must be before to")
        timeframe = Timeframe(start=start, end=end)
    args_raw = expect_map(spec.get("args"), obj, "spec.args")
    args = {}
    for k, v in args_raw.items():
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValidationError(obj, f"spec.args.{k}", "must be a string")
        args[str(k)] = str(v)
    return Analysis(meta, definition, timeframe, args, dict(expect_map(doc.get("status"), obj, "status")))


PARSERS: dict[str, Callable[[Mapping[str, Any], str], LifecycleResource]] = {
    "KeptnEvaluationDefinition": parse_evaluation_definition,
    "KeptnEvaluation": parse_evaluation,
    "AnalysisValueTemplate": parse_value_template,
    "AnalysisDefinition": parse_analysis_definition,
    "Analysis": parse_analysis,
}


def parse_lifecycle(doc: Mapping[str, Any], default_namespace: str = "default") -> LifecycleResource | None:
    """Parse one of our kinds; None for any other kind."""
    if not isinstance(doc, Mapping):
        return None
    parser = PARSERS.get(str(doc.get("kind", "")))
    return parser(doc, default_namespace) if parser else None


@dataclass
class LifecycleManifests:
    """Our kinds from a folder of manifests, indexed by kind and (namespace, name)."""

    evaluation_definitions: dict[ObjectKey, KeptnEvaluationDefinition] = field(default_factory=dict)
    evaluations: dict[ObjectKey, KeptnEvaluation] = field(default_factory=dict)
    templates: dict[ObjectKey, AnalysisValueTemplate] = field(default_factory=dict)
    analysis_definitions: dict[ObjectKey, AnalysisDefinition] = field(default_factory=dict)
    analyses: dict[ObjectKey, Analysis] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, obj: LifecycleResource) -> None:
        indexes: dict[type, dict[ObjectKey, Any]] = {
            KeptnEvaluationDefinition: self.evaluation_definitions,
            KeptnEvaluation: self.evaluations,
            AnalysisValueTemplate: self.templates,
            AnalysisDefinition: self.analysis_definitions,
            Analysis: self.analyses,
        }
        indexes[type(obj)][obj.key] = obj


def load_lifecycle(
    paths: Iterable[Path], default_namespace: str = "default", max_bytes: int | None = None
) -> LifecycleManifests:
    """Read our kinds from manifest files; invalid documents are recorded in `problems`.

    Reading and document shapes are the metrics loader's (`metrics_server.store.local`), which
    also reports malformed documents; here only problems in our own kinds are added.
    """
    from metrics_server.excerpt import excerpt
    from metrics_server.store.local import (
        DEFAULT_MAX_MANIFEST_BYTES,
        MESSAGE_LIMIT,
        document_items,
        read_documents,
    )

    out = LifecycleManifests()
    for path in paths:
        try:
            documents = read_documents(path, DEFAULT_MAX_MANIFEST_BYTES if max_bytes is None else max_bytes)
        except (OSError, yaml.YAMLError) as exc:
            out.problems.append(f"{path}: {excerpt(' '.join(str(exc).split()), MESSAGE_LIMIT)}")
            continue
        for index, doc in enumerate(documents):
            items, _ = document_items(doc, str(path))  # shape problems: reported by the metrics loader
            for position, item in enumerate(items):
                place = (
                    f"{path} (document {index + 1})"
                    if items == [doc]
                    else (f"{path} (document {index + 1}, item {position + 1})")
                )
                try:
                    obj = parse_lifecycle(item, default_namespace)
                except ValidationError as exc:
                    out.problems.append(f"{place}: {excerpt(str(exc), MESSAGE_LIMIT)}")
                    continue
                except Exception as exc:  # a parser bug costs one document, never the folder
                    out.problems.append(f"{place}: cannot be parsed ({type(exc).__name__})")
                    continue
                if obj is not None:
                    out.add(obj)
    return out
