"""Soak benchmark (issue 13): API latency, RSS and file descriptors of a running `serve`.

A real `keptn-metrics serve` in local mode reads KeptnMetrics on shared targets:
- two openmetrics exporters (separate processes) serving a ~34 KB exposition each, read by
  8 and 4 KeptnMetrics;
- a real Prometheus (Debian's package, backfilled data) read by 6 KeptnMetrics (PromQL).
A load generator in its own process sends GET /api/v1/metrics/{ns}/{name} (the KEDA REST
route on the metrics port) at a fixed rate, open loop: latency is measured from each
request's scheduled send time, so a stalled event loop is not hidden by waiting clients.
RSS and open file descriptors of the server (and of its parser process) are sampled every
few seconds.

Phases, each against a fresh server:
- `idle`: the same metrics with fetchIntervalSeconds 86400: fetched once at start, then no
  fetch runs while the load is measured (the baseline);
- `fetching`: fetchIntervalSeconds 2 (openmetrics) and 3 (Prometheus).
Both with `--openmetrics-parser process` (the default) and `thread`; `--code DIR` adds a
`fetching` run of another checkout (e.g. the code before this change) for comparison.

    python benchmarks/soak.py                       # 4 phases x 60 s at 300 req/s
    python benchmarks/soak.py --duration 20 --repeat 3
    python benchmarks/soak.py --code /work/main     # also the previous code, same load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prometheus_server import backfill, free_port, run_prometheus  # noqa: E402

OPENMETRICS_A = [f"app_latency_{f}_seconds_count" for f in range(8)]
OPENMETRICS_B = [
    "app_latency_0_seconds_sum",
    "app_latency_1_seconds_sum",
    "up",
    "app_latency_2_seconds_count",
]
PROMQL = [
    "sum(rate(http_requests_total[5m]))",
    'sum(rate(http_requests_total{code="500"}[5m]))',
    "constant_seven",
    'max(minute_digit{job="api"})',
    "sum(http_requests_total)",
    "count(http_requests_total)",
]


def exposition(families: int = 8, series: int = 5, buckets: int = 10) -> str:
    """A histogram-heavy exposition like a busy application's (~34 KB)."""
    out = []
    for f in range(families):
        name = f"app_latency_{f}_seconds"
        out.append(f"# HELP {name} Request latency.\n# TYPE {name} histogram\n")
        for s in range(series):
            labels = f'route="/api/v{s}",code="200"'
            for b in range(buckets):
                out.append(f'{name}_bucket{{{labels},le="{0.001 * 2**b:g}"}} {s * b}\n')
            out.append(f'{name}_bucket{{{labels},le="+Inf"}} {s * 99}\n')
            out.append(f"{name}_sum{{{labels}}} {s * 1.5}\n{name}_count{{{labels}}} {s * 99}\n")
    out.append("# TYPE up gauge\nup 1\n")
    return "".join(out)


def _exporter(port: int, ready: Any) -> None:
    from aiohttp import web

    body = exposition().encode()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def manifests(folder: Path, exporters: list[str], prometheus: str, interval: int | None) -> list[str]:
    """Providers and KeptnMetrics; returns the metric names the load generator asks for."""
    docs, names = [], []
    for i, url in enumerate(exporters):
        docs.append(_provider(f"exporter-{i}", "openmetrics", f"{url}/metrics"))
    docs.append(_provider("prom", "prometheus", prometheus))
    targets = [("exporter-0", q, 2) for q in OPENMETRICS_A] + [("exporter-1", q, 2) for q in OPENMETRICS_B]
    targets += [("prom", q, 3) for q in PROMQL]
    for n, (provider, query, seconds) in enumerate(targets):
        name = f"m{n}"
        names.append(name)
        docs.append(
            "apiVersion: metrics.keptn.sh/v1\nkind: KeptnMetric\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{provider: {{name: {provider}}}, query: {json.dumps(_query(provider, query))},"
            f" fetchIntervalSeconds: {interval or seconds}}}\n"
        )
    (folder / "soak.yaml").write_text("---\n".join(docs))
    return names


