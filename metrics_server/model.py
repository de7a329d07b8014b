"""Keptn resources (metrics.keptn.sh) as immutable values, parsed and validated like upstream.

Parsing accepts exactly what upstream Keptn's CRDs accept (field names, defaults, served
versions) and applies upstream's webhook rules, so a manifest that works there works here.
Every error names the object and the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metrics_server.aggregation import AGGREGATIONS
from metrics_server.durations import DurationError, parse_duration
from metrics_server.excerpt import excerpt
from metrics_server.validation import (
    ValidationError,
    check_api_version,
    describe_object,
    expect_map,
    namespace_name,
    object_name,
    split_api_version,
    str_map,
)
from providers.registry import TYPE_NAMES as PROVIDER_TYPES

METRICS_GROUP = "metrics.keptn.sh"
METRICS_VERSIONS = ("v1", "v1beta1", "v1alpha3", "v1alpha2", "v1alpha1")
VERSIONS_WITHOUT_RANGE = ("v1alpha1", "v1alpha2")
STORAGE_VERSION = "v1"

MAX_STORED_RESULTS = 255
DEFAULT_RANGE_INTERVAL = "5m"
# Bounds on durations (upstream has none). Far beyond any real use, small enough that the
# staleness bound (a multiple of the interval) and a range query stay meaningful; the CRD
# schema (deploy/crdgen.py) carries the same numbers.
MAX_FETCH_INTERVAL_SECONDS = 86_400  # one day
MAX_RANGE_SECONDS = 366 * 86_400  # 8784h: a year of data, leap day included
MAX_RANGE_TEXT = "8784h"

# Upstream's kubebuilder pattern for range.interval / range.step.
_UPSTREAM_DURATION = re.compile(r"^0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


@dataclass(frozen=True, order=True)
class ObjectKey:
    """(namespace, name): the unit of scheduling, caching and sharding. Never joined by '-'."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ObjectMeta:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""
    generation: int = 0

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = ""
    optional: bool = False


@dataclass(frozen=True)
class KeptnMetricsProvider:
    meta: ObjectMeta
    type: str
    target_server: str
    secret_key_ref: SecretKeyRef | None = None
    insecure_skip_tls_verify: bool = False
    api_version: str = f"{METRICS_GROUP}/{STORAGE_VERSION}"

    @property
    def key(self) -> ObjectKey:
        return self.meta.key


@dataclass(frozen=True)
class MetricRange:
    interval: str = DEFAULT_RANGE_INTERVAL
    step: str | None = None
    aggregation: str | None = None
    stored_results: int = 0

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def step_seconds(self) -> float | None:
        return parse_duration(self.step) if self.step else None


@dataclass(frozen=True)
class KeptnMetric:
    meta: ObjectMeta
    provider_name: str
    query: str
    fetch_interval_seconds: int
    range: MetricRange | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    api_version: str = f"{METRICS_GROUP}/{STORAGE_VERSION}"

    @property
    def key(self) -> ObjectKey:
        return self.meta.key


@dataclass(frozen=True)
class Secret:
    meta: ObjectMeta
    data: Mapping[str, bytes]

    @property
    def key(self) -> ObjectKey:
        return self.meta.key

    def text(self, key: str) -> str | None:
        raw = self.data.get(key)
        return None if raw is None else raw.decode("utf-8", errors="replace")


Resource = KeptnMetric | KeptnMetricsProvider | Secret


def parse_meta(doc: Mapping[str, Any], obj: str, default_namespace: str) -> ObjectMeta:
    md = expect_map(doc.get("metadata"), obj, "metadata")
    name = md.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError(obj, "metadata.name", "is required")
    object_name(name, obj, "metadata.name")
    ns = md.get("namespace") or default_namespace
    namespace_name(ns, obj, "metadata.namespace")
    gen = md.get("generation", 0)
    return ObjectMeta(
        namespace=ns,
        name=name,
        labels=str_map(md.get("labels"), obj, "metadata.labels"),
        annotations=str_map(md.get("annotations"), obj, "metadata.annotations"),
        resource_version=str(md.get("resourceVersion") or ""),
        uid=str(md.get("uid") or ""),
        generation=gen if isinstance(gen, int) else 0,
    )


