"""Kubernetes name rules, as the API server applies them (k8s.io/apimachinery).

`pkg/util/validation`: object names are DNS-1123 subdomains (Secrets, KeptnMetrics,
providers, ...), namespaces are DNS-1123 labels. `pkg/api/validation/path`: a name used as a
REST path segment may not be `.` or `..` and may not contain `/` or `%`. A name that passes
the first two rules passes the third, so the model checks the first two; the Kubernetes
client percent-encodes every segment anyway (defence in depth).
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = rf"{DNS1123_LABEL_FMT}(\.{DNS1123_LABEL_FMT})*"
#: anchored patterns for OpenAPI schemas (CRDs)
DNS1123_LABEL_PATTERN = f"^{DNS1123_LABEL_FMT}$"
DNS1123_SUBDOMAIN_PATTERN = f"^{DNS1123_SUBDOMAIN_FMT}$"

_LABEL = re.compile(DNS1123_LABEL_PATTERN)
_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_PATTERN)
_PATH_SEGMENT_MAY_NOT_BE = (".", "..")
_PATH_SEGMENT_MAY_NOT_CONTAIN = ("/", "%")


def dns1123_subdomain_errors(value: str) -> list[str]:
    """IsDNS1123Subdomain: what is wrong with `value` as an object name ([] when valid)."""
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _SUBDOMAIN.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        )
    return errors


def dns1123_label_errors(value: str) -> list[str]:
    """IsDNS1123Label: what is wrong with `value` as a namespace ([] when valid)."""
    errors = []
    if len(value) > DNS1123_LABEL_MAX:
        errors.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _LABEL.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name')"
        )
    return errors


def path_segment_errors(value: str) -> list[str]:
    """IsValidPathSegmentName: what the API server refuses as a name in a REST path."""
    if value in _PATH_SEGMENT_MAY_NOT_BE:
        return [f"may not be {value!r}"]
    return [f"may not contain {c!r}" for c in _PATH_SEGMENT_MAY_NOT_CONTAIN if c in value]


def is_object_name(value: object) -> bool:
    return isinstance(value, str) and not dns1123_subdomain_errors(value)


def is_namespace(value: object) -> bool:
    return isinstance(value, str) and not dns1123_label_errors(value)
