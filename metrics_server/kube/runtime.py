"""Kubernetes mode: wire the KubernetesStore, StatusWriter and LeaderElector to the services.

Every replica watches KeptnMetrics/KeptnMetricsProviders and serves the APIs. Only the
leader (Lease) fetches, writes status and runs the lifecycle controller; the other
replicas adopt the status the leader writes (`MetricStates.load_status`) so they serve the
same values. A new leader spreads its first round of fetches over the shortest fetch
interval instead of refetching everything at once.

Shutdown (SIGTERM): /readyz goes false, in-flight API requests drain, fetching stops,
in-flight status writes finish, the Leases are released, clients are closed: `start` registers
each part's closer in one AsyncExitStack in that order, so a start-up failure half-way closes
exactly what was opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from metrics_server.config import ServeConfig
from metrics_server.kube.client import KubeClient
from metrics_server.kube.leader import LeaderElector
from metrics_server.kube.status_writer import StatusWriter
from metrics_server.kube.store import KubernetesStore
from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.sharding import shard_of
from metrics_server.state import parse_rfc3339
from metrics_server.store.base import EventType, StoreEvent

log = logging.getLogger(__name__)


class KubernetesRuntime:
    """One replica in Kubernetes mode: `async with` it (or `start`, then `stop`)."""

    def __init__(self, config: ServeConfig, client: KubeClient, *, identity: str | None = None) -> None:
        from metrics_server.app import Services

        self.config = config
        k = self.kube = config.kube
        self.client = client
        self.store = KubernetesStore(
            client,
            namespaces=list(k.namespaces) or None,
            server_namespace=config.server_namespace,
            secret_ttl=k.secret_cache_ttl,
        )
        self.writer = StatusWriter(
            client,
            refresh_interval=k.status_refresh_interval,
            qps=k.status_write_qps,
            burst=k.status_write_burst,
        )
        self.services = Services(config, self.store, sink=self.writer)
        self.states = self.services.states
        # standby replicas serve from status, whose unchanged lastUpdated moves only every refresh interval
        self.states.follower_grace = self.writer.refresh_interval
        self.evaluator = self.services.evaluator
        self.leading = False
        self.elector = self._leader_elector(identity) if k.leader_elect else None
        self._controller: asyncio.Task[None] | None = None
        #: sharded runtime (--shards N, docs/scaling.md): shard Leases decide what this replica
        #: fetches, peers stream each other's values; the leader Lease only runs the controller
        self.shard_count = k.shards
        self.identity = identity or (self.elector.identity if self.elector else None)
        self.shards: Any = None
        self.peers: Any = None
        if self.shard_count > 0:
            from metrics_server.kube.leader import default_identity

            self.identity = self.identity or default_identity()
            self.shards = self._shard_manager(self.identity)
            self.evaluator.owns = self.owns
        self.store.subscribe(self._on_store_event)
        self._stack: contextlib.AsyncExitStack | None = None

    def _leader_elector(self, identity: str | None) -> LeaderElector:
        k = self.kube
        return LeaderElector(
            self.client,
            k.leader_election_namespace,
            k.leader_election_lease_name,
            identity=identity,
            lease_duration=k.leader_election_lease_duration,
            renew_deadline=k.leader_election_renew_deadline,
            retry_period=k.leader_election_retry_period,
            on_started_leading=self._started_leading,
            on_stopped_leading=self._stopped_leading,
        )

    def _shard_manager(self, identity: str) -> Any:
        from metrics_server.kube.shards import ShardManager

        k = self.kube
        return ShardManager(
            self.client,
            k.leader_election_namespace,
            self.shard_count,
            prefix=k.shard_lease_prefix,
            identity=identity,
            lease_duration=k.leader_election_lease_duration,
            renew_deadline=k.leader_election_renew_deadline,
            retry_period=k.leader_election_retry_period,
            on_acquired=self._shard_acquired,
            on_lost=self._shard_lost,
            on_members=self._members_changed,
        )

    # -- shards ----------------------------------------------------------------------------------
    def owns(self, key: ObjectKey) -> bool:
        """True if this replica fetches `key` now (always, for the leader of the unsharded runtime)."""
        if self.shards is None:
            return self.leading
        return bool(self.shards.owns(shard_of(key, self.shard_count)))

    def _in_shard(self, shard: int) -> Any:
        return lambda key: shard_of(key, self.shard_count) == shard

    def _shard_acquired(self, shard: int) -> None:
        self._split_write_budget()
        self.evaluator.fetch_now(self._in_shard(shard))  # a handed-over shard is fetched at once

    def _shard_lost(self, shard: int) -> None:
        in_shard = self._in_shard(shard)
        self.evaluator.stop_fetching(in_shard)
        for metric in self.store.list_metrics():  # the new owner writes their status from now on
            if in_shard(metric.key):
                self.writer.forget(metric.key)
        self._split_write_budget()

    def _split_write_budget(self) -> None:
        """--status-write-qps is cluster-wide: each owner gets its shards' part of it."""
        owned = len(self.shards.owned) if self.shards is not None else self.shard_count
        qps = float(self.kube.status_write_qps)
        self.writer.bucket.set_rate(qps * max(1, owned) / self.shard_count)

    async def _await_peer_snapshots(self) -> None:
        """A new replica opens its ports once it holds every peer's values, not only their
        (lagging) status, so a rolling update brings no stale answers; bounded by a lease duration."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.kube.leader_election_lease_duration)
        while loop.time() < deadline:
            if self.shards.observed.is_set() and self.peers.synced():
                return
            await asyncio.sleep(0.05)
        log.warning("starting to serve before every peer's values arrived (status fallback meanwhile)")

    def _members_changed(self, members: dict[str, Any]) -> None:
        if self.peers is not None:
            self.peers.set_peers(members)

    async def _start_peers(self, stack: contextlib.AsyncExitStack) -> None:
        from apiservice.shared_ca import shared_ca
        from metrics_server.kube.peer_tls import peer_contexts
        from metrics_server.kube.peers import PeerHub

        ca_pem, ca_key = await shared_ca(self.client, self.config.server_namespace)
        bind = self.config.bind_address
        self.peers = PeerHub(
            self.states,
            peer_contexts(ca_pem, ca_key),
            owns=self.owns,
            identity=self.identity or "",
            bind_address=bind,
            port=self.kube.peer_port,
        )
        stack.push_async_callback(self.peers.stop)  # safe after a half-done start
        port = await self.peers.start()
        host = self.kube.peer_advertise_address or ("127.0.0.1" if bind == "0.0.0.0" else bind)
        self.shards.peer_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- leadership ----------------------------------------------------------------------------
    def spread_seconds(self) -> float:
        intervals = [m.fetch_interval_seconds for m in self.store.list_metrics()]
        return float(min(intervals)) if intervals else 0.0

    def _started_leading(self) -> None:
        self.leading = True
        if self.shards is not None:  # shards decide the fetching; the leader runs the controller
            self._start_controller()
            return
        self.writer.resume()
        self.evaluator.activate(spread_seconds=self.spread_seconds())
        self._start_controller()

    def _stopped_leading(self) -> None:
        self.leading = False
        if self.shards is not None:
            self._stop_controller()
            return
        self.evaluator.deactivate()
        self.writer.pause()
        self._stop_controller()
        for metric in self.store.list_metrics():  # serve what the next leader writes
            self.states.load_status(metric)

    def _stop_controller(self) -> None:
        if self._controller is not None:
            self._controller.cancel()
            self._controller = None

    def _start_controller(self) -> None:
        from metrics_server.controller.runtime import run_controller

        options, namespaces = self.config.controller, list(self.kube.namespaces) or None
        self._controller = asyncio.get_running_loop().create_task(
            run_controller(self.client, self.store, self.states, options, namespaces=namespaces),
            name="lifecycle controller",
        )

    def _on_store_event(self, event: StoreEvent) -> None:
        obj = event.obj
        if not isinstance(obj, KeptnMetric):
            return
        if event.type is EventType.DELETED:
            self.writer.forget(obj.key)
        elif self.shards is not None:
            if not self.owns(obj.key):
                self._adopt_status_if_newer(obj)
        elif not self.leading:
            self.states.load_status(obj)

    def _adopt_status_if_newer(self, metric: KeptnMetric) -> None:
        """A watched status is a fallback for values the owner's stream has not brought: it is
        adopted only when it is from a later fetch than the streamed state by more than the one
        second its whole-second `lastUpdated` may hide (a healthy stream is ~0.1 s behind)."""
        state = self.states.get(metric.key)
        updated = parse_rfc3339(str((metric.status or {}).get("lastUpdated", "")))
        known = None if state is None else state.last_attempt
        if known is None or (updated is not None and updated > known + 1.0):
            self.states.load_status(metric)

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> KubernetesRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open every part; each closer is registered so that leaving runs, in order: the services
        (readiness false, delay, listeners closed, requests drained, fetching stopped), the
        controller, the shard Leases, the peer endpoint, in-flight status writes, the leader Lease,
        the informers."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.store.stop)  # safe after a half-done start
            await self.store.start()
            log.info(
                "watching %d KeptnMetrics and %d KeptnMetricsProviders in %s",
                len(self.store.list_metrics()),
                len(self.store.list_providers()),
                ", ".join(self.store.namespaces) if self.store.namespaces else "all namespaces",
            )
            if self.elector is not None:  # released after the last status write, never before
                stack.push_async_callback(self.elector.stop, True)
            self.writer.pause()  # nothing is written before we lead (or own shards)
            self.writer.start()
            stack.push_async_callback(self.writer.stop)  # in-flight writes finish
            self.evaluator.load()
            for metric in self.store.list_metrics():
                self.states.load_status(metric)
            if self.shards is not None:
                await self._start_peers(stack)
                self._split_write_budget()
                self.writer.resume()  # only owned keys are fetched, so only they are written
                self.evaluator.activate()  # dispatches nothing until a shard is acquired
                self.shards.start()
                stack.push_async_callback(self.shards.stop, True)  # stop fetching, hand shards over at once
                await self._await_peer_snapshots()
            stack.push_async_callback(self._cancel_controller)
            await stack.enter_async_context(self.services)  # the API ports open (and /readyz answers) now
            if self.elector is not None:
                self.elector.start()
            else:
                self._started_leading()
            self._stack = stack.pop_all()

    async def _cancel_controller(self) -> None:
        if self._controller is not None:
            self._controller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._controller
            self._controller = None

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


@contextlib.asynccontextmanager
async def kubernetes_runtime(config: ServeConfig) -> AsyncIterator[KubernetesRuntime]:
    """Kubernetes mode: the API client (closed last) and the replica's runtime over it."""
    async with await KubeClient.create(config.kube.kubeconfig) as client:
        async with KubernetesRuntime(config, client) as runtime:
            yield runtime


async def run_kubernetes(config: ServeConfig) -> int:
    """`keptn-metrics serve` in Kubernetes mode; returns the exit code."""
    from metrics_server.app import serve

    return await serve(config)
