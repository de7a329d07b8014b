"""Who may use whose objects: the tenancy model (docs/security.md, "Tenancy").

A namespace is a tenant. A consumer (a KeptnMetric, an Analysis, a KeptnEvaluation, a KEDA
ScaledObject) in namespace C may use

- a KeptnMetricsProvider (and so its Secret's credentials) of its own namespace C, or of the
  server's namespace (upstream's shared-provider fallback, kept), or of another namespace N
  only when that provider opts in: annotation `metrics.keptn.sh/allowed-namespaces` names C;
- a KeptnMetric's value of its own namespace, or of another namespace only when that
  KeptnMetric carries the same annotation naming C (KeptnEvaluations also read the server
  namespace's metrics: upstream's fallback, kept).

The annotation is a comma- or space-separated list of namespaces; `*` admits every namespace.
It is written by whoever may edit the provider or metric, i.e. the owner of namespace N:
nobody can grant themselves access to another tenant's credentials or values.
"""

from __future__ import annotations

from metrics_server.model import ObjectMeta

ALLOWED_NAMESPACES_ANNOTATION = "metrics.keptn.sh/allowed-namespaces"
ANY_NAMESPACE = "*"


def allowed_namespaces(meta: ObjectMeta) -> frozenset[str]:
    """The namespaces the object's owner opened it to (empty: only its own)."""
    raw = meta.annotations.get(ALLOWED_NAMESPACES_ANNOTATION, "")
    return frozenset(part for part in raw.replace(",", " ").split() if part)


def opted_in(meta: ObjectMeta, consumer_namespace: str) -> bool:
    allowed = allowed_namespaces(meta)
    return consumer_namespace in allowed or ANY_NAMESPACE in allowed


def may_use_provider(provider: ObjectMeta, consumer_namespace: str, server_namespace: str) -> bool:
    """May a consumer in `consumer_namespace` send queries with this provider's credentials?"""
    return (
        provider.namespace == consumer_namespace
        or provider.namespace == server_namespace
        or opted_in(provider, consumer_namespace)
    )


def may_read_metric(metric: ObjectMeta, consumer_namespace: str, server_namespace: str | None = None) -> bool:
    """May a consumer in `consumer_namespace` read this KeptnMetric's value?

    `server_namespace` is given where upstream falls back to the Keptn namespace's metrics
    (KeptnEvaluation objectives): those are shared by design, like its providers.
    """
    return (
        metric.namespace == consumer_namespace
        or (server_namespace is not None and metric.namespace == server_namespace)
        or opted_in(metric, consumer_namespace)
    )


def provider_denied_message(provider: ObjectMeta, consumer_namespace: str) -> str:
    return (
        f"KeptnMetricsProvider {provider.namespace}/{provider.name} may not be used from namespace "
        f"{consumer_namespace!r}: a provider serves its own namespace and, from the server namespace, "
        f"every namespace; others only if its annotation {ALLOWED_NAMESPACES_ANNOTATION} lists "
        f"{consumer_namespace!r}"
    )


def metric_denied_message(metric: ObjectMeta, consumer_namespace: str) -> str:
    return (
        f"KeptnMetric {metric.namespace}/{metric.name} may not be read from namespace "
        f"{consumer_namespace!r} (unless it exists and its annotation {ALLOWED_NAMESPACES_ANNOTATION} "
        "lists that namespace)"
    )
