"""`keptn-metrics serve`: wire store, evaluator, metrics port and the aggregated API together.

Local mode (`--manifests DIR`) needs no cluster. Kubernetes mode (no `--manifests`) lives in
`metrics_server.kube.runtime` and reuses `Services` for everything that is not cluster-specific.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from apiservice.connections import GuardedTCPSite, limits_from_args
from metrics_server.client_errors import ClientErrorLogger
from metrics_server.evaluator import Evaluator, EvaluatorOptions
from metrics_server.http_server import MetricsPortApp
from metrics_server.state import MetricStates
from metrics_server.status_sink import StatusSink
from metrics_server.store.base import Store

log = logging.getLogger(__name__)


def evaluator_options(args: argparse.Namespace, *, kubernetes_mode: bool = False) -> EvaluatorOptions:
    from metrics_server.egress_flags import policy_from_args

    return EvaluatorOptions(
        fetch_timeout=args.fetch_timeout,
        provider_concurrency=args.provider_concurrency,
        max_backoff=args.max_backoff,
        egress=policy_from_args(args, kubernetes_mode=kubernetes_mode),
    )


class Services:
    """Everything `serve` runs besides the store backend: evaluator, metrics port, API."""

    def __init__(
        self,
        args: argparse.Namespace,
        store: Store,
        *,
        kubernetes_mode: bool,
        sink: StatusSink | None = None,
        auth_source: Any = None,
        kube_api: Any = None,
    ) -> None:
        self.args = args
        self.store = store
        self.kubernetes_mode = kubernetes_mode
        self.states = MetricStates()
        self.states.max_staleness = getattr(args, "max_staleness", None)
        self.evaluator = Evaluator(
            store, self.states, sink=sink, options=evaluator_options(args, kubernetes_mode=kubernetes_mode)
        )
        self.metrics_port = MetricsPortApp(
            store, self.states, max_staleness=getattr(args, "max_staleness", None)
        )
        self.auth_source = auth_source
        self.kube_api = kube_api
        self._runner: web.AppRunner | None = None
        self._api: Any = None
        self._keda_auth: Any = None
        self._evaluator_task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        _configure_scrapes(self.args)
        self._evaluator_task = asyncio.get_running_loop().create_task(self.evaluator.run())
        if getattr(self.args, "keda_auth", False):
            # upstream's KEDA endpoint is open; --keda-auth puts TokenReview + SAR in front of it
            from apiservice.server import keda_auth_middleware_for

            self._keda_auth = await keda_auth_middleware_for(self.args, self.kubernetes_mode, self.kube_api)
            self.metrics_port.middlewares.append(self._keda_auth.middleware)
        limits = limits_from_args(self.args)
        self._runner = web.AppRunner(
            self.metrics_port.build(),
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=limits.keep_alive_timeout,
            logger=ClientErrorLogger(server="metrics port"),
        )
        await self._runner.setup()
        site = GuardedTCPSite(self._runner, self.args.bind_address, self.args.metrics_port, limits=limits)
        await site.start()
        log.info("metrics port listening on http://%s:%s", self.args.bind_address, self.args.metrics_port)
        self._api = await self._start_api()

    async def _start_api(self) -> Any:
        if not getattr(self.args, "secure_port", 0):
            return None  # --secure-port 0: metrics port only
        from apiservice.flags import ApiOptions
        from apiservice.server import start_api

        options = ApiOptions.from_args(self.args, kubernetes_mode=self.kubernetes_mode)
        return await start_api(
            self.store, self.states, options, auth_source=self.auth_source, api_client=self.kube_api
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)

    async def stop(self) -> None:
        """Readiness goes false first, then in-flight requests drain, then fetching stops."""
        self.metrics_port.shutting_down = True
        if self._api is not None:
            self._api.api.shutting_down = True
        delay = getattr(self.args, "shutdown_delay", None)
        if delay is None:
            delay = 2.0 if self.kubernetes_mode else 0.0
        if delay > 0:  # let kubelet and the Service see "not ready" before connections close
            await asyncio.sleep(delay)
        if self._api is not None:
            await self._api.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._keda_auth is not None:
            await self._keda_auth.close()
        if self._evaluator_task is not None:
            self._evaluator_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._evaluator_task
        await self.evaluator.close()
        _close_scrapes()


def _configure_scrapes(args: argparse.Namespace) -> None:
    """The openmetrics scrape cache and its parser (a process by default), from the flags."""
    if not hasattr(args, "openmetrics_parser"):
        return  # embedded use without the serve flags: keep the defaults
    from providers import openmetrics

    openmetrics.configure(
        parser=getattr(args, "openmetrics_parser", "thread"), ttl=getattr(args, "openmetrics_scrape_ttl", 1.0)
    )


def _close_scrapes() -> None:
    module = sys.modules.get("providers.openmetrics")
    if module is not None:
        module.SCRAPES.close()


async def run_local(args: argparse.Namespace) -> int:
    from metrics_server.store.local import DEFAULT_MAX_MANIFEST_BYTES, LocalStore

    store = LocalStore(
        args.manifests,
        default_namespace=args.default_namespace,
        server_namespace=args.server_namespace,
        poll_interval=args.reload_interval,
        max_manifest_bytes=getattr(args, "max_manifest_bytes", DEFAULT_MAX_MANIFEST_BYTES),
    )
    services = Services(args, store, kubernetes_mode=False)
    services.install_signal_handlers()
    await store.start()
    for path, problems in store.problems.items():
        for problem in problems:
            log.error("manifest problem in %s: %s", path, problem.message)
    log.info("loaded %d KeptnMetrics from %s", len(store.list_metrics()), args.manifests)
    try:
        await services.start()
        services.evaluator.load()
        services.evaluator.activate()
        await services.stopping.wait()
        log.info("shutting down")
    finally:
        await services.stop()
        await store.stop()
    return 0


async def serve(args: argparse.Namespace) -> int:
    if args.manifests:
        return await run_local(args)
    from metrics_server.kube.runtime import run_kubernetes  # type: ignore[import-not-found,unused-ignore]

    result: int = await run_kubernetes(args)
    return result
