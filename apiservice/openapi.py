"""The OpenAPI v2 (Swagger 2.0) document of the metrics APIs, served at /openapi/v2.

The aggregator merges it into the cluster's document; definitions use Kubernetes' names
(io.k8s.metrics.pkg.apis...) with `x-kubernetes-group-version-kind`.
"""

from __future__ import annotations

from typing import Any

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_CM = "io.k8s.metrics.pkg.apis.custom_metrics"
_EM = "io.k8s.metrics.pkg.apis.external_metrics"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _gvk(group: str, version: str, kind: str) -> list[dict[str, str]]:
    return [{"group": group, "version": version, "kind": kind}]


def _definitions() -> dict[str, Any]:
    label_selector = {
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string"},
                        "values": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
    object_reference = {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
        },
    }
    quantity = {"type": "string", "description": "Kubernetes quantity (canonical DecimalSI), e.g. 1500m"}
    time = {"type": "string", "format": "date-time"}
    list_meta = {
        "type": "object",
        "properties": {
            "resourceVersion": {"type": "string"},
            "selfLink": {"type": "string"},
            "continue": {"type": "string"},
        },
    }
    defs: dict[str, Any] = {
        f"{_META}.LabelSelector": label_selector,
        f"{_META}.ListMeta": list_meta,
        f"{_META}.Time": time,
        "io.k8s.api.core.v1.ObjectReference": object_reference,
        "io.k8s.apimachinery.pkg.api.resource.Quantity": quantity,
        f"{_META}.Status": {
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "apiVersion": {"type": "string"},
                "metadata": _ref(f"{_META}.ListMeta"),
                "status": {"type": "string"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "code": {"type": "integer", "format": "int32"},
            },
            "x-kubernetes-group-version-kind": _gvk("", "v1", "Status"),
        },
        f"{_CM}.v1beta2.MetricIdentifier": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "selector": _ref(f"{_META}.LabelSelector")},
        },
        f"{_CM}.v1beta2.MetricValue": {
            "type": "object",
            "required": ["describedObject", "metric", "timestamp", "value"],
            "properties": {
                "describedObject": _ref("io.k8s.api.core.v1.ObjectReference"),
                "metric": _ref(f"{_CM}.v1beta2.MetricIdentifier"),
                "timestamp": _ref(f"{_META}.Time"),
                "windowSeconds": {"type": "integer", "format": "int64"},
                "value": _ref("io.k8s.apimachinery.pkg.api.resource.Quantity"),
            },
        },
        f"{_CM}.v1beta1.MetricValue": {
            "type": "object",
            "required": ["describedObject", "metricName", "timestamp", "value", "selector"],
            "properties": {
                "describedObject": _ref("io.k8s.api.core.v1.ObjectReference"),
                "metricName": {"type": "string"},
                "timestamp": _ref(f"{_META}.Time"),
                "window": {"type": "integer", "format": "int64"},
                "value": _ref("io.k8s.apimachinery.pkg.api.resource.Quantity"),
                "selector": _ref(f"{_META}.LabelSelector"),
            },
        },
        f"{_EM}.v1beta1.ExternalMetricValue": {
            "type": "object",
            "required": ["metricName", "metricLabels", "timestamp", "value"],
            "properties": {
                "metricName": {"type": "string"},
                "metricLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                "timestamp": _ref(f"{_META}.Time"),
                "window": {"type": "integer", "format": "int64"},
                "value": _ref("io.k8s.apimachinery.pkg.api.resource.Quantity"),
            },
        },
    }
    for version in ("v1beta2", "v1beta1"):
        defs[f"{_CM}.{version}.MetricValueList"] = _value_list(
            _CM, "custom.metrics.k8s.io", version, "MetricValue"
        )
    defs[f"{_EM}.v1beta1.ExternalMetricValueList"] = _value_list(
        _EM, "external.metrics.k8s.io", "v1beta1", "ExternalMetricValue"
    )
    return defs


def _value_list(package: str, group: str, version: str, item_kind: str) -> dict[str, Any]:
    """The `{item_kind}List` definition: kind, apiVersion, metadata and items of `item_kind`."""
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "kind": {"type": "string"},
            "apiVersion": {"type": "string"},
            "metadata": _ref(f"{_META}.ListMeta"),
            "items": {"type": "array", "items": _ref(f"{package}.{version}.{item_kind}")},
        },
        "x-kubernetes-group-version-kind": _gvk(group, version, f"{item_kind}List"),
    }


def _param(name: str, where: str = "path", description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": where, "type": "string", "uniqueItems": True}
    if where == "path":
        p["required"] = True
    if description:
        p["description"] = description
    return p


_SELECTORS = [
    _param("labelSelector", "query", "selects described objects by their labels"),
    _param("metricLabelSelector", "query", "selects metric series by their labels"),
]


def _get(op_id: str, schema: str, tag: str, description: str) -> dict[str, Any]:
    return {
        "get": {
            "description": description,
            "operationId": op_id,
            "produces": ["application/json"],
            "schemes": ["https"],
            "tags": [tag],
            "responses": {
                "200": {"description": "OK", "schema": _ref(schema)},
                "401": {"description": "Unauthorized"},
                "403": {"description": "Forbidden", "schema": _ref(f"{_META}.Status")},
                "404": {"description": "Not Found", "schema": _ref(f"{_META}.Status")},
                "503": {"description": "No fresh value", "schema": _ref(f"{_META}.Status")},
            },
        }
    }


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for v in ("v1beta2", "v1beta1"):
        base = f"/apis/custom.metrics.k8s.io/{v}"
        schema = f"{_CM}.{v}.MetricValueList"
        tag = f"customMetrics_{v}"
        cap = v[0].upper() + v[1:]
        paths[f"{base}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}"] = {
            **_get(
                f"readCustomMetrics{cap}NamespacedObjectMetric",
                schema,
                tag,
                "the metric {metric} of the object {name} ('*' for all) of {resource} in {namespace}",
            ),
            "parameters": [
                _param("namespace"),
                _param("resource"),
                _param("name"),
                _param("metric"),
                *_SELECTORS,
            ],
        }
        paths[f"{base}/namespaces/{{namespace}}/metrics/{{metric}}"] = {
            **_get(
                f"readCustomMetrics{cap}NamespaceMetric", schema, tag, "the metric {metric} of the namespace"
            ),
            "parameters": [_param("namespace"), _param("metric"), *_SELECTORS],
        }
        paths[f"{base}/{{resource}}/{{name}}/{{metric}}"] = {
            **_get(
                f"readCustomMetrics{cap}ClusterObjectMetric",
                schema,
                tag,
                "the metric {metric} of cluster-scoped objects ('*' for all)",
            ),
            "parameters": [_param("resource"), _param("name"), _param("metric"), *_SELECTORS],
        }
    paths["/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"] = {
        **_get(
            "readExternalMetricsV1beta1NamespacedMetric",
            f"{_EM}.v1beta1.ExternalMetricValueList",
            "externalMetrics_v1beta1",
            "the external metric {metric} (a KeptnMetric) in {namespace}",
        ),
        "parameters": [_param("namespace"), _param("metric"), _SELECTORS[0]],
    }
    return {
        "swagger": "2.0",
        "info": {"title": "keptn-metrics", "version": "v0.1.0"},
        "paths": paths,
        "definitions": _definitions(),
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }
