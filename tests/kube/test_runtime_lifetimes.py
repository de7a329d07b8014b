"""Kubernetes mode's lifetimes: the shutdown order is explicit, a start-up failure leaks nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from metrics_server.config import ServeConfig
from metrics_server.kube.runtime import KubernetesRuntime, kubernetes_runtime
from metrics_server.startup import StartupError
from tests.kube_fixtures import KubeEnv
from tests.prometheus_server import free_port

pytestmark = pytest.mark.kube

SHUTDOWN_DELAY = 0.0371  # distinctive, to recognise the shutdown delay's sleep


def config(kube: KubeEnv, *extra: str) -> ServeConfig:
    ns = kube.namespace
    return ServeConfig.from_argv(
        [
            *("--kubeconfig", kube.kubeconfig, "--namespaces", ns, "--server-namespace", ns),
            *("--leader-election-namespace", ns, "--leader-election-lease-duration", "1"),
            *("--leader-election-renew-deadline", "0.6", "--leader-election-retry-period", "0.15"),
            *("--metrics-port", "0", "--bind-address", "127.0.0.1", "--grpc-port", "0"),
            *("--cert-dir", str(Path(kube.kubeconfig).parent / "certs")),
            *("--disable-lifecycle-controller", "--shutdown-delay", str(SHUTDOWN_DELAY)),
            *extra,
        ]
    )


async def holder(kube: KubeEnv) -> str:
    try:
        return str((await kube.get("Lease", "keptn-metrics-leader"))["spec"].get("holderIdentity") or "")
    except Exception:
        return ""


def ours(tasks: set[asyncio.Task[Any]]) -> list[str]:
    """The tasks of this project's code (not the in-process stand-in serving the other end)."""
    names = []
    for task in tasks:
        code = task.get_coro().cr_code  # type: ignore[union-attr]
        if "/metrics_server/" in code.co_filename or "/apiservice/" in code.co_filename:
            names.append(f"{task.get_name()}: {code.co_qualname}")
    return names


def record(calls: list[str], obj: Any, method: str, label: str) -> None:
    original = getattr(obj, method)

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(label)
        return await original(*args, **kwargs)

    def recorded_sync(*args: Any, **kwargs: Any) -> Any:
        calls.append(label)
        return original(*args, **kwargs)

    setattr(obj, method, recorded if asyncio.iscoroutinefunction(original) else recorded_sync)


async def test_shutdown_goes_readiness_delay_listeners_writes_lease_informers(
    kube: KubeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    client = await kube.new_client()
    runtime = KubernetesRuntime(config(kube, "--secure-port", str(free_port())), client, identity="a")
    for obj, method, label in (
        (runtime.services, "not_ready", "readiness false"),
        (runtime.writer, "stop", "status writes drained"),
        (runtime.elector, "stop", "leader Lease released"),
        (runtime.store, "stop", "informers stopped"),
        (runtime.evaluator, "close", "evaluator closed"),
    ):
        record(calls, obj, method, label)
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> Any:
        if delay == SHUTDOWN_DELAY:
            calls.append("shutdown delay")
        return await real_sleep(delay, *args)

    async with runtime:
        for _ in range(300):
            if runtime.leading:
                break
            await asyncio.sleep(0.02)
        assert runtime.leading and await holder(kube) == "a"
        api = runtime.services._api
        record(calls, api, "stop", "API listeners closed, requests drained")
        monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.undo()
    await client.close()
    assert list(dict.fromkeys(calls)) == [  # first occurrences (the evaluator's own task closes it too)
        "readiness false",
        "shutdown delay",
        "API listeners closed, requests drained",
        "evaluator closed",
        "status writes drained",
        "leader Lease released",
        "informers stopped",
    ]
    assert await holder(kube) == ""


async def test_secure_port_in_use_closes_informers_writer_and_client_and_takes_no_lease(
    kube: KubeEnv,
) -> None:
    before = asyncio.all_tasks()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            StartupError, match=rf"cannot listen on https://127\.0\.0\.1:{port} \(--secure-port\)"
        ):
            async with kubernetes_runtime(config(kube, "--secure-port", str(port))):
                raise AssertionError("started although the secure port is taken")
    await asyncio.sleep(0)
    assert ours(asyncio.all_tasks() - before) == []  # informers, status writers, evaluator: all gone
    assert await holder(kube) == ""  # never campaigned: the ports open before the election starts
