"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

- campaign: every `retry_period` (with jitter) read the Lease; take it when it is free
  (empty holder) or when its record has not changed for `lease_duration` by *our* clock
  (we time how long we observe the same record, not the writer's renewTime, so clock skew
  between nodes does not matter); writes are optimistic (PUT with resourceVersion, 409 =
  someone else won);
- lead: renew every `retry_period`; if no renewal succeeded for `renew_deadline`, or the
  Lease shows another holder, stop leading at once (`on_stopped_leading`) and campaign again;
- release on shutdown: holderIdentity "" and leaseDurationSeconds 1 (client-go's
  ReleaseOnCancel), so a standby takes over within a retry period instead of a lease duration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable

from metrics_server import selfmetrics
from metrics_server.kube.client import ApiException, KubeClient, KubeObject, resource_path

log = logging.getLogger(__name__)

Callback = Callable[[], None]


def micro_time(ts: float) -> str:
    """metav1.MicroTime wire form."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str = "keptn-metrics-leader",
        *,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.clock, self.wall_clock = clock, wall_clock
        self.leading = False
        self.observed_holder = ""
        self._observed_record: KubeObject | None = None
        self._observed_time = 0.0
        self._lease: KubeObject | None = None  # last Lease object we read or wrote
        self._task: asyncio.Task[None] | None = None
        self.transitions = 0

    @property
    def path(self) -> str:
        return resource_path("coordination.k8s.io", "v1", "leases", self.namespace, self.name)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            selfmetrics.report_lease_held(self.name, False)  # campaigning
            self._task = asyncio.create_task(self.run(), name=f"leader election {self.name}")
        return self._task

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; if leading, release the Lease (unless `release` is False)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.leading:
            self._stop_leading()
            if release:
                await self.release()
        selfmetrics.report_lease_held(self.name, None)  # no longer campaigning

    async def run(self) -> None:
        """Campaign, lead until the Lease is lost, campaign again; forever (cancel to stop)."""
        while True:
            await self._acquire()
            self._start_leading()
            await self._renew_until_lost()
            self._stop_leading()

    # -- callbacks -----------------------------------------------------------------------------
    def _start_leading(self) -> None:
        self.leading = True
        selfmetrics.report_lease_held(self.name, True)
        log.info("%s: started leading (Lease %s/%s)", self.identity, self.namespace, self.name)
        if self.on_started_leading:
            self.on_started_leading()

    def _stop_leading(self) -> None:
        if not self.leading:
            return
        self.leading = False
        selfmetrics.report_lease_held(self.name, False)
        log.info("%s: stopped leading (Lease %s/%s)", self.identity, self.namespace, self.name)
        if self.on_stopped_leading:
            self.on_stopped_leading()

    # -- campaign / renew ------------------------------------------------------------------------
    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            await asyncio.sleep(
                self.retry_period * (1 + random.uniform(0, 1.2))
            )  # client-go JitterFactor 1.2

    async def _renew_until_lost(self) -> None:
        last_renew = self.clock()
        while True:
            await asyncio.sleep(self.retry_period)
            remaining = self.renew_deadline - (self.clock() - last_renew)
            ok = False
            if remaining > 0:
                try:
                    ok = await asyncio.wait_for(self._try_acquire_or_renew(), remaining)
                except TimeoutError:
                    ok = False
            if ok:
                last_renew = self.clock()
                continue
            if self.observed_holder and self.observed_holder != self.identity:
                log.warning("%s: Lease taken by %s", self.identity, self.observed_holder)
                return
            if self.clock() - last_renew >= self.renew_deadline:
                log.warning("%s: could not renew the Lease within %.1fs", self.identity, self.renew_deadline)
                return

    def _observe(self, spec: KubeObject) -> None:
        record = {
            k: spec.get(k)
            for k in (
                "holderIdentity",
                "leaseDurationSeconds",
                "renewTime",
                "acquireTime",
                "leaseTransitions",
            )
        }
        if record != self._observed_record:
            self._observed_record = record
            self._observed_time = self.clock()
            holder = str(spec.get("holderIdentity") or "")
            if holder != self.observed_holder:
                self.observed_holder = holder
                if holder and self.on_new_leader:
                    self.on_new_leader(holder)

    async def _try_acquire_or_renew(self) -> bool:
        now_wall = self.wall_clock()
        stamp = micro_time(now_wall)
        try:
            lease = await self.client.get(self.path)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("%s: reading Lease failed: %s %s", self.identity, exc.status, exc.reason)
                return False
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": max(1, round(self.lease_duration)),
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = await self.client.create_object(
                    resource_path("coordination.k8s.io", "v1", "leases", self.namespace), body
                )
            except ApiException as exc2:
                log.debug("%s: creating Lease failed: %s", self.identity, exc2.status)
                return False
            except (OSError, TimeoutError):
                return False
            self._lease = created
            self._observe(created.get("spec") or {})
            return True
        except (OSError, TimeoutError) as exc:
            log.warning("%s: reading Lease failed: %s", self.identity, exc)
            return False
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_time + duration > self.clock():
            return False  # held by someone else and not expired
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration)),
            renewTime=stamp,
        )
        if holder != self.identity:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": new_spec}
        try:
            updated = await self.client.replace(self.path, body)  # carries metadata.resourceVersion
        except ApiException as exc:
            if exc.status != 409:
                log.warning("%s: updating Lease failed: %s %s", self.identity, exc.status, exc.reason)
            return False
        except (OSError, TimeoutError):
            return False
        self._lease = updated
        self._observe(updated.get("spec") or {})
        if holder != self.identity:
            self.transitions += 1
        return True

    async def release(self) -> bool:
        """Give the Lease up (holder "", duration 1 s) if we still hold it."""
        try:
            lease = await self.client.get(self.path)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("%s: could not read Lease to release it: %s", self.identity, exc)
            return False
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return False
        stamp = micro_time(self.wall_clock())
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=stamp, acquireTime=stamp)
        try:
            await self.client.replace(self.path, {**lease, "spec": spec})
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("%s: releasing Lease failed: %s", self.identity, exc)
            return False
        log.info("%s: released Lease %s/%s", self.identity, self.namespace, self.name)
        return True
