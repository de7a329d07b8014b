"""The evaluator: one scheduler for every KeptnMetric.

- A due-time heap (not a task per metric); the unit of work is a (namespace, name) key.
- At most one fetch in flight per metric; a bounded number per provider.
- Identical (provider, query, range, step) requests share one fetch (single flight) and a
  result younger than half the requesting metric's interval.
- Timeouts per fetch; exponential backoff with jitter after errors; the last good value is
  kept (with its age) while errors are reported in `errMsg`.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache

from metrics_server import selfmetrics
from metrics_server.excerpt import excerpt
from metrics_server.fetch import BackendPool, FetchOutcome, outcome_of, query_once
from metrics_server.model import KeptnMetric, KeptnMetricsProvider, ObjectKey, Secret
from metrics_server.state import IntervalResult, MetricState, MetricStates, format_value
from metrics_server.status_sink import StatusSink
from metrics_server.store.base import EventType, Store, StoreEvent
from providers import BackendError, QueryResult
from providers.egress import DEFAULT_POLICY, EgressPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatorOptions:
    fetch_timeout: float = 10.0
    provider_concurrency: int = 100
    max_backoff: float = 300.0
    backoff_jitter: float = 0.2
    share_fraction: float = 0.5  # a shared result serves metrics whose interval is >= age / fraction
    egress: EgressPolicy = DEFAULT_POLICY  # addresses providers may connect to


@dataclass(order=True)
class _Due:
    due: float
    seq: int
    key: ObjectKey = field(compare=False)


@dataclass
class _Entry:
    metric: KeptnMetric
    seq: int = 0
    running: bool = False
    failures: int = 0
    fresh: bool = False  # next fetch must not reuse a shared recent answer
    rephase: bool = False  # fetched at once on acquiring its shard: spread the next due time


FetchKey = tuple[ObjectKey, int, str, str, str]
_Fetched = tuple[QueryResult, float]  # a shared answer and when it arrived


def _spec_of(metric: KeptnMetric) -> tuple[object, ...]:
    return (metric.provider_name, metric.query, metric.fetch_interval_seconds, metric.range)


class Evaluator:
    def __init__(
        self,
        store: Store,
        states: MetricStates,
        *,
        sink: StatusSink | None = None,
        options: EvaluatorOptions | None = None,
        wall_clock: Callable[[], float] = time.time,
        lag_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.states = states
        self.sink = sink
        self.options = options or EvaluatorOptions()
        self.pool = BackendPool(store, timeout=self.options.fetch_timeout, egress=self.options.egress)
        self._wall = wall_clock
        self._lag_observer = lag_observer
        self._entries: dict[ObjectKey, _Entry] = {}
        self._heap: list[_Due] = []
        self._seq = 0
        self._active = False
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphores: dict[ObjectKey, asyncio.Semaphore] = {}
        self._inflight: dict[FetchKey, asyncio.Future[_Fetched]] = {}
        self._recent: TTLCache[FetchKey, _Fetched] = TTLCache(maxsize=100_000, ttl=3600)
        self._provider_generation: dict[ObjectKey, int] = {}
        #: which keys this replica fetches (sharded runtime: the shards whose Lease it holds)
        self.owns: Callable[[ObjectKey], bool] = lambda key: True
        self._running: dict[ObjectKey, asyncio.Task[None]] = {}
        store.subscribe(self._on_event)

    # -- control ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._active

    def activate(self, spread_seconds: float = 0.0) -> None:
        """Start fetching. A new leader spreads its first round so it does not stampede."""
        self._active = True
        now = self._now()
        for key, entry in self._entries.items():
            offset = 0.0
            if spread_seconds > 0:
                spread = min(spread_seconds, entry.metric.fetch_interval_seconds)
                offset = (zlib.crc32(str(key).encode()) % 10_000) / 10_000 * spread
            self._schedule(key, now + offset)
        self._wake.set()

    def deactivate(self) -> None:
        """Stop fetching at once (lost lease, shutdown): in-flight fetches are cancelled."""
        self._active = False
        for task in list(self._tasks):
            task.cancel()
        self._wake.set()

    def trigger(self, key: ObjectKey) -> bool:
        """Fetch a metric now instead of at its due time (False if unknown or already fetching)."""
        entry = self._entries.get(key)
        if entry is None or entry.running:
            return False
        entry.fresh = True
        self._schedule(key, self._now())
        return True

    def fetch_now(self, owned: Callable[[ObjectKey], bool]) -> int:
        """Schedule every matching key for now (a shard was just acquired); returns how many."""
        now, count = self._now(), 0
        for key, entry in self._entries.items():
            if owned(key) and not entry.running:
                entry.rephase = True
                self._schedule(key, now)
                count += 1
        return count

    def stop_fetching(self, lost: Callable[[ObjectKey], bool]) -> None:
        """Cancel in-flight fetches of matching keys (a shard was released or its Lease expired)."""
        for key, task in list(self._running.items()):
            if lost(key):
                task.cancel()

    async def close(self) -> None:
        self.deactivate()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.close()

    # -- store events ----------------------------------------------------------------------
    def load(self) -> None:
        """Take every metric currently in the store (called once after the store synced)."""
        for metric in self.store.list_metrics():
            self._upsert(metric)

    def _on_event(self, event: StoreEvent) -> None:
        obj = event.obj
        if isinstance(obj, KeptnMetric):
            if event.type is EventType.DELETED:
                self._entries.pop(obj.key, None)
                self.states.remove(obj.key)
            else:
                self._upsert(obj)
        elif isinstance(obj, KeptnMetricsProvider):
            self._provider_generation[obj.key] = self._provider_generation.get(obj.key, 0) + 1
            task = asyncio.get_running_loop().create_task(self.pool.invalidate(obj.key))
            self._track(task)
            if event.type is not EventType.DELETED:
                self._retry_failing(lambda m: m.provider_name == obj.meta.name)
        elif isinstance(obj, Secret):
            self._retry_failing(lambda m: True)

    def _upsert(self, metric: KeptnMetric) -> None:
        entry = self._entries.get(metric.key)
        if entry is None:
            self._entries[metric.key] = _Entry(metric)
            state = self.states.ensure(metric.key, metric.fetch_interval_seconds)
            state.labels = dict(metric.meta.labels)
            self._schedule(metric.key, self._now())
            return
        spec_changed = _spec_of(entry.metric) != _spec_of(metric)
        entry.metric = metric  # labels and status may change without touching the schedule
        state = self.states.ensure(metric.key, metric.fetch_interval_seconds)
        state.labels = dict(metric.meta.labels)
        if spec_changed:
            entry.failures = 0
            if entry.metric.range is None or not entry.metric.range.stored_results:
                state.interval_results.clear()
            self._schedule(metric.key, self._now())

    def _retry_failing(self, matches: Callable[[KeptnMetric], bool]) -> None:
        """After a provider or Secret appears or changes, retry failing metrics now, not after backoff."""
        now = self._now()
        for key, entry in self._entries.items():
            if entry.failures and matches(entry.metric) and not entry.running:
                self._schedule(key, now)

    # -- scheduling ------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _schedule(self, key: ObjectKey, due: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        self._seq += 1
        entry.seq = self._seq
        heapq.heappush(self._heap, _Due(due, self._seq, key))
        if self._heap[0].seq == self._seq:
            self._wake.set()

    async def run(self) -> None:
        """Dispatch due fetches until cancelled; idle (no busy loop) while inactive."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                if self._active:
                    self._dispatch_due(loop.time())
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if self._active and self._heap:
                    self._timer = loop.call_at(self._heap[0].due, self._wake.set)
                await self._wake.wait()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self.close()

    def _dispatch_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0].due <= now:
            item = heapq.heappop(heap)
            entry = self._entries.get(item.key)
            if entry is None or entry.seq != item.seq or entry.running or not self.owns(item.key):
                continue  # superseded, deleted, still fetching (it reschedules itself), or not ours
            entry.running = True
            task = asyncio.get_running_loop().create_task(self._evaluate(item.key, entry, item.due))
            self._track(task)
            self._running[item.key] = task
            task.add_done_callback(functools.partial(self._finished, item.key))

    def _finished(self, key: ObjectKey, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one evaluation --------------------------------------------------------------------
    async def _evaluate(self, key: ObjectKey, entry: _Entry, due: float) -> None:
        metric = entry.metric
        state = self.states.ensure(key, metric.fetch_interval_seconds)
        before = (state.value_text, state.error)
        ok = False
        try:
            fresh, entry.fresh = entry.fresh, False
            outcome = await self._fetch(metric, due, fresh=fresh, have=state.last_success)
            self._record_success(state, metric, outcome)
            ok = True
        except asyncio.CancelledError:
            entry.running = False
            raise
        except BackendError as exc:
            self._record_failure(state, metric, exc.message)
        except Exception as exc:  # a bug must not kill the scheduler; it becomes an errMsg
            log.exception("evaluating %s failed", key)
            self._record_failure(state, metric, f"internal error: {type(exc).__name__}")
        finally:
            state.last_attempt = self._wall()
        entry.running = False
        if self._entries.get(key) is not entry:
            return  # deleted while fetching
        entry.failures = 0 if ok else entry.failures + 1
        self.states.changed(state)
        changed = (state.value_text, state.error) != before
        if not ok and before[1] != state.error:
            log.warning("metric %s: %s", key, excerpt(state.error, 500))
        if self._active and self.owns(key):
            nxt = self._next_due(due, metric.fetch_interval_seconds, entry.failures)
            if entry.rephase and entry.failures == 0:
                # a shard fetched all at once would stay in one burst forever: give each key its
                # own stable phase in [0.5, 1.5) intervals from now (the average interval holds)
                entry.rephase = False
                offset = (zlib.crc32(str(key).encode()) % 10_000) / 10_000
                nxt = self._now() + metric.fetch_interval_seconds * (0.5 + offset)
            self._schedule(key, nxt)
        if self.sink is not None:
            try:
                await self.sink.publish(metric, state, changed)
            except Exception:
                log.exception("publishing status of %s failed", key)

    def _next_due(self, due: float, interval: float, failures: int) -> float:
        now = self._now()
        if failures == 0:
            nxt = due + interval
            return nxt if nxt > now else now + interval * 0.1 * random.random()
        delay = min(interval * 2 ** (failures - 1), max(self.options.max_backoff, interval))
        jitter = self.options.backoff_jitter
        return now + delay * random.uniform(1 - jitter, 1 + jitter)

    def _started(self, due: float, interval: float) -> None:
        """Record schedule lag when work really starts (after any queueing on the provider limit)."""
        lag = max(0.0, self._now() - due)
        if self._lag_observer is not None:
            self._lag_observer(lag)
        selfmetrics.observe_schedule_lag(lag, interval)

    async def _fetch(
        self, metric: KeptnMetric, due: float, *, fresh: bool = False, have: float | None = None
    ) -> FetchOutcome:
        """Query the provider, or share an identical query's answer that this metric has not seen yet."""
        provider = self.store.resolve_provider(metric)
        if provider is None:
            raise BackendError(
                f"KeptnMetricsProvider {metric.provider_name!r} not found in namespace "
                f"{metric.meta.namespace!r} or {self.store.server_namespace!r}"
            )
        client, config = await self.pool.get(provider)
        mrange = metric.range
        fkey: FetchKey = (
            provider.key,
            self._provider_generation.get(provider.key, 0),
            metric.query,
            mrange.interval if mrange else "",
            mrange.step or "" if mrange else "",
        )
        recent = self._recent.get(fkey)
        if (
            not fresh
            and recent is not None
            and recent[1] > (have or 0.0)  # never hand a metric its own previous answer again
            and self._wall() - recent[1] <= metric.fetch_interval_seconds * self.options.share_fraction
        ):
            self._started(due, metric.fetch_interval_seconds)
            return outcome_of(recent[0], recent[1], mrange)
        pending = self._inflight.get(fkey)
        if pending is not None:
            self._started(due, metric.fetch_interval_seconds)
            shared = await asyncio.shield(pending)
            return outcome_of(shared[0], shared[1], mrange)
        future: asyncio.Future[_Fetched] = asyncio.get_running_loop().create_future()
        self._inflight[fkey] = future
        started = time.perf_counter()
        try:
            semaphore = self._semaphores.get(provider.key)
            if semaphore is None:
                semaphore = self._semaphores[provider.key] = asyncio.Semaphore(
                    self.options.provider_concurrency
                )
            async with semaphore:
                self._started(due, metric.fetch_interval_seconds)
                try:
                    async with asyncio.timeout(self.options.fetch_timeout):
                        fetched = await query_once(client, config, metric.query, mrange)
                except TimeoutError:
                    raise BackendError(
                        f"fetch from provider {provider.key} timed out after {self.options.fetch_timeout:g}s",
                        retryable=True,
                    ) from None
        except BackendError as exc:
            selfmetrics.FETCH_ERRORS.labels(provider.type).inc()
            if exc.auth and provider.secret_key_ref is not None:
                self.store.invalidate_secret(ObjectKey(provider.meta.namespace, provider.secret_key_ref.name))
                await self.pool.invalidate(provider.key)
            future.set_exception(exc)  # query_once already redacted the provider's message
            future.exception()  # mark retrieved: nobody may be waiting
            raise
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else BackendError("fetch cancelled"))
            future.exception()
            raise
        finally:
            self._inflight.pop(fkey, None)
            selfmetrics.FETCH_DURATION.labels(provider.type).observe(time.perf_counter() - started)
        self._recent[fkey] = fetched
        future.set_result(fetched)
        return outcome_of(fetched[0], fetched[1], mrange)

    # -- state updates ---------------------------------------------------------------------
    def _record_success(self, state: MetricState, metric: KeptnMetric, outcome: FetchOutcome) -> None:
        state.value = outcome.value
        state.value_text = format_value(outcome.value)
        state.raw = outcome.raw
        state.last_success = outcome.fetched_at
        state.staleness_grace = 0.0  # our own fetch: no status-refresh lag to allow for
        state.error = ""
        self._append_interval_result(state, metric, state.value_text, "")

    def _record_failure(self, state: MetricState, metric: KeptnMetric, message: str) -> None:
        state.error = message
        self._append_interval_result(state, metric, "", message)

    def _append_interval_result(self, state: MetricState, metric: KeptnMetric, value: str, err: str) -> None:
        mrange = metric.range
        if mrange is None or mrange.stored_results <= 0:
            return
        rng: dict[str, str] = {"interval": mrange.interval}
        if mrange.step:
            rng["step"] = mrange.step
        if mrange.aggregation:
            rng["aggregation"] = mrange.aggregation
        state.interval_results.append(
            IntervalResult(value=value, range=rng, last_updated=self._wall(), err_msg=err)
        )
        while len(state.interval_results) > mrange.stored_results:
            state.interval_results.popleft()
