"""Checks shared by every manifest parser (metrics.keptn.sh, lifecycle.keptn.sh, core Secrets).

Each raises ValidationError naming the object (`Kind namespace/name`) and the field, so a
bad manifest is reported the same way whichever parser reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ValidationError(ValueError):
    """A manifest that upstream Keptn would reject; the message names object and field."""

    def __init__(self, obj: str, field_path: str, message: str) -> None:
        self.obj = obj
        self.field_path = field_path
        self.message = message
        super().__init__(f"{obj}: {field_path}: {message}")


def object_name(doc: Mapping[str, Any], default_namespace: str) -> str:
    """`Kind namespace/name` for messages, whatever shape the metadata has."""
    md = doc.get("metadata") or {}
    ns = (md.get("namespace") if isinstance(md, Mapping) else None) or default_namespace
    name = md.get("name", "?") if isinstance(md, Mapping) else "?"
    return f"{doc.get('kind', '?')} {ns}/{name}"


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
    if not isinstance(api_version, str) or not api_version:
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


__all__ = [
    "ValidationError",
    "check_api_version",
    "expect_map",
    "object_name",
    "split_api_version",
    "str_map",
]
