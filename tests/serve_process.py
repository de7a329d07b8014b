"""`keptn-metrics serve` as a child process, run the way the Deployment runs it.

One place for what every process test needs: the interpreter and module to start, the
Kubernetes-mode flags every test repeats, and a shutdown that first asks (SIGTERM, as the
kubelet does) and only then kills, so no test leaves a server behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.prometheus_server import free_port

ROOT = Path(__file__).resolve().parents[1]

ExporterFactory = Callable[[str], Awaitable[str]]


def free_ports() -> dict[str, int]:
    """A free port for each listener: metrics, secure and grpc."""
    return {"metrics": free_port(), "secure": free_port(), "grpc": free_port()}


def kube_mode_args(kubeconfig: str, namespace: str, ports: dict[str, int]) -> list[str]:
    """The flags of a single-namespace Kubernetes-mode server; `ports` as `free_ports()` gives."""
    args = [
        "serve", "--kubeconfig", kubeconfig, "--namespaces", namespace, "--server-namespace", namespace,
        "--leader-election-namespace", namespace, "--bind-address", "127.0.0.1", "--log-format", "json",
    ]  # fmt: skip
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    return args


@contextlib.asynccontextmanager
async def serve_process(
    args: list[str], pod_name: str = "replica-a"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The running process (stdout and stderr merged into `proc.stdout`); terminated on exit."""
    env = {**os.environ, "POD_NAME": pod_name, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "metrics_server", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def start_exporter(aiohttp_server: Any, exposition: str) -> str:
    """A loopback OpenMetrics target serving `exposition` at /metrics; returns its URL."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=exposition)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/metrics"


def write_local_example(folder: Path, metrics_port: int, extra: str = "", name: str = "metrics.yaml") -> None:
    """The embedded example (examples/local), reading the /metrics of a server on `metrics_port`."""
    example = (ROOT / "examples/local/metrics.yaml").read_text()
    (folder / name).write_text(example.replace("127.0.0.1:9999", f"127.0.0.1:{metrics_port}") + extra)


def popen_serve(*args: str) -> subprocess.Popen[bytes]:
    """`keptn-metrics serve ARGS` for synchronous tests; stdout and stderr merged into `stdout`."""
    return subprocess.Popen(
        [sys.executable, "-m", "metrics_server", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
