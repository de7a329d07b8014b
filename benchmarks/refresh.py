"""Refresh benchmark: N KeptnMetrics at a fixed interval against a loopback Prometheus API.

    python benchmarks/refresh.py                      # 1,000 and 10,000 metrics, 10 s interval, 50 ms latency
    python benchmarks/refresh.py --metrics 10000 --duration 40 --latency 0.05

The Prometheus-compatible endpoint runs in its own process (pinned to the other core when
there is one), the evaluator in this one (pinned to a single core). Each metric has a
distinct query, so nothing is deduplicated. For every N the same workload also runs one
fetch at a time, as upstream's reconciler does, and the report gives the ratio.
Reported: schedule lag p50/p99 (actual minus due start time, after the first round, which
is spread over one interval as a new leader does), fetches/s, CPU seconds per 1,000
fetches, and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metrics_server.evaluator import Evaluator, EvaluatorOptions
from metrics_server.model import KeptnMetric, parse_metric, parse_provider
from metrics_server.state import MetricState, MetricStates
from metrics_server.store.base import IndexedStore


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def serve_prometheus_api(port: int, latency: float) -> None:
    """A minimal Prometheus HTTP API answering 1 for every instant query after `latency`."""
    import orjson
    from aiohttp import web

    _pin(1)

    async def query(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), "1"]}]},
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("benchmark endpoint did not start")


def build_store(url: str, count: int, interval: int) -> IndexedStore:
    store = IndexedStore(server_namespace="bench")
    store.apply(
        parse_provider(
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetricsProvider",
                "metadata": {"name": "prom", "namespace": "bench"},
                "spec": {"type": "prometheus", "targetServer": url},
            }
        )
    )
    for i in range(count):
        store.apply(
            parse_metric(
                {
                    "apiVersion": "metrics.keptn.sh/v1",
                    "kind": "KeptnMetric",
                    "metadata": {"name": f"m{i}", "namespace": f"ns{i % 50}"},
                    "spec": {
                        "provider": {"name": "prom"},
                        "query": f"sum(rate(req_{i}[1m]))",
                        "fetchIntervalSeconds": interval,
                    },
                }
            )
        )
    store.mark_synced()
    return store


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_once(url: str, count: int, interval: int, duration: float, concurrency: int) -> dict[str, Any]:
    store = build_store(url, count, interval)
    lags: list[float] = []
    measuring = False

    def observe(lag: float) -> None:
        if measuring:
            lags.append(lag)

    states = MetricStates()
    done = CompletionCounter()
    evaluator = Evaluator(
        store,
        states,
        sink=done,
        options=EvaluatorOptions(provider_concurrency=concurrency, fetch_timeout=30),
        lag_observer=observe,
    )
    evaluator.load()
    evaluator.activate(spread_seconds=interval)
    task = asyncio.get_running_loop().create_task(evaluator.run())
    await asyncio.sleep(interval)  # the spread first round
    measuring = True
    attempts_before = done.count
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(duration)
    cpu1, t1 = time.process_time(), time.monotonic()
    fetches = done.count - attempts_before
    measuring = False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    errors = sum(1 for s in states.values() if s.error)
    lags.sort()
    return {
        "metrics": count,
        "concurrency": concurrency,
        "fetches": fetches,
        "fetches_per_s": fetches / (t1 - t0),
        "expected_per_s": count / interval,
        "lag_p50": _pct(lags, 50),
        "lag_p99": _pct(lags, 99),
        "cpu_s_per_1000": (cpu1 - cpu0) / max(fetches, 1) * 1000,
        "rss_mib": rss_mib(),
        "errors": errors,
    }


class CompletionCounter:
    """A StatusSink that only counts completed evaluations."""

    def __init__(self) -> None:
        self.count = 0

    async def publish(self, metric: KeptnMetric, state: MetricState, changed: bool) -> None:
        self.count += 1


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--duration", type=float, default=30.0, help="measured seconds per run (after warm-up)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="per-provider concurrency of the evaluator"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; medians are reported")
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args()

    port = free_port()
    server = multiprocessing.Process(target=serve_prometheus_api, args=(port, args.latency), daemon=True)
    server.start()
    wait_port(port)
    _pin(0)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    url = f"http://127.0.0.1:{port}"
    print(
        f"loopback Prometheus API latency {args.latency * 1000:.0f} ms, interval {args.interval} s, "
        f"measured {args.duration:.0f} s after a {args.interval} s spread first round, evaluator on one core"
    )
    header = (
        f"{'mode':<12}{'metrics':>8}{'fetch/s':>10}{'need/s':>8}{'lag p50':>10}{'lag p99':>10}"
        f"{'cpu s/1k':>10}{'rss MiB':>9}{'errors':>8}"
    )
    print(header)
    try:
        for count in args.metrics:
            modes = [("scheduler", args.concurrency)] + ([] if args.skip_serial else [("one-at-time", 1)])
            results = {}
            for mode, conc in modes:
                runs = [
                    asyncio.run(run_once(url, count, args.interval, args.duration, conc))
                    for _ in range(args.repeat)
                ]
                r = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
                results[mode] = r
                print(
                    f"{mode:<12}{count:>8}{r['fetches_per_s']:>10.1f}{r['expected_per_s']:>8.0f}"
                    f"{r['lag_p50']:>10.3f}{r['lag_p99']:>10.3f}{r['cpu_s_per_1000']:>10.3f}{r['rss_mib']:>9.0f}"
                    f"{r['errors']:>8.0f}"
                )
            if "one-at-time" in results:
                ratio = results["scheduler"]["fetches_per_s"] / max(
                    results["one-at-time"]["fetches_per_s"], 1e-9
                )
                print(f"{'':<12}{count:>8}  throughput ratio scheduler / one-at-a-time: {ratio:.1f}x")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
