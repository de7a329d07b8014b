"""Every `KeptnMetricsProvider.spec.type` we accept, in one table.

The model's validation, the CLI's `--provider-type` choices, the CRD enum
(`deploy/crdgen.py`) and `create_backend` all read this table, so adding a backend is one
module exposing `create(config) -> Backend` plus one line here. This module imports no
backend: a server with only Prometheus providers never loads boto3.
"""

from __future__ import annotations

from dataclasses import dataclass

# Stands in `secret_keys` for "the Secret key named by spec.secretKeyRef.key".
SECRET_KEY_REF = "<secretKeyRef.key>"
# Optional keys every aiohttp-based backend reads (see providers/httpclient.py).
HTTP_TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")


@dataclass(frozen=True)
class BackendType:
    """One accepted provider type and where its implementation lives."""

    name: str
    module: str  # imported on first use; exposes `create(config) -> Backend`
    upstream: bool  # also a type in upstream Keptn's CRD (else an addition of ours)
    secret_keys: tuple[str, ...]  # the Secret keys it may read, for docs and `--help`
    extra: str | None = None  # the pip extra carrying its SDK, when it needs one


_PROMETHEUS_KEYS = ("user", "password", "token", "tenant", "X-Scope-OrgID", *HTTP_TLS_KEYS)

BACKENDS: tuple[BackendType, ...] = (
    BackendType("prometheus", "providers.prometheus", True, _PROMETHEUS_KEYS),
    BackendType("thanos", "providers.prometheus", True, _PROMETHEUS_KEYS),
    BackendType("cortex", "providers.prometheus", True, _PROMETHEUS_KEYS),
    BackendType("dynatrace", "providers.dynatrace", True, (SECRET_KEY_REF, *HTTP_TLS_KEYS)),
    BackendType("dql", "providers.dql", True, (SECRET_KEY_REF, *HTTP_TLS_KEYS)),
    BackendType(
        "datadog", "providers.datadog", True, ("DD_CLIENT_API_KEY", "DD_CLIENT_APP_KEY", *HTTP_TLS_KEYS)
    ),
    BackendType(
        "elastic", "providers.elastic", True, (SECRET_KEY_REF, "user", "username", "password", *HTTP_TLS_KEYS)
    ),
    BackendType(
        "cloudwatch",
        "providers.cloudwatch",
        False,
        (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "ca.crt",
        ),
        extra="aws",
    ),
    BackendType("google", "providers.google", False, (SECRET_KEY_REF, "ca.crt"), extra="gcp"),
    BackendType(
        "azure",
        "providers.azure",
        False,
        ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST", "ca.crt"),
        extra="azure",
    ),
    BackendType(
        "http",
        "providers.http_json",
        False,
        ("user", "username", "password", "token", SECRET_KEY_REF, "header.<Name>", *HTTP_TLS_KEYS),
    ),
    BackendType("openmetrics", "providers.openmetrics", False, ("token", *HTTP_TLS_KEYS)),
)

BY_NAME: dict[str, BackendType] = {b.name: b for b in BACKENDS}
UPSTREAM_TYPES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.upstream)
OUR_TYPES: tuple[str, ...] = tuple(b.name for b in BACKENDS if not b.upstream)
# Upstream's types first, then ours: the order of the CRD enum and of error messages.
TYPE_NAMES: tuple[str, ...] = UPSTREAM_TYPES + OUR_TYPES

__all__ = [
    "BACKENDS",
    "BY_NAME",
    "HTTP_TLS_KEYS",
    "OUR_TYPES",
    "SECRET_KEY_REF",
    "TYPE_NAMES",
    "UPSTREAM_TYPES",
    "BackendType",
]
