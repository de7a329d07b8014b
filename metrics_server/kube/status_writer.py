"""StatusWriter: KeptnMetric.status through the status subresource, at a bounded rate.

- every write is a JSON merge patch (`application/merge-patch+json`) of `{"status": ...}`
  to `.../keptnmetrics/{name}/status`; fields we no longer have are sent as null so they
  are removed (merge patch semantics);
- a changed value or error (`changed=True`) is queued at once, ahead of refreshes; an
  unchanged one only refreshes `lastUpdated` when the last write is older than
  `refresh_interval` (default 60 s);
- one global token bucket (`qps`, `burst`) bounds every request this writer sends
  (status patches and Events); a metric waiting in the queue is written once, with the
  newest status published for it (coalescing: one pending write per metric);
- 404: the metric was deleted, drop it; 409 (should not happen: merge patches carry no
  resourceVersion): re-read and retry; 429, 5xx and network errors: retry later unless a
  newer status replaced it;
- Events: `Warning MetricFetchFailed` when a metric goes into error, `Normal
  MetricFetchRecovered` when it comes back (core v1 Events, shown by `kubectl describe`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metrics_server import selfmetrics
from metrics_server.kube.client import MERGE_PATCH, ApiException, KubeClient, resource_path
from metrics_server.kube.events import COMPONENT, Event, ObjectReference, default_instance, event_body
from metrics_server.model import METRICS_GROUP, KeptnMetric, ObjectKey
from metrics_server.state import MetricState, parse_rfc3339

log = logging.getLogger(__name__)

STATUS_FIELDS = (
    "value",
    "rawValue",
    "lastUpdated",
    "errMsg",
    "intervalResults",
    "valueFetchedAt",
    "fetchFailed",
)
FAILED_REASON = "MetricFetchFailed"
RECOVERED_REASON = "MetricFetchRecovered"


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = float(rate), float(burst)
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_acquire(self) -> bool:
        self._refill()
        if self.tokens >= 1 - 1e-9:  # tolerate float rounding of the refill
            self.tokens = max(0.0, self.tokens - 1)
            return True
        return False

    async def acquire(self) -> None:
        while not self.try_acquire():
            await self.sleep((1 - self.tokens) / self.rate)

    def refund(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (the sharded runtime splits one budget over the owners)."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._refill()
        self.rate = float(rate)


@dataclass
class _Pending:
    metric: KeptnMetric
    status: dict[str, Any]
    urgent: bool
    attempts: int = 0


@dataclass
class WriterStats:
    writes: int = 0
    conflicts: int = 0
    not_found: int = 0
    errors: int = 0
    coalesced: int = 0
    events: int = 0
    skipped_unchanged: int = 0


class StatusWriter:
    """A StatusSink that writes to the API server (only while `enabled`: the leader)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        refresh_interval: float = 60.0,
        qps: float = 20.0,
        burst: int = 40,
        workers: int = 4,
        api_version: str = "v1",
        events: bool = True,
        component: str = COMPONENT,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        retry_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.refresh_interval = refresh_interval
        self.bucket = TokenBucket(qps, burst)
        self.workers = max(1, workers)
        self.api_version = api_version
        self.events_enabled = events
        self.component = component
        self.instance = instance or default_instance()
        self.clock, self.wall_clock = clock, wall_clock
        self.retry_delay = retry_delay
        self.enabled = True
        self.stats = WriterStats()
        self._pending: dict[ObjectKey, _Pending] = {}
        self._urgent: collections.deque[ObjectKey] = collections.deque()
        self._refresh: collections.deque[ObjectKey] = collections.deque()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._last_written: dict[ObjectKey, float] = {}
        self._in_error: dict[ObjectKey, bool] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        selfmetrics.STATUS_WRITE_BUDGET.set(qps)
        selfmetrics.gauge_from(selfmetrics.STATUS_WRITE_QUEUE, self, lambda w: w.queued)

    # -- StatusSink ----------------------------------------------------------------------------
    async def publish(self, metric: KeptnMetric, state: MetricState, changed: bool) -> None:
        if not self.enabled:
            return
        key = metric.key
        self._track_transition(metric, state)
        if not changed and key not in self._pending and not self._refresh_due(metric):
            self.stats.skipped_unchanged += 1
            return
        status = dict(state.status())
        for f in STATUS_FIELDS:
            status.setdefault(f, None)  # merge patch: null removes what we no longer report
        entry = self._pending.get(key)
        if entry is not None:
            self.stats.coalesced += 1
            entry.metric, entry.status = metric, status
            if changed and not entry.urgent:
                entry.urgent = True
                self._urgent.append(key)  # the stale refresh slot is skipped when reached
            return
        self._pending[key] = _Pending(metric, status, urgent=changed)
        (self._urgent if changed else self._refresh).append(key)
        self._wake.set()

    def _refresh_due(self, metric: KeptnMetric) -> bool:
        key = metric.key
        last = self._last_written.get(key)
        if last is None:  # first sight (new leader): trust the lastUpdated already written
            written = parse_rfc3339(str((metric.status or {}).get("lastUpdated", "")))
            if written is None:
                return True
            last = self.clock() - max(0.0, self.wall_clock() - written)
            self._last_written[key] = last
        return self.clock() - last >= self.refresh_interval

    def _track_transition(self, metric: KeptnMetric, state: MetricState) -> None:
        if not self.events_enabled:
            return
        failing = bool(state.error)
        before = self._in_error.get(metric.key)
        if before is None:
            before = bool((metric.status or {}).get("errMsg"))
        self._in_error[metric.key] = failing
        if failing and not before:
            self._queue_event(metric, "Warning", FAILED_REASON, f"fetching the metric failed: {state.error}")
        elif before and not failing:
            self._queue_event(
                metric, "Normal", RECOVERED_REASON, f"fetching the metric works again: {state.value_text}"
            )

    def _queue_event(self, metric: KeptnMetric, etype: str, reason: str, message: str) -> None:
        involved = ObjectReference(
            api_version=f"{METRICS_GROUP}/{self.api_version}",
            kind="KeptnMetric",
            namespace=metric.meta.namespace,
            name=metric.meta.name,
            uid=metric.meta.uid,
            resource_version=metric.meta.resource_version,
        )
        self._events.append(
            event_body(
                involved,
                Event(etype, reason, message),
                now=self.wall_clock(),
                instance=self.instance,
                component=self.component,
            )
        )
        self._wake.set()

    # -- leadership ------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop writing at once (lost leadership): queued writes and events are dropped."""
        self.enabled = False
        self._pending.clear()
        self._urgent.clear()
        self._refresh.clear()
        self._events.clear()
        self._last_written.clear()
        self._in_error.clear()

    def resume(self) -> None:
        self.enabled = True

    def forget(self, key: ObjectKey) -> None:
        """The metric is gone: drop its queued write and bookkeeping."""
        self._pending.pop(key, None)
        self._last_written.pop(key, None)
        self._in_error.pop(key, None)

    @property
    def queued(self) -> int:
        return len(self._pending) + len(self._events)

    # -- workers -----------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"status writer {i}") for i in range(self.workers)
            ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Let in-flight requests finish (up to `drain_timeout`), drop the queue, stop workers."""
        self.enabled = False
        self._pending.clear()
        self._urgent.clear()
        self._refresh.clear()
        self._events.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        except TimeoutError:
            pass
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def flush(self, within: float = 10.0) -> None:
        """Wait until the queue is empty and nothing is in flight (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while self._pending or self._events or self._inflight:
            if loop.time() > end:
                raise TimeoutError(f"{self.queued} status writes still queued")
            await asyncio.sleep(0.01)

    def _next(self) -> tuple[str, Any] | None:
        if self._events:
            return "event", self._events.popleft()
        for dq in (self._urgent, self._refresh):
            while dq:
                key = dq.popleft()
                entry = self._pending.get(key)
                if entry is None:
                    continue
                if dq is self._refresh and entry.urgent:
                    continue  # promoted: its urgent slot will carry it
                del self._pending[key]
                return "status", entry
        return None

    def _has_work(self) -> bool:
        return bool(self._events or self._pending)

    async def _worker(self) -> None:
        while True:
            while not self._has_work():
                self._wake.clear()
                await self._wake.wait()
            await self.bucket.acquire()
            item = self._next()  # picked after the wait: the newest status goes out
            if item is None:
                self.bucket.refund()
                continue
            self._inflight += 1
            self._idle.clear()
            try:
                if item[0] == "event":
                    await self._send_event(item[1])
                else:
                    await self._write(item[1])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status writer failed")
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()

    def _path(self, metric: KeptnMetric, sub: str | None = "status") -> str:
        m = metric.meta
        return resource_path(METRICS_GROUP, self.api_version, "keptnmetrics", m.namespace, m.name, sub)

    async def _write(self, entry: _Pending) -> None:
        metric, key = entry.metric, entry.metric.key
        for _ in range(3):
            try:
                await self.client.request(
                    "PATCH",
                    self._path(metric),
                    body={"status": entry.status},
                    content_type=MERGE_PATCH,
                    request_timeout=15,
                )
                self.stats.writes += 1
                selfmetrics.STATUS_WRITE_REQUESTS.labels("status", "ok").inc()
                self._last_written[key] = self.clock()
                return
            except ApiException as exc:
                if exc.status == 404:
                    self.stats.not_found += 1
                    selfmetrics.STATUS_WRITE_REQUESTS.labels("status", "not_found").inc()
                    log.debug("KeptnMetric %s is gone; dropping its status", key)
                    self.forget(key)
                    return
                if exc.status == 409:  # merge patches carry no resourceVersion; handle anyway
                    self.stats.conflicts += 1
                    selfmetrics.STATUS_WRITE_REQUESTS.labels("status", "conflict").inc()
                    try:
                        await self.client.get(self._path(metric, None))
                    except ApiException as again:
                        if again.status == 404:
                            self.stats.not_found += 1
                            self.forget(key)
                            return
                    continue
                self._retry_later(entry, f"HTTP {exc.status} {exc.reason}")
                return
            except (OSError, TimeoutError) as exc:
                self._retry_later(entry, f"{type(exc).__name__}: {exc}")
                return
        self._retry_later(entry, "repeated conflicts")

    def _retry_later(self, entry: _Pending, why: str) -> None:
        self.stats.errors += 1
        selfmetrics.STATUS_WRITE_REQUESTS.labels("status", "error").inc()
        entry.attempts += 1
        delay = min(30.0, self.retry_delay * (2 ** min(entry.attempts, 5)))
        log.warning("writing status of %s failed (%s); retrying in %.1fs", entry.metric.key, why, delay)

        def requeue() -> None:
            key = entry.metric.key
            if not self.enabled or key in self._pending:  # a newer status is already waiting
                return
            self._pending[key] = entry
            (self._urgent if entry.urgent else self._refresh).append(key)
            self._wake.set()

        asyncio.get_running_loop().call_later(delay, requeue)

    async def _send_event(self, event: dict[str, Any]) -> None:
        ns = event["metadata"]["namespace"]
        try:
            await self.client.request(
                "POST", resource_path("", "v1", "events", ns), body=event, request_timeout=10
            )
            self.stats.events += 1
            selfmetrics.STATUS_WRITE_REQUESTS.labels("event", "ok").inc()
        except (ApiException, OSError, TimeoutError) as exc:
            selfmetrics.STATUS_WRITE_REQUESTS.labels("event", "error").inc()
            log.warning(
                "could not record Event %s for %s/%s: %s",
                event["reason"],
                ns,
                event["involvedObject"]["name"],
                exc,
            )
