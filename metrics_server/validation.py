"""Checks shared by every manifest parser (metrics.keptn.sh, lifecycle.keptn.sh, core Secrets).

Each raises ValidationError naming the object (`Kind namespace/name`) and the field, so a
bad manifest is reported the same way whichever parser reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from metrics_server.excerpt import excerpt
from metrics_server.names import dns1123_label_errors, dns1123_subdomain_errors, path_segment_errors


class ValidationError(ValueError):
    """A manifest that upstream Keptn would reject; the message names object and field."""

    def __init__(self, obj: str, field_path: str, message: str) -> None:
        self.obj = obj
        self.field_path = field_path
        self.message = message
        super().__init__(f"{obj}: {field_path}: {message}")


def describe_object(doc: Mapping[str, Any], default_namespace: str) -> str:
    """`Kind namespace/name` for messages, whatever shape the document has (never raises)."""
    md = doc.get("metadata")
    md = md if isinstance(md, Mapping) else {}
    kind, ns, name = doc.get("kind"), md.get("namespace") or default_namespace, md.get("name")
    return f"{_shown(kind)} {_shown(ns)}/{_shown(name)}"


def _shown(value: Any) -> str:
    """A manifest value quoted in a message: bounded, and `?` when it is not a string."""
    return excerpt(value, 80) if isinstance(value, str) and value else "?"


def expect_map(value: Any, obj: str, path: str) -> Mapping[str, Any]:
    """An object field; absent or null reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(obj, path, f"must be an object, got {type(value).__name__}")
    return value


def str_map(value: Any, obj: str, path: str) -> dict[str, str]:
    """A map of strings (labels, annotations)."""
    out: dict[str, str] = {}
    for k, v in expect_map(value, obj, path).items():
        if not isinstance(v, str):
            raise ValidationError(obj, f"{path}.{k}", "must be a string")
        out[str(k)] = v
    return out


def split_api_version(doc: Mapping[str, Any], obj: str) -> tuple[str, str]:
    """(group, version) of a required apiVersion; the core group is ""."""
    api_version = doc.get("apiVersion")
    if api_version is not None and not isinstance(api_version, str):
        raise ValidationError(obj, "apiVersion", f"must be a string, got {type(api_version).__name__}")
    if not api_version:
        raise ValidationError(obj, "apiVersion", "is required")
    group, _, version = api_version.rpartition("/")
    return group, version


def check_api_version(doc: Mapping[str, Any], obj: str, group: str, versions: tuple[str, ...]) -> str:
    """The version, if apiVersion is `group/` one of `versions`; else an error listing those served."""
    got_group, version = split_api_version(doc, obj)
    if got_group != group or version not in versions:
        served = ", ".join(f"{group}/{v}" for v in versions)
        raise ValidationError(
            obj, "apiVersion", f"{doc.get('apiVersion')!r} is not served (use one of {served})"
        )
    return version


def _valid(value: Any, obj: str, path: str, errors_of: Callable[[str], list[str]], what: str) -> str:
    """`value` if it is a string that `errors_of` finds nothing wrong with."""
    if not isinstance(value, str):
        raise ValidationError(obj, path, "must be a string")
    errors = errors_of(value)
    if errors:
        raise ValidationError(obj, path, f"{value!r} is not a valid {what}: {'; '.join(errors)}")
    return value


def object_name(value: Any, obj: str, path: str) -> str:
    """`value` if it is a valid Kubernetes object name (DNS-1123 subdomain), the API server's rule."""
    return _valid(value, obj, path, dns1123_subdomain_errors, "name")


def reference_name(value: Any, obj: str, path: str) -> str:
    """`value` if it may name an object in a REST path (IsValidPathSegmentName: not `.` or `..`,
    no `/` or `%`). For references inside lifecycle objects, where upstream's own manifests use
    names such as `response_time_p95` that no object can have: such a reference stays valid and
    simply never resolves, while a path-escaping one is refused here."""
    return _valid(value, obj, path, path_segment_errors, "name")


def namespace_name(value: Any, obj: str, path: str) -> str:
    """`value` if it is a valid namespace (DNS-1123 label), the API server's rule."""
    return _valid(value, obj, path, dns1123_label_errors, "namespace")


__all__ = [
    "ValidationError",
    "check_api_version",
    "describe_object",
    "expect_map",
    "namespace_name",
    "object_name",
    "reference_name",
    "split_api_version",
    "str_map",
]
