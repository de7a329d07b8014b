"""Shard ownership over coordination.k8s.io/v1 Leases: one Lease per shard, one per replica.

docs/scaling.md is the design. Every `retry_period` one tick:

1. LIST the Leases of this installation (label `metrics.keptn.sh/lease-group=<prefix>`);
2. renew this replica's member Lease (create it the first time);
3. compute the live set (member Leases whose record changed within `lease_duration` by *our*
   clock, as client-go times leases, so clock skew between nodes does not matter) and the fair
   placement (`metrics_server.sharding.assign`);
4. per shard: renew it if we hold it and it is ours, release it if we hold it and it is not
   (stop fetching first), acquire it if it is ours and free or expired.

Fencing: a shard counts as owned only until `start of its last successful renewal +
renew_deadline`; nobody else may take it before observing that renewal unchanged for
`lease_duration` (> renew_deadline), so two replicas never fetch one shard at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metrics_server.kube.client import ApiException, KubeClient, KubeObject, resource_path
from metrics_server.kube.leader import default_identity, micro_time
from metrics_server.selfmetrics import report_lease_held
from metrics_server.sharding import assign

log = logging.getLogger(__name__)

GROUP_LABEL = "metrics.keptn.sh/lease-group"
ROLE_LABEL = "metrics.keptn.sh/lease"
ADDRESS_ANNOTATION = "metrics.keptn.sh/peer-address"
ShardCallback = Callable[[int], None]


@dataclass
class _Seen:
    record: tuple[Any, ...]
    since: float  # our clock when this record was first observed


@dataclass(frozen=True)
class Member:
    identity: str
    address: str  # host:port of its peer endpoint ("" if it has none)


class ShardManager:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        shards: int,
        *,
        prefix: str = "keptn-metrics",
        identity: str | None = None,
        peer_address: str = "",
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_acquired: ShardCallback | None = None,
        on_lost: ShardCallback | None = None,
        on_members: Callable[[dict[str, Member]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if shards < 1:
            raise ValueError("need at least one shard")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client, self.namespace, self.shards, self.prefix = client, namespace, shards, prefix
        self.identity = identity or default_identity()
        self.peer_address = peer_address
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self.on_acquired, self.on_lost, self.on_members = on_acquired, on_lost, on_members
        self.clock, self.wall_clock = clock, wall_clock
        #: shard -> our clock at the start of its last successful renewal (fencing)
        self._owned: dict[int, float] = {}
        self._seen: dict[str, _Seen] = {}
        self.members: dict[str, Member] = {}
        self.placement: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._fence_timers: dict[int, asyncio.TimerHandle] = {}
        #: set after the first tick that saw the Leases (members and placement are known)
        self.observed = asyncio.Event()

    # -- names -----------------------------------------------------------------------------------
    def shard_lease(self, shard: int) -> str:
        return f"{self.prefix}-shard-{shard}"

    @property
    def member_lease(self) -> str:
        return f"{self.prefix}-member-{hashlib.sha256(self.identity.encode()).hexdigest()[:12]}"

    def _path(self, name: str | None = None) -> str:
        return resource_path("coordination.k8s.io", "v1", "leases", self.namespace, name)

    # -- ownership -------------------------------------------------------------------------------
    def owns(self, shard: int) -> bool:
        """True while we hold the shard's Lease and its renew deadline has not passed."""
        renewed = self._owned.get(shard)
        return renewed is not None and self.clock() - renewed < self.renew_deadline

    @property
    def owned(self) -> list[int]:
        return sorted(s for s in self._owned if self.owns(s))

    def _gain(self, shard: int, renewed: float) -> None:
        new = shard not in self._owned
        self._owned[shard] = renewed
        timer = self._fence_timers.pop(shard, None)
        if timer is not None:
            timer.cancel()
        delay = max(0.0, renewed + self.renew_deadline - self.clock())
        self._fence_timers[shard] = asyncio.get_running_loop().call_later(delay, self._fence)
        if new:
            report_lease_held(self.shard_lease(shard), True)
            log.info("%s: owns shard %d", self.identity, shard)
            if self.on_acquired:
                self.on_acquired(shard)

    def _lose(self, shard: int, why: str) -> None:
        if self._owned.pop(shard, None) is None:
            return
        timer = self._fence_timers.pop(shard, None)
        if timer is not None:
            timer.cancel()
        report_lease_held(self.shard_lease(shard), False)
        log.info("%s: gave up shard %d (%s)", self.identity, shard, why)
        if self.on_lost:
            self.on_lost(shard)

    def _fence(self) -> None:
        """Drop every shard whose renew deadline passed: nobody may fetch it twice."""
        for shard in [s for s in self._owned if not self.owns(s)]:
            self._lose(shard, f"not renewed within {self.renew_deadline:g}s")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            # every replica reports every shard (held or not), so an unowned shard is one that all
            # replicas report False for: the KeptnMetricsNoLeader alert (docs/operations.md)
            for shard in range(self.shards):
                report_lease_held(self.shard_lease(shard), shard in self._owned)
            self._task = asyncio.create_task(self.run(), name=f"shard leases {self.prefix}")
        return self._task

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.renew_deadline):  # not wait_for: 3.11's can swallow a cancel
                    await self.tick()
            except TimeoutError:
                log.warning("%s: shard Lease tick timed out", self.identity)
            except Exception:  # a bug or an odd answer must not end ownership handling
                log.exception("%s: shard Lease tick failed", self.identity)
            self._fence()
            await asyncio.sleep(self.retry_period)

    async def stop(self, release: bool = True) -> None:
        """Stop ticking; stop fetching every shard; release the Leases so others take over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = list(self._owned)
        for shard in held:
            self._lose(shard, "shutting down")
        for shard in range(self.shards):
            report_lease_held(self.shard_lease(shard), None)  # no longer campaigning: the series go
        if release:
            names = [self.shard_lease(s) for s in held] + [self.member_lease]
            await asyncio.gather(*(self._release(n) for n in names), return_exceptions=True)

    # -- one tick --------------------------------------------------------------------------------
    def _expired(self, name: str, spec: KubeObject) -> bool:
        if not spec.get("holderIdentity"):
            return True
        seen = self._seen.get(name)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        return seen is not None and self.clock() - seen.since >= duration

    def _observe(self, lease: KubeObject) -> None:
        name = str((lease.get("metadata") or {}).get("name") or "")
        spec = lease.get("spec") or {}
        record = tuple(
            spec.get(k) for k in ("holderIdentity", "leaseDurationSeconds", "renewTime", "acquireTime")
        )
        seen = self._seen.get(name)
        if seen is None or seen.record != record:
            self._seen[name] = _Seen(record, self.clock())

    async def tick(self) -> None:
        started = self.clock()
        try:
            listed = await self.client.list(self._path(), labelSelector=f"{GROUP_LABEL}={self.prefix}")
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("%s: listing shard Leases failed: %s", self.identity, exc)
            return
        leases = {str(item["metadata"]["name"]): item for item in listed.get("items") or []}
        for lease in leases.values():
            self._observe(lease)
        for name in [n for n in self._seen if n not in leases]:
            del self._seen[name]
        await self._renew_member(leases.get(self.member_lease))
        self._update_members(leases)
        self.placement = assign(self.shards, self.members)
        await asyncio.gather(*(self._tend(shard, leases, started) for shard in range(self.shards)))
        self.observed.set()

    def _update_members(self, leases: dict[str, KubeObject]) -> None:
        members = {self.identity: Member(self.identity, self.peer_address)}
        for name, lease in leases.items():
            labels = (lease.get("metadata") or {}).get("labels") or {}
            if labels.get(ROLE_LABEL) != "member" or self._expired(name, lease.get("spec") or {}):
                continue
            holder = str(lease["spec"]["holderIdentity"])
            address = str(
                ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION, "")
            )
            members[holder] = Member(holder, address)
        if members != self.members:
            log.info("%s: live replicas: %s", self.identity, ", ".join(sorted(members)))
            self.members = members
            if self.on_members:
                self.on_members(dict(members))

    async def _tend(self, shard: int, leases: dict[str, KubeObject], started: float) -> None:
        name = self.shard_lease(shard)
        lease = leases.get(name)
        spec = (lease or {}).get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        ours = self.placement.get(shard) == self.identity
        if holder == self.identity:
            if not ours:
                self._lose(shard, f"rebalanced to {self.placement.get(shard)}")  # stop fetching first
                await self._release(name, lease)
                return
            if await self._write(name, lease, started, "shard"):
                self._gain(shard, started)
            return
        self._lose(shard, f"held by {holder or 'nobody'}")  # the Lease says someone else: believe it
        if ours and (lease is None or self._expired(name, spec)):
            if await self._write(name, lease, started, "shard"):
                self._gain(shard, started)

    async def _renew_member(self, lease: KubeObject | None) -> None:
        await self._write(self.member_lease, lease, self.clock(), "member")

    async def _write(self, name: str, lease: KubeObject | None, started: float, role: str) -> bool:
        """Create or take/renew Lease `name` for us; False if someone else won or the API failed."""
        stamp = micro_time(self.wall_clock())
        spec = dict((lease or {}).get("spec") or {})
        taking = spec.get("holderIdentity") != self.identity
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration)),
            renewTime=stamp,
        )
        if taking:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        fresh = {"name": name, "namespace": self.namespace}
        metadata: KubeObject = dict((lease or {}).get("metadata") or fresh)
        metadata["labels"] = {**(metadata.get("labels") or {}), GROUP_LABEL: self.prefix, ROLE_LABEL: role}
        if role == "member":
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                ADDRESS_ANNOTATION: self.peer_address,
            }
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        try:
            if lease is None:
                written = await self.client.create_object(self._path(), body)
            else:
                written = await self.client.replace(self._path(name), body)  # carries resourceVersion
        except ApiException as exc:
            if exc.status not in (409,):
                log.warning("%s: writing Lease %s failed: %s %s", self.identity, name, exc.status, exc.reason)
            return False
        except (OSError, TimeoutError) as exc:
            log.warning("%s: writing Lease %s failed: %s", self.identity, name, exc)
            return False
        self._observe(written)
        return True

    async def _release(self, name: str, lease: KubeObject | None = None) -> bool:
        """holderIdentity "" and leaseDurationSeconds 1 (client-go's ReleaseOnCancel), if still ours."""
        try:
            current = lease if lease is not None else await self.client.get(self._path(name))
            spec = dict(current.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return False
            stamp = micro_time(self.wall_clock())
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=stamp)
            await self.client.replace(self._path(name), {**current, "spec": spec})
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("%s: releasing Lease %s failed: %s", self.identity, name, exc)
            return False
        return True
