"""The in-cluster lifecycle controller: reconciles KeptnEvaluations and Analyses.

Runs on the leader only (`run_controller` until cancelled). It watches KeptnEvaluations
(lifecycle.keptn.sh/v1) and Analyses (metrics.keptn.sh/v1) with the shared informer,
reconciles on creation and spec changes (like upstream's GenerationChangedPredicate), and
re-queues with an injected clock, so tests advance time instead of sleeping.

KeptnEvaluation (upstream semantics): each attempt reads every objective's KeptnMetric
(the evaluator's cache on this leader, else the KeptnMetric status: value, lastUpdated,
errMsg), compares it with evaluationTarget, writes status.evaluationStatus, retryCount,
overallStatus (Progressing until Succeeded, or Failed once retryCount reaches
spec.retries), startTime, endTime, and retries after spec.retryInterval. An objective that
succeeded is not re-checked. A stale (older than staleness-factor x fetchIntervalSeconds)
or erroring metric never passes. An invalid definition fails at once with a Warning Event.

Analysis: values are fetched through the providers over the timeframe (a `recent`
timeframe is fixed at the first attempt and stored in status.timeframe), in parallel.
Values that arrived are kept in status.storedValues; missing ones are retried with
exponential backoff up to --analysis-max-retries (upstream retries forever), then the
Analysis completes with those objectives scored 0. On completion: state Completed, pass,
warning, raw (upstream's JSON), the keptn_analysis_result/keptn_objective_result gauges.

Each reconcile reads, asks `decisions.py` what to do (pure functions, tested as tables) and
carries the Decision out: the core v1 Events (bodies from `kube/events.py`), then the status
as a JSON merge patch to the status subresource, then the requeue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from metrics_server.controller import decisions
from metrics_server.controller.analysis import collect_values, values_from_status
from metrics_server.controller.decisions import Decision
from metrics_server.controller.evaluation import (
    MetricReading,
    metric_candidates,
    not_found_message,
    reading_from_state,
    reading_from_status,
)
from metrics_server.controller.flags import ControllerOptions
from metrics_server.controller.gauges import AnalysisGauges, default_gauges
from metrics_server.controller.model import (
    Analysis,
    AnalysisDefinition,
    AnalysisValueTemplate,
    KeptnEvaluationDefinition,
    parse_value_template,
)
from metrics_server.controller.scoring import ObjectiveValue
from metrics_server.fetch import BackendPool
from metrics_server.kube.client import ApiException, KubeClient, KubeObject, resource_path
from metrics_server.kube.events import Event, ObjectReference, default_instance, event_body
from metrics_server.kube.informer import Informer
from metrics_server.model import ObjectKey, ValidationError
from metrics_server.state import MetricStates, parse_rfc3339
from metrics_server.store.base import Store
from metrics_server.tenancy import may_read_metric, metric_denied_message

log = logging.getLogger(__name__)

LIFECYCLE = ("lifecycle.keptn.sh", "v1")
METRICS = ("metrics.keptn.sh", "v1")
EVALUATION, ANALYSIS = "KeptnEvaluation", "Analysis"


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def run_controller(
    api_client: Any,
    store: Store,
    states: MetricStates | None,
    options: ControllerOptions,
    *,
    clock: Clock | None = None,
    gauges: AnalysisGauges | None = None,
    namespaces: list[str] | None = None,
) -> None:
    """Reconcile KeptnEvaluations and Analyses until cancelled (call it on the leader only).

    `api_client` is our KubeClient or a kubernetes-asyncio ApiClient (not closed here)."""
    if not options.enabled:
        log.info("lifecycle controller disabled")
        await asyncio.Event().wait()
    client = api_client if isinstance(api_client, KubeClient) else KubeClient(api_client)
    controller = LifecycleController(client, store, states, options, clock or RealClock(), gauges, namespaces)
    await controller.run()


@dataclass(frozen=True)
class _Item:
    kind: str
    key: ObjectKey


class _WorkQueue:
    """Deduplicating queue: a key is processed by one worker at a time; a key queued while it
    is being processed is processed again afterwards."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._queued: set[_Item] = set()
        self._active: set[_Item] = set()
        self._dirty: set[_Item] = set()

    def add(self, item: _Item) -> None:
        if item in self._active:
            self._dirty.add(item)
        elif item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    async def get(self) -> _Item:
        item = await self._queue.get()
        self._queued.discard(item)
        self._active.add(item)
        return item

    def done(self, item: _Item) -> None:
        self._active.discard(item)
        if item in self._dirty:
            self._dirty.discard(item)
            self.add(item)


