"""`keptn-metrics serve`: wire store, evaluator, metrics port and the aggregated API together.

Local mode (`--manifests DIR`) needs no cluster. Kubernetes mode (no `--manifests`) lives in
`metrics_server.kube.runtime` and reuses `Services` for everything that is not cluster-specific.

Every lifetime is an async context manager; `serve` composes them in one AsyncExitStack, so
the shutdown order is the reverse of the start order and a start-up failure half-way closes
exactly what was opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web

from apiservice.connections import GuardedTCPSite, listen
from metrics_server.client_errors import ClientErrorLogger
from metrics_server.config import ServeConfig
from metrics_server.evaluator import Evaluator
from metrics_server.http_server import MetricsPortApp
from metrics_server.state import MetricStates
from metrics_server.status_sink import StatusSink
from metrics_server.store.base import Store

log = logging.getLogger(__name__)


class Services:
    """Everything `serve` runs besides the store backend: evaluator, metrics port, API.

    `async with Services(...)` opens them; leaving it turns readiness false, waits the
    shutdown delay, closes the listeners (in-flight requests drain) and stops fetching."""

    def __init__(
        self,
        config: ServeConfig,
        store: Store,
        *,
        sink: StatusSink | None = None,
        auth_source: Any = None,
        kube_api: Any = None,
    ) -> None:
        self.config = config
        self.store = store
        self.kubernetes_mode = config.kubernetes_mode
        self.states = MetricStates()
        self.states.max_staleness = config.max_staleness
        self.evaluator = Evaluator(store, self.states, sink=sink, options=config.evaluator)
        self.metrics_port = MetricsPortApp(store, self.states, max_staleness=config.max_staleness)
        self.auth_source = auth_source
        self.kube_api = kube_api
        self._api: Any = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Services:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            _configure_scrapes(self.config)
            stack.callback(_close_scrapes)
            stack.push_async_callback(self.evaluator.close)
            await stack.enter_async_context(_task(self.evaluator.run(), "evaluator"))
            if self.config.api.keda_auth:
                # upstream's KEDA endpoint is open; --keda-auth puts TokenReview + SAR in front of it
                from apiservice.server import keda_auth_middleware_for

                keda_auth = await keda_auth_middleware_for(self.config.api, self.kube_api)
                stack.push_async_callback(keda_auth.close)
                self.metrics_port.middlewares.append(keda_auth.middleware)
            await stack.enter_async_context(self._metrics_port())
            if self.config.api.secure_port:  # --secure-port 0: metrics port only
                from apiservice.server import start_api

                self._api = await stack.enter_async_context(
                    await start_api(
                        self.store,
                        self.states,
                        self.config.api,
                        auth_source=self.auth_source,
                        api_client=self.kube_api,
                    )
                )
            self._stack = stack.pop_all()

    @contextlib.asynccontextmanager
    async def _metrics_port(self) -> AsyncIterator[web.AppRunner]:
        c = self.config
        runner = web.AppRunner(
            self.metrics_port.build(),
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=c.limits.keep_alive_timeout,
            logger=ClientErrorLogger(server="metrics port"),
        )
        await runner.setup()
        try:
            await listen(
                GuardedTCPSite(runner, c.bind_address, c.metrics_port, limits=c.limits), "--metrics-port"
            )
            log.info("metrics port listening on http://%s:%s", c.bind_address, c.metrics_port)
            yield runner
        finally:
            await runner.cleanup()

    def not_ready(self) -> None:
        """/readyz answers 503 from now on (the first step of every shutdown)."""
        self.metrics_port.shutting_down = True
        if self._api is not None:
            self._api.api.shutting_down = True

    async def stop(self) -> None:
        """Readiness goes false first, then in-flight requests drain, then fetching stops."""
        self.not_ready()
        delay = self.config.shutdown_delay
        if delay > 0 and self._stack is not None:  # let kubelet and the Service see "not ready" first
            await asyncio.sleep(delay)
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


@contextlib.asynccontextmanager
async def _task(coro: Any, name: str) -> AsyncIterator[asyncio.Task[Any]]:
    """A background task that lives exactly as long as the `async with` block."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An Event set by SIGTERM/SIGINT while the block runs (the handlers are removed after)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
            installed.append(sig)
    try:
        yield stopping
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _configure_scrapes(config: ServeConfig) -> None:
    """The openmetrics scrape cache and its parser (a process by default), from the flags."""
    from providers import openmetrics

    openmetrics.configure(parser=config.openmetrics_parser, ttl=config.openmetrics_scrape_ttl)


def _close_scrapes() -> None:
    module = sys.modules.get("providers.openmetrics")
    if module is not None:
        module.SCRAPES.close()


@contextlib.asynccontextmanager
async def local_services(config: ServeConfig) -> AsyncIterator[Services]:
    """Local mode: the manifest folder's store and the services over it."""
    from metrics_server.store.local import LocalStore

    local = config.local
    assert local is not None
    store = LocalStore(
        local.manifests,
        default_namespace=local.default_namespace,
        server_namespace=config.server_namespace,
        poll_interval=local.reload_interval,
        max_manifest_bytes=local.max_manifest_bytes,
    )
    async with contextlib.AsyncExitStack() as stack:
        await store.start()
        stack.push_async_callback(store.stop)
        for path, problems in store.problems.items():
            for problem in problems:
                log.error("manifest problem in %s: %s", path, problem.message)
        log.info("loaded %d KeptnMetrics from %s", len(store.list_metrics()), local.manifests)
        services = await stack.enter_async_context(Services(config, store))
        services.evaluator.load()
        services.evaluator.activate()
        yield services


async def serve(config: ServeConfig) -> int:
    """`keptn-metrics serve`: run until SIGTERM/SIGINT; returns the exit code.

    Start-up failures the operator can fix raise `StartupError` after closing what was opened."""
    with stop_signals() as stopping:
        async with contextlib.AsyncExitStack() as stack:
            if config.kubernetes_mode:
                from metrics_server.kube.runtime import kubernetes_runtime

                await stack.enter_async_context(kubernetes_runtime(config))
            else:
                await stack.enter_async_context(local_services(config))
            await stopping.wait()
            log.info("shutting down")
    return 0
