"""The `keptn-metrics` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.prometheus_server import PrometheusServer, free_port
from tests.serve_process import popen_serve, write_local_example

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrics_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.prometheus
def test_query_prints_the_value(prometheus: PrometheusServer) -> None:
    out = cli("query", "--provider-type", "prometheus", "--target-server", prometheus.url, "constant_seven")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "7\n"


@pytest.mark.prometheus
def test_query_json_output(prometheus: PrometheusServer) -> None:
    out = cli(
        "query",
        "--provider-type",
        "prometheus",
        "--target-server",
        prometheus.url,
        "-o",
        "json",
        "--interval",
        "9m",
        "--step",
        "1m",
        "--aggregation",
        "max",
        "minute_digit",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"value", "rawValue", "timestamp"}
    assert doc["value"] == "9"
    assert json.loads(doc["rawValue"])["data"]["resultType"] == "matrix"
    assert doc["timestamp"].endswith("Z")


@pytest.mark.prometheus
def test_query_with_secret_file(prometheus: PrometheusServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {tenant: a}\n")
    out = cli(
        "query",
        "--provider-type",
        "cortex",
        "--target-server",
        prometheus.url,
        "--secret-file",
        str(secret),
        "constant_seven",
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("query", "words"), [("http_requests_total", "2 series"), ("missing_metric", "no data")]
)
def test_query_failures_are_one_line_and_non_zero(
    prometheus: PrometheusServer, query: str, words: str
) -> None:
    out = cli("query", "--provider-type", "prometheus", "--target-server", prometheus.url, query)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and words in out.stderr and out.stderr.startswith("error: ")


def test_query_unreachable_server() -> None:
    out = cli("query", "--provider-type", "prometheus", "--target-server", "http://127.0.0.1:9", "up")
    assert out.returncode == 1 and "unreachable" in out.stderr and out.stderr.count("\n") == 1


def test_query_rejects_step_without_aggregation() -> None:
    out = cli(
        "query",
        "--provider-type",
        "prometheus",
        "--target-server",
        "http://127.0.0.1:9",
        "--step",
        "1m",
        "up",
    )
    assert out.returncode == 2 and "together" in out.stderr


def test_validate_accepts_the_examples() -> None:
    out = cli("validate", "examples/local")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ")


def test_validate_names_object_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: metrics.keptn.sh/v1\nkind: KeptnMetric\nmetadata: {name: m, namespace: x}\n"
        "spec: {provider: {name: p}, query: q, fetchIntervalSeconds: 5, range: {storedResults: 300}}\n"
    )
    out = cli("validate", str(bad))
    assert out.returncode == 1
    assert "KeptnMetric x/m: spec.range.storedResults" in out.stderr


def test_help_explains_the_commands() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for word in ("serve", "query", "validate", "examples:"):
        assert word in out.stdout


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_serve_local_mode_shows_live_values_from_the_embedded_example(tmp_path: Path) -> None:
    port = free_port()
    write_local_example(tmp_path, port)
    secure = free_port()
    proc = popen_serve(
        "--manifests",
        str(tmp_path),
        "--metrics-port",
        str(port),
        "--secure-port",
        str(secure),
        "--cert-dir",
        str(tmp_path / "certs"),
    )
    try:
        deadline = time.monotonic() + 20
        status, body = 0, {}
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/v1/metrics/default/resident-memory")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert body["metric"] == "resident-memory" and body["namespace"] == "default"
        assert float(str(body["value"])) > 1_000_000
        assert _get(f"http://127.0.0.1:{port}/api/v1/metrics/default/nope")[0] == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert 'keptn_metric_value{name="resident-memory",namespace="default"}' in text
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