def _query(provider: str, query: str) -> str:
    return query if provider == "prom" else f"sum({query})"


def _provider(name: str, ptype: str, url: str) -> str:
    return (
        "apiVersion: metrics.keptn.sh/v1\nkind: KeptnMetricsProvider\n"
        f"metadata: {{name: {name}, namespace: default}}\nspec: {{type: {ptype}, targetServer: '{url}'}}\n"
    )


def _proc_stats(pid: int) -> tuple[float, int]:
    """(RSS MiB, open fds) of `pid` plus its direct children (the parser process)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    rss, fds = 0.0, 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
        # the forkserver's workers are grandchildren: count them as part of the parser
        try:
            for c in Path(f"/proc/{p}/task/{p}/children").read_text().split():
                if int(c) not in pids:
                    pids.append(int(c))
        except OSError:
            pass
    return rss, fds


def _main_stats(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _load(port: int, names: list[str], rate: float, duration: float, out: Any) -> None:
    """Open-loop load: request k is due at start + k / rate; latency counts from that time."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    import aiohttp

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors: dict[str, int] = {}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            loop = asyncio.get_running_loop()
            start = loop.time() + 0.2
            total = int(rate * duration)
            tasks = []

            async def one(k: int) -> None:
                due = start + k / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                url = f"http://127.0.0.1:{port}/api/v1/metrics/default/{names[k % len(names)]}"
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                except Exception as exc:  # counted, never fatal to the run
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append(loop.time() - due)

            for k in range(total):
                tasks.append(asyncio.ensure_future(one(k)))
            await asyncio.gather(*tasks)
        return {"latencies": latencies, "errors": errors}

    out.send(asyncio.run(run()))


def _wait_values(port: int, names: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/metrics/default/{name}", timeout=2
                ) as r:
                    if r.status == 200:
                        pending.discard(name)
            except OSError:
                pass
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"no value for {sorted(pending)} after {timeout} s")


