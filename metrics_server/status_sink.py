"""Where the evaluator sends a metric's new state (Kubernetes: the status subresource)."""

from __future__ import annotations

from typing import Protocol

from metrics_server.model import KeptnMetric
from metrics_server.state import MetricState


class StatusSink(Protocol):
    async def publish(self, metric: KeptnMetric, state: MetricState, changed: bool) -> None:
        """Record `state` for `metric`; `changed` = value or errMsg differs from the last publish."""
        ...