class LifecycleController:
    def __init__(
        self,
        client: KubeClient,
        store: Store,
        states: MetricStates | None,
        options: ControllerOptions,
        clock: Clock,
        gauges: AnalysisGauges | None = None,
        namespaces: list[str] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.states = states
        self.options = options
        self.clock = clock
        self.gauges = gauges or default_gauges()
        self.namespaces = [n for n in (namespaces or []) if n] or None
        self.queue = _WorkQueue()
        self.cache: dict[str, dict[ObjectKey, KubeObject]] = {EVALUATION: {}, ANALYSIS: {}}
        self._generations: dict[_Item, tuple[str, int]] = {}
        self._timers: dict[_Item, asyncio.Task[None]] = {}
        self._analysis_attempts: dict[tuple[ObjectKey, str], int] = {}
        self.pool = BackendPool(store, timeout=options.fetch_timeout, egress=options.egress)
        self.instance = default_instance()
        self.reconciles = 0  # observability and tests

    # -- plumbing ----------------------------------------------------------------------------
    async def run(self) -> None:
        informers = []
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for kind, (group, version), plural in (
            (EVALUATION, LIFECYCLE, "keptnevaluations"),
            (ANALYSIS, METRICS, "analyses"),
        ):
            for ns in scopes:
                informers.append(
                    Informer(
                        self.client,
                        resource_path(group, version, plural, ns),
                        self._on_list(kind, ns),
                        self._on_event(kind),
                        name=f"{plural} in {ns or 'all namespaces'} (lifecycle controller)",
                    )
                )
        tasks = [inf.start() for inf in informers]
        workers = [
            asyncio.create_task(self._worker(), name=f"lifecycle worker {i}")
            for i in range(self.options.workers)
        ]
        try:
            await asyncio.gather(*tasks, *workers)
        finally:
            for inf in informers:
                await inf.stop()
            for task in [*workers, *self._timers.values()]:
                task.cancel()
            for task in [*workers, *self._timers.values()]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.pool.close()

    def _on_list(self, kind: str, ns: str | None) -> Callable[[list[KubeObject]], None]:
        def handle(items: list[KubeObject]) -> None:
            fresh = {}
            for item in items:
                key = _key_of(item)
                if key is not None:
                    fresh[key] = item
            for key in [k for k in self.cache[kind] if ns is None or k.namespace == ns]:
                if key not in fresh:
                    self._forget(kind, key)
            for key, item in fresh.items():
                self._observe(kind, key, item)

        return handle

    def _on_event(self, kind: str) -> Callable[[str, KubeObject], None]:
        def handle(etype: str, obj: KubeObject) -> None:
            key = _key_of(obj)
            if key is None:
                return
            if etype == "DELETED":
                self._forget(kind, key)
            else:
                self._observe(kind, key, obj)

        return handle

    def _observe(self, kind: str, key: ObjectKey, obj: KubeObject) -> None:
        self.cache[kind][key] = obj
        md = obj.get("metadata") or {}
        ident = (str(md.get("uid") or ""), int(md.get("generation") or 0))
        item = _Item(kind, key)
        if self._generations.get(item) != ident:  # new object or spec change; status writes are ignored
            self._generations[item] = ident
            self._cancel_timer(item)
            self.queue.add(item)

    def _forget(self, kind: str, key: ObjectKey) -> None:
        self.cache[kind].pop(key, None)
        item = _Item(kind, key)
        self._generations.pop(item, None)
        self._cancel_timer(item)
        if kind == ANALYSIS:
            self.gauges.remove(key)
            for k in [k for k in self._analysis_attempts if k[0] == key]:
                del self._analysis_attempts[k]

    def _cancel_timer(self, item: _Item) -> None:
        timer = self._timers.pop(item, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def requeue_after(self, item: _Item, seconds: float) -> None:
        self._cancel_timer(item)

        async def later() -> None:
            await self.clock.sleep(seconds)
            if self._timers.get(item) is asyncio.current_task():
                del self._timers[item]
            self.queue.add(item)

        self._timers[item] = asyncio.create_task(later(), name=f"requeue {item.kind} {item.key}")

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                self.reconciles += 1
                if item.kind == EVALUATION:
                    await self.reconcile_evaluation(item)
                else:
                    await self.reconcile_analysis(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s %s failed; retrying in 10s", item.kind, item.key)
                self.requeue_after(item, self.options.definition_retry_interval)
            finally:
                self.queue.done(item)

    # -- API helpers -------------------------------------------------------------------------
    async def _get(self, group: str, plural: str, key: ObjectKey) -> KubeObject | None:
        try:
            return await self.client.get(resource_path(group, "v1", plural, key.namespace, key.name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _patch_status(self, kind: str, key: ObjectKey, status: KubeObject) -> None:
        group, plural = (LIFECYCLE[0], "keptnevaluations") if kind == EVALUATION else (METRICS[0], "analyses")
        path = resource_path(group, "v1", plural, key.namespace, key.name, "status")
        try:
            updated = await self.client.merge_patch(path, {"status": status})
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile
                return
            raise
        if updated and key in self.cache[kind]:
            self.cache[kind][key] = updated

    async def event(self, obj: KubeObject, kind: str, event: Event) -> None:
        involved = ObjectReference.of(obj, kind)
        body = event_body(involved, event, now=self.clock.now(), instance=self.instance)
        try:
            await self.client.create_object(resource_path("", "v1", "events", involved.namespace), body)
        except Exception as exc:  # events are best effort
            log.warning(
                "could not record event %s for %s %s/%s: %s",
                event.reason,
                kind,
                involved.namespace,
                involved.name,
                exc,
            )

    async def _apply(
        self, item: _Item, doc: KubeObject, decision: Decision, written: Callable[[], None] | None = None
    ) -> None:
        """Carry a decision out: the Events, the status patch, then `written`, the requeue.

        Events go first so that whoever sees the new status (a pipeline, `kubectl wait`) also
        finds the Events that explain it."""
        for event in decision.events:
            await self.event(doc, item.kind, event)
        if decision.status is not None:
            await self._patch_status(item.kind, item.key, decision.status)
        if written is not None:
            written()
        if decision.requeue_after is not None:
            self.requeue_after(item, decision.requeue_after)

    # -- KeptnEvaluation ---------------------------------------------------------------------
    def _reading(self, definition: KeptnEvaluationDefinition, index: int) -> MetricReading:
        objective = definition.objectives[index]
        factor = self.options.staleness_factor
        now = self.clock.now()
        for mkey in metric_candidates(objective, definition.meta.namespace, self.store.server_namespace):
            metric = self.store.get_metric(mkey)
            if metric is None:
                continue
            if not may_read_metric(metric.meta, definition.meta.namespace, self.store.server_namespace):
                return MetricReading(None, "", metric_denied_message(metric.meta, definition.meta.namespace))
            state = self.states.get(mkey) if self.states is not None else None
            if state is not None and state.last_attempt is not None:
                return reading_from_state(state, now, factor)
            return reading_from_status(metric, now, factor)
        return MetricReading(None, "", not_found_message(objective))

    async def reconcile_evaluation(self, item: _Item) -> None:
        doc = self.cache[EVALUATION].get(item.key)
        if doc is None:
            return
        step = decisions.triage_evaluation(doc, item.key.namespace, self.clock.now())
        if isinstance(step, Decision):
            await self._apply(item, doc, step)
            return
        raw_definition = await self._get(LIFECYCLE[0], "keptnevaluationdefinitions", step.definition_key)
        if raw_definition is None:
            log.info(
                "KeptnEvaluationDefinition %s of KeptnEvaluation %s not found; retrying",
                step.definition_key,
                item.key,
            )
        decision = decisions.decide_evaluation(
            step, raw_definition, self._readings, self.clock.now(), self.options.definition_retry_interval
        )
        await self._apply(item, doc, decision)

    def _readings(self, definition: KeptnEvaluationDefinition) -> dict[int, MetricReading]:
        return {i: self._reading(definition, i) for i in range(len(definition.objectives))}

    # -- Analysis ----------------------------------------------------------------------------
    async def reconcile_analysis(self, item: _Item) -> None:
        doc = self.cache[ANALYSIS].get(item.key)
        if doc is None:
            return
        analysis = decisions.triage_analysis(doc, item.key.namespace)
        if isinstance(analysis, Decision):
            await self._apply(item, doc, analysis)
            return
        dkey = analysis.definition_key
        raw_definition = await self._get(METRICS[0], "analysisdefinitions", dkey)
        if raw_definition is None:
            log.info("AnalysisDefinition %s of Analysis %s not found; retrying", dkey, item.key)
        definition = decisions.analysis_definition(
            analysis, raw_definition, self.clock.now(), self.options.definition_retry_interval
        )
        if isinstance(definition, Decision):
            await self._apply(item, doc, definition)
            return
        timeframe = decisions.analysis_timeframe(analysis, self.clock.now())
        start = parse_rfc3339(timeframe["from"]) or 0.0
        end = parse_rfc3339(timeframe["to"]) or 0.0
        values = await self._collect(analysis, definition, start, end)
        attempt_key = (item.key, analysis.meta.uid)
        attempt = self._analysis_attempts.get(attempt_key, 0) + 1
        self._analysis_attempts[attempt_key] = attempt
        decision = decisions.decide_analysis(definition, values, timeframe, attempt, self.options)

        def completed() -> None:
            if decision.result is not None:
                self._analysis_attempts.pop(attempt_key, None)
                self.gauges.report(item.key, start, end, decision.result)

        await self._apply(item, doc, decision, completed)

    async def _collect(
        self, analysis: Analysis, definition: AnalysisDefinition, start: float, end: float
    ) -> dict[str, ObjectiveValue]:
        return await collect_values(
            analysis,
            definition,
            templates=(await self._templates(definition)).get,
            providers=self.store.get_provider,
            pool=self.pool,
            start=start,
            end=end,
            now=self.clock.now(),
            server_namespace=self.store.server_namespace,
            done=values_from_status(analysis.status),
        )

    async def _templates(self, definition: AnalysisDefinition) -> dict[ObjectKey, AnalysisValueTemplate]:
        out: dict[ObjectKey, AnalysisValueTemplate] = {}
        for objective in definition.objectives:
            tkey = objective.template_ref.key(definition.meta.namespace)
            if tkey in out:
                continue
            raw = await self._get(METRICS[0], "analysisvaluetemplates", tkey)
            if raw is None:
                continue
            try:
                out[tkey] = parse_value_template(raw, tkey.namespace)
            except ValidationError as exc:
                log.warning("%s", exc)
        return out


def _key_of(obj: Mapping[str, Any]) -> ObjectKey | None:
    md = obj.get("metadata") or {}
    name, ns = md.get("name"), md.get("namespace")
    if not name or not ns:
        return None
    return ObjectKey(str(ns), str(name))


__all__ = ["Clock", "LifecycleController", "RealClock", "run_controller"]
