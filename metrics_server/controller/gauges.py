"""`keptn_analysis_result` and `keptn_objective_result`, with upstream's names and labels.

- keptn_analysis_result{name, namespace, from, to} = the achieved percentage (0-100)
- keptn_objective_result{name, namespace, analysis_name, analysis_namespace, key_objective,
  weight, from, to} = the objective's measured value (name/namespace: the template ref)

`from`/`to` are Go's time.Time.String() form, as upstream. Unlike upstream, the series of
an Analysis are removed when the Analysis is deleted (or re-run with another timeframe).
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from metrics_server.controller.analysis import go_time_string
from metrics_server.controller.scoring import AnalysisResult
from metrics_server.model import ObjectKey

ANALYSIS_LABELS = ("name", "namespace", "from", "to")
OBJECTIVE_LABELS = (
    "name",
    "namespace",
    "analysis_name",
    "analysis_namespace",
    "key_objective",
    "weight",
    "from",
    "to",
)


class AnalysisGauges:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.analysis = Gauge(
            "keptn_analysis_result", "Result of Analysis", ANALYSIS_LABELS, registry=registry
        )
        self.objective = Gauge(
            "keptn_objective_result", "Result of the Analysis Objective", OBJECTIVE_LABELS, registry=registry
        )
        self._series: dict[ObjectKey, tuple[tuple[str, ...], list[tuple[str, ...]]]] = {}
        self._lock = threading.Lock()

    def report(self, key: ObjectKey, start: float, end: float, result: AnalysisResult) -> None:
        f, t = go_time_string(start), go_time_string(end)
        with self._lock:
            self._remove_locked(key)
            alabels: tuple[str, ...] = (key.name, key.namespace, f, t)
            self.analysis.labels(*alabels).set(result.achieved_percentage)
            olabels: list[tuple[str, ...]] = []
            for r in result.objective_results:
                ref = r.objective.template_ref
                labels: tuple[str, ...] = (
                    ref.name,
                    ref.namespace,
                    key.name,
                    key.namespace,
                    "true" if r.objective.key_objective else "false",
                    str(r.objective.weight),
                    f,
                    t,
                )
                self.objective.labels(*labels).set(r.value if r.value is not None else 0.0)
                olabels.append(labels)
            self._series[key] = (alabels, olabels)

    def remove(self, key: ObjectKey) -> None:
        with self._lock:
            self._remove_locked(key)

    def _remove_locked(self, key: ObjectKey) -> None:
        series = self._series.pop(key, None)
        if series is None:
            return
        alabels, olabels = series
        try:
            self.analysis.remove(*alabels)
        except KeyError:
            pass
        for labels in olabels:
            try:
                self.objective.remove(*labels)
            except KeyError:
                pass


_default: AnalysisGauges | None = None
_default_lock = threading.Lock()


def default_gauges() -> AnalysisGauges:
    """The gauges in prometheus_client's default REGISTRY (created once per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = AnalysisGauges()
        return _default
