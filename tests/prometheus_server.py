"""A real Prometheus (Debian's package) on 127.0.0.1 with deterministic backfilled data.

Series (one sample every 15 s, from 3 h before the session start to 3 h after):
- `http_requests_total{job="api",code="200"}` grows by 10 per second  -> rate = 10
- `http_requests_total{job="api",code="500"}` grows by 1 per second   -> rate = 1
- `minute_digit{job="api"}` = floor(t / 60) mod 10: any 10 consecutive minutes hold 0..9 once
- `constant_seven` = 7
Timestamps are multiples of 15 s, so a query at any time t sees minute_digit = floor(t/60) % 10.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STEP = 15
SPAN = 3 * 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openmetrics_data(now: float) -> str:
    start = int(now - SPAN) // 60 * 60
    end = int(now + SPAN)
    stamps = range(start, end, STEP)
    lines = ["# HELP http_requests Requests served.", "# TYPE http_requests counter"]
    for code, per_second in (("200", 10), ("500", 1)):
        lines += [
            f'http_requests_total{{code="{code}",job="api"}} {(t - start) * per_second} {t}' for t in stamps
        ]
    lines += ["# HELP minute_digit The minute of the hour modulo 10.", "# TYPE minute_digit gauge"]
    lines += [f'minute_digit{{job="api"}} {(t // 60) % 10} {t}' for t in stamps]
    lines += ["# HELP constant_seven Always seven.", "# TYPE constant_seven gauge"]
    lines += [f"constant_seven 7 {t}" for t in stamps]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path


def binaries_available() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def backfill(data_dir: Path, now: float) -> None:
    source = data_dir / "data.om"
    source.write_text(openmetrics_data(now))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir / "tsdb")],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def run_prometheus(
    tsdb: Path,
    web_config: str | None = None,
    scheme: str = "http",
    ready_ssl: object = None,
    config_text: str | None = None,
    port: int | None = None,
    files: dict[str, str] | None = None,
) -> Iterator[PrometheusServer]:
    """Start Prometheus on a free loopback port over an existing TSDB directory.

    `config_text` replaces the default (no scrape jobs) configuration; `files` are written next
    to it (rule files it names); `port` is for callers that must know it before the start."""
    workdir = Path(tempfile.mkdtemp(prefix="prom-run-"))
    config = workdir / "prometheus.yml"
    config.write_text(config_text or "global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    for name, text in (files or {}).items():
        (workdir / name).write_text(text)
    port = port or free_port()
    args = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        "--storage.tsdb.retention.time=100y",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if web_config is not None:
        web = workdir / "web.yml"
        web.write_text(web_config)
        args.append(f"--web.config.file={web}")
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        _wait_ready(port, proc, workdir)
        yield PrometheusServer(url=url, process=proc, data_dir=tsdb)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], workdir: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("prometheus exited: " + (workdir / "prometheus.log").read_text()[-2000:])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.2)
                return
        time.sleep(0.05)
    raise RuntimeError("prometheus did not start within 30 s")


def instant(url: str, query: str) -> dict[str, object]:
    """Ask Prometheus directly (test oracle), bypassing our provider."""
    import json
    import urllib.parse

    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5
    ) as r:
        result: dict[str, object] = json.load(r)
        return result


def tsdb_copy(src: Path) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="prom-tsdb-"))
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def require_prometheus() -> None:
    if not binaries_available():
        if os.environ.get("CI"):
            raise RuntimeError(
                "Prometheus binaries missing in CI: .ci/run must install the prometheus package"
            )
        import pytest

        pytest.skip("prometheus/promtool not installed (apt-get install prometheus)")
