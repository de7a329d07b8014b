"""How much does parsing openmetrics expositions stall the serving event loop? (issue 13)

One event loop runs a probe that wakes every millisecond and records how late it woke (what
a request arriving at that moment would wait); meanwhile the exposition of benchmarks/soak.py
(~35 KB) is parsed every 50 ms through `ParserPool` in each mode: `inline` (on the loop, as
before this change), `thread` (asyncio's default executor; the parse holds the GIL) and
`process` (a forkserver worker). Rounds alternate the modes; medians over `--repeat` rounds.

    python benchmarks/parser_contention.py --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from soak import OPENMETRICS_A, exposition  # noqa: E402

from providers.scrape import ParserPool  # noqa: E402


async def probe(stop: asyncio.Event, lateness: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.001
        await asyncio.sleep(0.001)
        lateness.append(loop.time() - due)


async def round_(pool: ParserPool, body: bytes, seconds: float) -> tuple[list[float], float]:
    stop, lateness = asyncio.Event(), []
    task = asyncio.ensure_future(probe(stop, lateness))
    names = frozenset(OPENMETRICS_A)
    parse_times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        await pool.index(body, names)
        parse_times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return lateness, statistics.median(parse_times)


async def main_async(repeat: int, seconds: float) -> None:
    body = exposition().encode()
    pools = {mode: ParserPool(mode) for mode in ("inline", "thread", "process")}
    await pools["process"].index(body, frozenset())  # start the worker outside the measurement
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in pools}
    idle: list[tuple[float, float, float, float]] = []
    for _ in range(repeat):
        stop, lateness = asyncio.Event(), []
        task = asyncio.ensure_future(probe(stop, lateness))
        await asyncio.sleep(seconds)
        stop.set()
        await task
        q = statistics.quantiles(lateness, n=100)
        idle.append((q[49], q[98], max(lateness), 0.0))
        for mode, pool in pools.items():
            lateness, parse = await round_(pool, body, seconds)
            q = statistics.quantiles(lateness, n=100)
            rows[mode].append((q[49], q[98], max(lateness), parse))
    for pool in pools.values():
        pool.shutdown()
    print(
        f"exposition {len(body) / 1024:.1f} KiB parsed every 50 ms; {repeat} rounds of {seconds:g} s per mode"
    )
    print("| mode | loop lateness p50 ms | p99 ms | max ms | parse wall time ms |")
    print("|---|---|---|---|---|")
    for mode, data in [("no parsing", idle), *rows.items()]:
        med = [statistics.median(col) * 1000 for col in zip(*data, strict=True)]
        print(f"| {mode} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.1f} | {med[3]:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per round and mode")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main_async(args.repeat, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