def phase(
    label: str,
    code: Path,
    folder: Path,
    exporters: list[str],
    prometheus: str,
    *,
    interval: int | None,
    parser: str | None,
    rate: float,
    duration: float,
    sample_every: float,
) -> dict[str, Any]:
    names = manifests(folder, exporters, prometheus, interval)
    port = free_port()
    cmd = [sys.executable, "-m", "metrics_server", "serve", "--manifests", str(folder)]
    cmd += ["--metrics-port", str(port), "--secure-port", "0", "--log-level", "warning"]
    if parser:
        cmd += ["--openmetrics-parser", parser]
    env = {**os.environ, "PYTHONPATH": str(code)}
    server = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_values(port, names)
        time.sleep(2.5)  # past the first fetch round
        receiver, sender = mp.Pipe(duplex=False)
        loader = mp.Process(target=_load, args=(port, names, rate, duration, sender))
        samples = []
        t0 = time.monotonic()
        loader.start()
        while loader.is_alive() or receiver.poll():
            if receiver.poll(sample_every):
                break
            samples.append(
                (round(time.monotonic() - t0, 1), *_main_stats(server.pid), *_proc_stats(server.pid))
            )
        result = receiver.recv()
        loader.join()
        samples.append((round(time.monotonic() - t0, 1), *_main_stats(server.pid), *_proc_stats(server.pid)))
    finally:
        server.terminate()
        try:
            _, err = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    lat = sorted(result["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0.0] * 99
    return {
        "phase": label,
        "requests": len(lat),
        "errors": result["errors"],
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000 if lat else 0.0,
        "samples": samples,  # (t, rss MiB, fds) of the server; then incl. its parser process
        "stderr_lines": len(err.decode(errors="replace").splitlines()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=300.0, help="requests per second (default 300)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase (default 60)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every phase; medians are reported")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    ap.add_argument(
        "--code", type=Path, action="append", default=[], help="also run `fetching` with this checkout"
    )
    ap.add_argument("--json", type=Path, help="write every phase's raw result here")
    ap.add_argument(
        "--only", help="run only the phases whose label contains this text (e.g. 'fetching (process')"
    )
    args = ap.parse_args()

    mp.set_start_method("spawn")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    backfill_dir = work / "prom"
    backfill_dir.mkdir()
    backfill(backfill_dir, time.time())
    exporters, procs = [], []
    for _ in range(2):
        port, ready = free_port(), mp.Event()
        proc = mp.Process(target=_exporter, args=(port, ready), daemon=True)
        proc.start()
        ready.wait(10)
        exporters.append(f"http://127.0.0.1:{port}")
        procs.append(proc)
    time.sleep(0.5)
    size = len(urllib.request.urlopen(f"{exporters[0]}/metrics", timeout=5).read())
    print(
        f"exposition {size / 1024:.1f} KiB; {len(OPENMETRICS_A) + len(OPENMETRICS_B)} openmetrics "
        f"metrics on 2 targets, {len(PROMQL)} Prometheus metrics on 1; {args.rate:g} req/s for "
        f"{args.duration:g} s per phase, {args.repeat} run(s)"
    )
    plan: list[tuple[str, Path, int | None, str | None]] = [
        ("idle (process parser)", ROOT, 86400, "process"),
        ("fetching (process parser)", ROOT, None, "process"),
        ("idle (thread parser)", ROOT, 86400, "thread"),
        ("fetching (thread parser)", ROOT, None, "thread"),
    ]
    for code in args.code:
        plan.append((f"fetching ({code})", code.resolve(), None, None))
    if args.only:
        plan = [step for step in plan if args.only in step[0]]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in plan}
    try:
        with run_prometheus(backfill_dir / "tsdb") as prom:
            for run in range(args.repeat):
                for label, code, interval, parser in plan:
                    folder = work / f"m-{run}-{len(results[label])}-{abs(hash(label))}"
                    folder.mkdir()
                    r = phase(
                        label,
                        code,
                        folder,
                        exporters,
                        prom.url,
                        interval=interval,
                        parser=parser,
                        rate=args.rate,
                        duration=args.duration,
                        sample_every=args.sample_every,
                    )
                    results[label].append(r)
                    print(
                        f"  run {run + 1} {label}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                        f"max {r['max_ms']:.0f} ms, errors {r['errors'] or 0}",
                        flush=True,
                    )
    finally:
        for proc in procs:
            proc.terminate()
    print()
    print(
        "| phase | requests | p50 ms | p99 ms | max ms | errors | RSS MiB start -> end (with parser) ", end=""
    )
    print("| fds start -> end |")
    print("|---|---|---|---|---|---|---|---|")
    med: dict[str, float] = {}
    for label, runs in results.items():
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = med[label] = statistics.median(r["p99_ms"] for r in runs)
        mx = statistics.median(r["max_ms"] for r in runs)
        last = runs[-1]["samples"]
        errors = sum(sum(r["errors"].values()) for r in runs)
        print(
            f"| {label} | {sum(r['requests'] for r in runs)} | {p50:.1f} | {p99:.1f} | {mx:.0f} | {errors} | "
            f"{last[0][1]:.0f} -> {last[-1][1]:.0f} ({last[0][3]:.0f} -> {last[-1][3]:.0f}) | "
            f"{last[0][2]} -> {last[-1][2]} |"
        )
    for mode in ("process", "thread"):
        idle, busy = med.get(f"idle ({mode} parser)"), med.get(f"fetching ({mode} parser)")
        if idle and busy:
            print(f"\np99 fetching / idle ({mode} parser): {busy / idle:.2f}x (must be <= 3x)")
    baseline = med.get("idle (process parser)")
    for label, *_ in plan:
        if baseline and label.startswith("fetching (/"):
            print(f"p99 {label} / idle (process parser): {med[label] / baseline:.2f}x")
    print("\nRSS / fds over time of the last run of each phase (t s: RSS MiB, fds):")
    for label, runs in results.items():
        series = ", ".join(f"{t:g}: {rss:.0f}/{fds}" for t, rss, fds, *_ in runs[-1]["samples"])
        print(f"  {label}: {series}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
