"""Kubernetes mode: wire the KubernetesStore, StatusWriter and LeaderElector to the services.

Every replica watches KeptnMetrics/KeptnMetricsProviders and serves the APIs. Only the
leader (Lease) fetches, writes status and runs the lifecycle controller; the other
replicas adopt the status the leader writes (`MetricStates.load_status`) so they serve the
same values. A new leader spreads its first round of fetches over the shortest fetch
interval instead of refetching everything at once.

Shutdown (SIGTERM): /readyz goes false, in-flight API requests drain, fetching stops,
in-flight status writes finish, the Lease is released, clients are closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from metrics_server.kube.client import KubeClient
from metrics_server.kube.leader import LeaderElector
from metrics_server.kube.status_writer import StatusWriter
from metrics_server.kube.store import KubernetesStore
from metrics_server.model import KeptnMetric
from metrics_server.store.base import EventType, StoreEvent

log = logging.getLogger(__name__)


def _arg(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


class KubernetesRuntime:
    """One replica in Kubernetes mode (`start`, then `stop`); `run_kubernetes` drives it."""

    def __init__(self, args: argparse.Namespace, client: KubeClient, *, identity: str | None = None) -> None:
        from metrics_server.app import Services

        self.args = args
        self.client = client
        self.store = KubernetesStore(
            client,
            namespaces=_arg(args, "namespaces", []) or None,
            server_namespace=_arg(args, "server_namespace", "keptn-system"),
            secret_ttl=_arg(args, "secret_cache_ttl", 300.0),
        )
        self.writer = StatusWriter(
            client,
            refresh_interval=_arg(args, "status_refresh_interval", 60.0),
            qps=_arg(args, "status_write_qps", 20.0),
            burst=_arg(args, "status_write_burst", 40),
        )
        self.services = Services(args, self.store, kubernetes_mode=True, sink=self.writer)
        self.states = self.services.states
        # standby replicas serve from status, whose unchanged lastUpdated moves only every refresh interval
        self.states.follower_grace = self.writer.refresh_interval
        self.evaluator = self.services.evaluator
        self.leading = False
        self.elector: LeaderElector | None = None
        if _arg(args, "leader_elect", True):
            self.elector = LeaderElector(
                client,
                _arg(args, "leader_election_namespace", "keptn-system"),
                _arg(args, "leader_election_lease_name", "keptn-metrics-leader"),
                identity=identity,
                lease_duration=_arg(args, "leader_election_lease_duration", 15.0),
                renew_deadline=_arg(args, "leader_election_renew_deadline", 10.0),
                retry_period=_arg(args, "leader_election_retry_period", 2.0),
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading,
            )
        self._controller: asyncio.Task[None] | None = None
        self.store.subscribe(self._on_store_event)

    # -- leadership ----------------------------------------------------------------------------
    def spread_seconds(self) -> float:
        intervals = [m.fetch_interval_seconds for m in self.store.list_metrics()]
        return float(min(intervals)) if intervals else 0.0

    def _started_leading(self) -> None:
        self.leading = True
        self.writer.resume()
        self.evaluator.activate(spread_seconds=self.spread_seconds())
        self._start_controller()

    def _stopped_leading(self) -> None:
        self.leading = False
        self.evaluator.deactivate()
        self.writer.pause()
        if self._controller is not None:
            self._controller.cancel()
            self._controller = None
        for metric in self.store.list_metrics():  # serve what the next leader writes
            self.states.load_status(metric)

    def _start_controller(self) -> None:
        try:
            from metrics_server.controller.flags import options_from_args
            from metrics_server.controller.runtime import run_controller
        except ImportError:
            return
        options = replace(options_from_args(self.args), egress=self.services.evaluator.options.egress)
        namespaces = _arg(self.args, "namespaces", []) or None
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
        elif not self.leading:
            self.states.load_status(obj)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.writer.pause()  # nothing is written before we lead
        self.writer.start()
        await self.store.start()
        log.info(
            "watching %d KeptnMetrics and %d KeptnMetricsProviders in %s",
            len(self.store.list_metrics()),
            len(self.store.list_providers()),
            ", ".join(self.store.namespaces) if self.store.namespaces else "all namespaces",
        )
        self.evaluator.load()
        for metric in self.store.list_metrics():
            self.states.load_status(metric)
        await self.services.start()
        if self.elector is not None:
            self.elector.start()
        else:
            self._started_leading()

    async def stop(self) -> None:
        await self.services.stop()  # readiness false, API drained, evaluator stopped
        if self._controller is not None:
            self._controller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._controller
            self._controller = None
        await self.writer.stop()  # in-flight writes finish
        if self.elector is not None:
            await self.elector.stop(release=True)
        await self.store.stop()


async def run_kubernetes(args: argparse.Namespace) -> int:
    """`keptn-metrics serve` in Kubernetes mode; returns the exit code."""
    client = await KubeClient.create(_arg(args, "kubeconfig", None))
    try:
        runtime = KubernetesRuntime(args, client)
        runtime.services.install_signal_handlers()
        try:
            await runtime.start()
            await runtime.services.stopping.wait()
            log.info("shutting down")
        finally:
            await runtime.stop()
    finally:
        await client.close()
    return 0
