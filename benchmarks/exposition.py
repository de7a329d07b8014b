"""Cost of one /metrics scrape with N KeptnMetrics (sizing Prometheus and the scrape interval).

    python benchmarks/exposition.py --metrics 1000 10000 --repeat 5

Builds N metric states with values (as a leader has them) and renders the exposition every
`/metrics` serves, in process. Reports the median time per scrape, the body size and the
number of series, and, as the baseline in the same run, the same exposition built through
prometheus_client's metric families (what the server did before; the same series).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from metrics_server.model import ObjectKey
from metrics_server.selfmetrics import PER_METRIC_FAMILIES, exposition, upstream_gauge_name
from metrics_server.state import MetricStates, staleness_bound


def states_with(n: int) -> MetricStates:
    states = MetricStates()
    now = time.time()
    for i in range(n):
        state = states.ensure(ObjectKey(f"team-{i % 50}", f"metric-{i}"), 10)
        state.value, state.value_text, state.last_success = float(i), str(i), now - i % 10
    return states


def through_metric_families(states: MetricStates) -> bytes:
    """The same exposition built the way prometheus_client intends (collectors and families),
    as main rendered it before: our families per KeptnMetric plus upstream's gauge per name."""
    now = time.time()
    own = list(REGISTRY.collect())
    per_metric = [GaugeMetricFamily(n, h, labels=["namespace", "name"]) for n, h in PER_METRIC_FAMILIES]
    upstream: dict[str, GaugeMetricFamily] = {}
    members: dict[str, list[tuple[str, str, float | None]]] = {}
    for state in states.values():
        key = [state.key.namespace, state.key.name]
        if state.value is not None:
            per_metric[0].add_metric(key, state.value)
        age = state.age(now)
        if age is not None:
            per_metric[1].add_metric(key, age)
        per_metric[2].add_metric(key, 1.0 if state.error else 0.0)
        per_metric[3].add_metric(key, staleness_bound(state, states.max_staleness))
        gauge = upstream_gauge_name(state.key.name)
        if gauge is not None:
            members.setdefault(gauge, []).append((state.key.namespace, state.key.name, state.value))
    for gauge in sorted(members):
        ms = sorted(members[gauge], key=lambda m: (m[0], m[1]))
        family = upstream[gauge] = GaugeMetricFamily(
            gauge, ", ".join(sorted({n for _, n, _ in ms})), labels=["namespace", "name"]
        )
        for namespace, name, value in ms:
            if value is not None:
                family.add_metric([namespace, name], value)

    class Families:
        def collect(self) -> Iterator[Any]:
            return iter([*own, *per_metric, *upstream.values()])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())  # type: ignore[arg-type]
    return generate_latest(registry)


def median_seconds(
    render: Callable[[MetricStates], bytes], states: MetricStates, repeat: int
) -> tuple[float, bytes]:
    times, body = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        body = render(states)
        times.append(time.perf_counter() - started)
    return statistics.median(times), body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base, base_body = median_seconds(exposition, MetricStates(), args.repeat)
    print(f"without KeptnMetrics: {base * 1000:.2f} ms, {len(base_body) / 1024:.0f} KiB")
    print("| KeptnMetrics | scrape | via metric families | ratio | body | series |")
    print("|---|---|---|---|---|---|")
    for n in args.metrics:
        states = states_with(n)
        whole, body = median_seconds(exposition, states, args.repeat)
        families, _ = median_seconds(through_metric_families, states, args.repeat)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        print(
            f"| {n:,} | {whole * 1000:.1f} ms | {families * 1000:.1f} ms "
            f"| {families / whole:.1f}x | {len(body) / 1024 / 1024:.2f} MiB | {series:,} |"
        )


if __name__ == "__main__":
    main()
