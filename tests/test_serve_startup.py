"""`keptn-metrics serve` start-up failures: one clear line, a non-zero exit, nothing left open."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metrics_server.config import ServeConfig
from metrics_server.startup import StartupError
from tests.prometheus_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def serve_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrics_server", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def outside_any_cluster(home: Path) -> dict[str, str]:
    """An environment with no in-cluster service account and no kubeconfig anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return {**env, "HOME": str(home)}


def test_kubernetes_mode_without_any_configuration_says_how_to_fix_it(tmp_path: Path) -> None:
    done = serve_cli("--metrics-port", "0", "--secure-port", "0", env=outside_any_cluster(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no Kubernetes configuration")
    assert str(tmp_path / ".kube" / "config") in lines[0]
    assert "--kubeconfig" in lines[0] and "--manifests DIR" in lines[0]


def test_a_missing_kubeconfig_file_names_the_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = serve_cli("--kubeconfig", str(missing), env=outside_any_cluster(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: no Kubernetes configuration: not running in a pod and no kubeconfig at {missing} "
        "(--kubeconfig); pass --kubeconfig FILE, or --manifests DIR to run in local mode without a cluster"
    )


def test_an_unreadable_kubeconfig_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\n")  # no contexts, no current-context
    done = serve_cli("--kubeconfig", str(broken), env=outside_any_cluster(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot use kubeconfig {broken}: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_secure_port_in_use_exits_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_cli(
            *("--manifests", str(ROOT / "examples/local"), "--metrics-port", "0"),
            *("--secure-port", str(port), "--grpc-port", "0", "--cert-dir", str(tmp_path / "certs")),
            env={**os.environ},
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: cannot listen on https://127.0.0.1:{port} (--secure-port): " in done.stderr


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_failure_half_way_closes_what_was_opened(tmp_path: Path) -> None:
    """The metrics port and the evaluator are up when the secure port turns out to be taken:
    both are closed again, no task outlives `serve`, and the error says which flag to change."""
    from metrics_server.app import serve

    metrics_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        secure = taken.getsockname()[1]
        config = ServeConfig.from_argv(
            [
                *("--manifests", str(ROOT / "examples/local"), "--metrics-port", str(metrics_port)),
                *("--secure-port", str(secure), "--grpc-port", "0", "--cert-dir", str(tmp_path / "certs")),
                *("--openmetrics-parser", "thread"),
            ]
        )
        before = asyncio.all_tasks()
        with pytest.raises(StartupError, match=r"--secure-port"):
            await serve(config)
    assert _bindable(metrics_port)  # the metrics port was open and is closed again
    assert asyncio.all_tasks() == before  # evaluator, store poller: all gone


async def test_grpc_port_without_grpcio_is_an_error_not_a_missing_scaler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrics_server.app import serve

    monkeypatch.setitem(sys.modules, "apiservice.keda_grpc", None)  # import fails as without grpcio
    secure = free_port()
    config = ServeConfig.from_argv(
        [
            *("--manifests", str(ROOT / "examples/local"), "--metrics-port", "0"),
            *("--secure-port", str(secure), "--grpc-port", "9998", "--cert-dir", str(tmp_path / "certs")),
            *("--openmetrics-parser", "thread"),
        ]
    )
    with pytest.raises(
        StartupError, match=r"--grpc-port 9998: .*install keptn-metrics\[grpc\] or pass --grpc-port 0"
    ):
        await serve(config)
    assert _bindable(secure)  # the HTTPS server that was already listening is closed again


def test_flags_become_one_frozen_config() -> None:
    import dataclasses

    config = ServeConfig.from_argv(["--manifests", "examples/local"])
    assert not config.kubernetes_mode and config.bind_address == "127.0.0.1" and config.shutdown_delay == 0.0
    assert config.api.bind_address == "127.0.0.1" and config.api.authorization_mode == "AlwaysAllow"
    kube = ServeConfig.from_argv(["--namespaces", "a,b", "--shards", "4"])
    assert kube.kubernetes_mode and kube.bind_address == "0.0.0.0" and kube.shutdown_delay == 2.0
    assert kube.kube.namespaces == ("a", "b") and kube.kube.shards == 4
    assert kube.api.authorization_mode == "Webhook"
    assert kube.controller.egress is kube.evaluator.egress
    with pytest.raises(dataclasses.FrozenInstanceError):
        kube.metrics_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        kube.api.secure_port = 1  # type: ignore[misc]
