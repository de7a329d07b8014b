"""Cost of one /metrics scrape with N KeptnMetrics (sizing Prometheus and the scrape interval).

    python benchmarks/exposition.py --metrics 1000 10000 --repeat 5

Builds N metric states with values (as a leader has them) and renders the exposition every
`/metrics` serves, in process; reports the median time per scrape, the body size and the
number of series, against a baseline of the same exposition with no KeptnMetrics.
"""

from __future__ import annotations

import argparse
import statistics
import time

from metrics_server.model import ObjectKey
from metrics_server.selfmetrics import exposition
from metrics_server.state import MetricStates


def states_with(n: int) -> MetricStates:
    states = MetricStates()
    now = time.time()
    for i in range(n):
        state = states.ensure(ObjectKey(f"team-{i % 50}", f"metric-{i}"), 10)
        state.value, state.value_text, state.last_success = float(i), str(i), now - i % 10
    return states


def median_seconds(states: MetricStates, repeat: int) -> tuple[float, bytes]:
    times, body = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        body = exposition(states)
        times.append(time.perf_counter() - started)
    return statistics.median(times), body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base, base_body = median_seconds(MetricStates(), args.repeat)
    print(f"baseline (no KeptnMetrics): {base * 1000:.2f} ms, {len(base_body) / 1024:.0f} KiB")
    print("| KeptnMetrics | scrape (median) | minus baseline | body | series |")
    print("|---|---|---|---|---|")
    for n in args.metrics:
        seconds, body = median_seconds(states_with(n), args.repeat)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        print(
            f"| {n:,} | {seconds * 1000:.1f} ms | {(seconds - base) * 1000:.1f} ms "
            f"| {len(body) / 1024 / 1024:.2f} MiB | {series:,} |"
        )


if __name__ == "__main__":
    main()