def _duration_field(value: Any, obj: str, path: str) -> str:
    if not isinstance(value, str) or not _UPSTREAM_DURATION.fullmatch(value):
        raise ValidationError(obj, path, f"{value!r} is not a Go duration such as 30s, 5m or 1h30m")
    try:
        seconds = parse_duration(value)
    except DurationError as exc:
        raise ValidationError(obj, path, str(exc)) from None
    if seconds < 0:
        raise ValidationError(obj, path, "must not be negative")
    return value


def parse_provider(doc: Mapping[str, Any], default_namespace: str = "default") -> KeptnMetricsProvider:
    obj = describe_object(doc, default_namespace)
    version = check_api_version(doc, obj, METRICS_GROUP, METRICS_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    ptype = spec.get("type")
    if version in ("v1alpha1", "v1alpha2") and ptype is None:
        ptype = "prometheus"  # early versions had no type field; upstream assumed Prometheus
    if not isinstance(ptype, str) or ptype not in PROVIDER_TYPES:
        raise ValidationError(
            obj, "spec.type", f"{ptype!r} is not a known provider type ({', '.join(PROVIDER_TYPES)})"
        )
    target = spec.get("targetServer")
    if not isinstance(target, str) or not target.strip():
        raise ValidationError(obj, "spec.targetServer", "is required")
    ref = None
    raw_ref = spec.get("secretKeyRef")
    if raw_ref is not None:
        raw_ref = expect_map(raw_ref, obj, "spec.secretKeyRef")
        rname = raw_ref.get("name")
        if not isinstance(rname, str) or not rname:
            raise ValidationError(obj, "spec.secretKeyRef.name", "is required")
        object_name(rname, obj, "spec.secretKeyRef.name")  # it becomes a path segment of a Secret GET
        rkey = raw_ref.get("key", "")
        if not isinstance(rkey, str):
            raise ValidationError(obj, "spec.secretKeyRef.key", "must be a string")
        optional = raw_ref.get("optional", False)
        if not isinstance(optional, bool):
            raise ValidationError(obj, "spec.secretKeyRef.optional", "must be a boolean")
        ref = SecretKeyRef(name=rname, key=rkey, optional=optional)
    insecure = spec.get("insecureSkipTlsVerify", False)
    if not isinstance(insecure, bool):
        raise ValidationError(obj, "spec.insecureSkipTlsVerify", "must be a boolean")
    return KeptnMetricsProvider(
        meta=meta,
        type=ptype,
        target_server=target.strip(),
        secret_key_ref=ref,
        insecure_skip_tls_verify=insecure,
        api_version=str(doc.get("apiVersion")),
    )


def parse_metric(doc: Mapping[str, Any], default_namespace: str = "default") -> KeptnMetric:
    obj = describe_object(doc, default_namespace)
    version = check_api_version(doc, obj, METRICS_GROUP, METRICS_VERSIONS)
    meta = parse_meta(doc, obj, default_namespace)
    spec = expect_map(doc.get("spec"), obj, "spec")
    provider = expect_map(spec.get("provider"), obj, "spec.provider")
    pname = provider.get("name")
    if not isinstance(pname, str) or not pname:
        raise ValidationError(obj, "spec.provider.name", "is required")
    object_name(pname, obj, "spec.provider.name")
    query = spec.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValidationError(obj, "spec.query", "is required")
    interval = spec.get("fetchIntervalSeconds")
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise ValidationError(
            obj, "spec.fetchIntervalSeconds", f"must be an integer number of seconds, got {interval!r}"
        )
    if interval < 1:
        raise ValidationError(obj, "spec.fetchIntervalSeconds", "must be at least 1")
    if interval > MAX_FETCH_INTERVAL_SECONDS:
        raise ValidationError(
            obj,
            "spec.fetchIntervalSeconds",
            f"must be at most {MAX_FETCH_INTERVAL_SECONDS} (one day), got {excerpt(interval, 40)}",
        )
    mrange = None
    raw_range = spec.get("range")
    if raw_range is not None:
        if version in VERSIONS_WITHOUT_RANGE:
            raise ValidationError(
                obj, "spec.range", f"is not available in {METRICS_GROUP}/{version} (use v1)"
            )
        mrange = _parse_range(expect_map(raw_range, obj, "spec.range"), obj)
    status = expect_map(doc.get("status"), obj, "status")
    return KeptnMetric(
        meta=meta,
        provider_name=pname,
        query=query,
        fetch_interval_seconds=interval,
        range=mrange,
        status=dict(status),
        api_version=str(doc.get("apiVersion")),
    )


def _parse_range(raw: Mapping[str, Any], obj: str) -> MetricRange:
    interval = _duration_field(raw.get("interval", DEFAULT_RANGE_INTERVAL), obj, "spec.range.interval")
    step = raw.get("step")
    step = _duration_field(step, obj, "spec.range.step") if step not in (None, "") else None
    aggregation = raw.get("aggregation")
    if aggregation in (None, ""):
        aggregation = None
    elif aggregation not in AGGREGATIONS:
        raise ValidationError(
            obj, "spec.range.aggregation", f"{aggregation!r} must be one of {', '.join(AGGREGATIONS)}"
        )
    if (step is None) != (aggregation is None):
        raise ValidationError(
            obj,
            "spec.range",
            "step and aggregation must be set together (a step needs an aggregation and vice versa)",
        )
    stored = raw.get("storedResults", 0)
    if isinstance(stored, bool) or not isinstance(stored, int) or not 0 <= stored <= MAX_STORED_RESULTS:
        raise ValidationError(
            obj, "spec.range.storedResults", f"must be an integer from 0 to {MAX_STORED_RESULTS}"
        )
    if parse_duration(interval) <= 0:
        raise ValidationError(obj, "spec.range.interval", "must be greater than zero")
    if step is not None and parse_duration(step) <= 0:
        raise ValidationError(obj, "spec.range.step", "must be greater than zero")
    for path, text in (("spec.range.interval", interval), ("spec.range.step", step)):
        if text is not None and parse_duration(text) > MAX_RANGE_SECONDS:
            raise ValidationError(obj, path, f"must be at most {MAX_RANGE_TEXT} (366 days), got {text!r}")
    return MetricRange(interval=interval, step=step, aggregation=aggregation, stored_results=stored)


def parse_secret(doc: Mapping[str, Any], default_namespace: str = "default") -> Secret:
    obj = describe_object(doc, default_namespace)
    group, version = split_api_version(doc, obj)
    if group != "" or version != "v1":
        raise ValidationError(obj, "apiVersion", "a Secret must be apiVersion v1")
    meta = parse_meta(doc, obj, default_namespace)
    data: dict[str, bytes] = {}
    for k, v in expect_map(doc.get("data"), obj, "data").items():
        if not isinstance(v, str):
            raise ValidationError(obj, f"data.{k}", "must be a base64 string")
        try:
            data[str(k)] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError(obj, f"data.{k}", "is not valid base64") from None
    for k, v in expect_map(doc.get("stringData"), obj, "stringData").items():
        if not isinstance(v, str):
            raise ValidationError(obj, f"stringData.{k}", "must be a string")
        data[str(k)] = v.encode()  # stringData wins over data, as in Kubernetes
    return Secret(meta=meta, data=data)


PARSERS: dict[str, Callable[[Mapping[str, Any], str], Resource]] = {
    "KeptnMetric": parse_metric,
    "KeptnMetricsProvider": parse_provider,
    "Secret": parse_secret,
}


def parse_resource(doc: Mapping[str, Any], default_namespace: str = "default") -> Resource | None:
    """Parse a manifest we understand; None for kinds this server does not consume."""
    if not isinstance(doc, Mapping):
        raise ValidationError("<document>", "(root)", f"must be a mapping, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ValidationError(
            describe_object(doc, default_namespace), "kind", f"must be a string, got {type(kind).__name__}"
        )
    if not kind:
        raise ValidationError(describe_object(doc, default_namespace), "kind", "is required")
    parser = PARSERS.get(kind)
    return parser(doc, default_namespace) if parser else None
