"""What the API layer asks for metrics: one small interface, as custom-metrics-apiserver's
provider interface (GetMetricByName, GetMetricBySelector, ListAllMetrics) is for Kubernetes.

The API only parses paths and encodes answers; where KeptnMetrics and their values come from
is a `MetricsSource`. `LocalMetricsSource` answers from the watched store and this process's
`MetricStates`. In the sharded runtime (docs/scaling.md) the values of metrics owned by other
replicas are streamed into those same states, so one implementation serves both; a source that
forwards to the owner would implement the same four methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.state import MetricState, MetricStates
from metrics_server.store.base import Store

LabelMatcher = Callable[[Mapping[str, str]], bool]


class MetricsSource(Protocol):
    @property
    def synced(self) -> bool:
        """True once the source knows every KeptnMetric (readiness)."""
        ...

    def get_metric(self, key: ObjectKey) -> KeptnMetric | None:
        """One KeptnMetric by (namespace, name)."""
        ...

    def select(self, namespace: str | None = None, matches: LabelMatcher | None = None) -> list[KeptnMetric]:
        """The KeptnMetrics of `namespace` (None: every namespace) whose labels `matches`, sorted by key."""
        ...

    def names(self) -> list[str]:
        """Every KeptnMetric name, sorted and unique (discovery)."""
        ...

    def state(self, key: ObjectKey) -> MetricState | None:
        """The value and health of one KeptnMetric, or None if nothing is known yet."""
        ...


class LocalMetricsSource:
    """A MetricsSource over a Store and the MetricStates this process holds."""

    def __init__(self, store: Store, states: MetricStates) -> None:
        self.store = store
        self.states = states

    @property
    def synced(self) -> bool:
        return self.store.synced

    def get_metric(self, key: ObjectKey) -> KeptnMetric | None:
        return self.store.get_metric(key)

    def select(self, namespace: str | None = None, matches: LabelMatcher | None = None) -> list[KeptnMetric]:
        found = self.store.list_metrics(namespace)
        return sorted((m for m in found if matches is None or matches(m.meta.labels)), key=lambda m: m.key)

    def names(self) -> list[str]:
        return sorted({m.meta.name for m in self.store.list_metrics()})

    def state(self, key: ObjectKey) -> MetricState | None:
        return self.states.get(key)
