"""Scale-out benchmark: R `keptn-metrics serve --shards N` processes sharing the fetch work.

    python benchmarks/scale.py freshness --replicas 2 --metrics 2000 --interval 10 --duration 60
    python benchmarks/scale.py capacity --replicas 1 2 4 --loads 500 1000 1500 --interval 1
    python benchmarks/scale.py failover --replicas 2 --metrics 2000 --interval 10

The Kubernetes API is the in-process stand-in (tests/kube_standin.py), or a real API server
when KUBE_APISERVER_URL and KUBECONFIG are set (deploy/crds applied). A loopback
Prometheus-API endpoint runs in its own process and answers every instant query after
`--latency` (50 ms) with the time of its answer, so every fetch changes the value and the
value itself says when it was fetched: on any replica, age = now - value.

Reported per configuration (after a warm-up of two intervals):
- fetch lag p50/p99: the replicas' own schedule-lag histograms (start minus due time),
  differenced over the measured window and merged;
- fresh: the fraction of sampled answers (KEDA endpoint `GET /api/v1/metrics/{ns}/{name}` on
  the metrics port of every replica, random metrics) with age <= interval + 2 s; 503 count;
- CPU per replica (cores used over the window) and RSS;
- failover: time from `kill -9` of one replica until every metric it owned has a value fetched
  after the kill on the survivor, and the survivor's answers for them meanwhile by status code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metrics_server.kube.client import KubeClient, resource_path  # noqa: E402

NS = "bench"
SHARDS = 16
LAG_METRIC = "keptn_metrics_schedule_lag_seconds"


# -- the loopback Prometheus API ------------------------------------------------------------------
def serve_prometheus_api(port: int, latency: float) -> None:
    """Instant queries answer, after `latency`, the time of the answer (a value that always changes)."""
    import orjson
    from aiohttp import web

    async def query(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        now = time.time()
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [now, f"{now:.3f}"]}]},
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# -- the Kubernetes API -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def kubernetes(workdir: Path) -> AsyncIterator[tuple[str, KubeClient]]:
    """(kubeconfig path, client): a real API server if configured, else the stand-in."""
    if os.environ.get("KUBE_APISERVER_URL") and os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"]
        client = await KubeClient.create(kubeconfig)
        with contextlib.suppress(Exception):
            await client.create_object("/api/v1/namespaces", {"metadata": {"name": NS}})
        try:
            yield kubeconfig, client
        finally:
            with contextlib.suppress(Exception):
                await client.delete(f"/api/v1/namespaces/{NS}")
            await client.close()
        return
    from tests.kube_fixtures import deploy_crd_schemas, write_kubeconfig
    from tests.kube_standin import KubeStandin

    standin = KubeStandin(deploy_crd_schemas())
    url = await standin.start()
    kubeconfig = str(write_kubeconfig(workdir / "kubeconfig", url))
    client = await KubeClient.create(kubeconfig)
    with contextlib.suppress(Exception):
        await client.create_object("/api/v1/namespaces", {"metadata": {"name": NS}})
    try:
        yield kubeconfig, client
    finally:
        await client.close()
        await standin.stop()


async def create_metrics(client: KubeClient, prom_url: str, count: int, interval: int) -> None:
    group = ("metrics.keptn.sh", "v1")
    await client.create_object(
        resource_path(*group, "keptnmetricsproviders", NS),
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "prom", "namespace": NS},
            "spec": {"type": "prometheus", "targetServer": prom_url},
        },
    )
    path = resource_path(*group, "keptnmetrics", NS)
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await client.create_object(
                path,
                {
                    "apiVersion": "metrics.keptn.sh/v1",
                    "kind": "KeptnMetric",
                    "metadata": {"name": f"m{i}", "namespace": NS},
                    "spec": {
                        "provider": {"name": "prom"},
                        "query": f"sum(rate(req_{i}[1m]))",  # distinct: nothing is deduplicated
                        "fetchIntervalSeconds": interval,
                    },
                },
            )

    await asyncio.gather(*(one(i) for i in range(count)))


# -- replicas -------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Replica:
    name: str
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    kubeconfig: str
    cpu_mark: tuple[float, float] = (0.0, 0.0)
    endpoint_pid: int = 0  # the loopback Prometheus API (its CPU is reported too)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_mib(self) -> tuple[float, float]:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        )
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def start_replica(
    name: str, kubeconfig: str, workdir: Path, shards: int, lease: tuple[float, float, float]
) -> Replica:
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POD_NAME": name}
    duration, deadline, retry = lease
    argv = [
        sys.executable,
        "-m",
        "metrics_server",
        "serve",
        f"--kubeconfig={kubeconfig}",
        f"--namespaces={NS}",
        f"--server-namespace={NS}",
        f"--leader-election-namespace={NS}",
        f"--leader-election-lease-duration={duration}",
        f"--leader-election-renew-deadline={deadline}",
        f"--leader-election-retry-period={retry}",
        f"--metrics-port={port}",
        "--secure-port=0",
        "--bind-address=127.0.0.1",
        f"--shards={shards}",
        "--peer-port=0",
        "--status-write-qps=20",
        "--shutdown-delay=0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(name, port, proc, log, kubeconfig)


async def ready(session: aiohttp.ClientSession, replica: Replica, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise RuntimeError(f"{replica.name} exited: see {replica.log}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"http://127.0.0.1:{replica.metrics_port}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{replica.name} never became ready: see {replica.log}")


async def lag_buckets(session: aiohttp.ClientSession, replica: Replica) -> dict[float, float]:
    async with session.get(f"http://127.0.0.1:{replica.metrics_port}/metrics") as resp:
        text = await resp.text()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{LAG_METRIC}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def quantile(buckets: dict[float, float], q: float) -> float:
    """Linear interpolation inside cumulative histogram buckets (as PromQL's histogram_quantile)."""
    edges = sorted(buckets)
    total = buckets[edges[-1]] if edges else 0.0
    if total <= 0:
        return float("nan")
    rank, prev_edge, prev_count = q * total, 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if edge == float("inf"):
                return prev_edge
            span = count - prev_count
            return prev_edge + (edge - prev_edge) * ((rank - prev_count) / span if span else 1.0)
        prev_edge, prev_count = edge, count
    return prev_edge


@dataclass
class Samples:
    codes: dict[int, int] = field(default_factory=dict)
    ages: list[float] = field(default_factory=list)

    def add(self, code: int, age: float | None) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if age is not None:
            self.ages.append(age)


async def sample(session: aiohttp.ClientSession, replica: Replica, name: str, out: Samples) -> float | None:
    url = f"http://127.0.0.1:{replica.metrics_port}/api/v1/metrics/{NS}/{name}"
    try:
        async with session.get(url) as resp:
            body = await resp.json(content_type=None)
            age = time.time() - float(body["value"]) if resp.status == 200 else None
            out.add(resp.status, age)
            return None if resp.status != 200 else float(body["value"])
    except (aiohttp.ClientError, OSError, ValueError, KeyError):
        out.add(0, None)
        return None


@contextlib.asynccontextmanager
async def cluster(
    args: argparse.Namespace, replicas: int, metrics: int
) -> AsyncIterator[tuple[list[Replica], aiohttp.ClientSession]]:
    with tempfile.TemporaryDirectory(prefix="keptn-scale-") as tmp:
        workdir = Path(tmp)
        prom_port = free_port()
        prom = multiprocessing.Process(
            target=serve_prometheus_api, args=(prom_port, args.latency), daemon=True
        )
        prom.start()
        wait_port(prom_port)
        async with (
            kubernetes(workdir) as (kubeconfig, client),
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=256)
            ) as session,
        ):
            await create_metrics(client, f"http://127.0.0.1:{prom_port}", metrics, args.interval)
            lease = (args.lease_duration, args.lease_duration * 2 / 3, args.lease_duration * 2 / 15)
            procs = [
                start_replica(f"replica-{i}", kubeconfig, workdir, args.shards, lease)
                for i in range(replicas)
            ]
            try:
                for r in procs:
                    await ready(session, r)
                for r in procs:
                    r.endpoint_pid = prom.pid or 0
                yield procs, session
            finally:
                for r in procs:
                    if r.proc.poll() is None:
                        r.proc.send_signal(signal.SIGTERM)
                for r in procs:
                    try:
                        r.proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
                prom.terminate()
                prom.join(5)


async def measure(
    args: argparse.Namespace,
    procs: list[Replica],
    session: aiohttp.ClientSession,
    metrics: int,
    duration: float,
) -> dict[str, Any]:
    """Sample every replica for `duration` seconds; lag, freshness, CPU and RSS over that window."""
    before = [await lag_buckets(session, r) for r in procs]
    endpoint_mark = (time.monotonic(), cpu_seconds(procs[0].endpoint_pid))
    for r in procs:
        r.cpu_mark = (time.monotonic(), r.cpu_seconds())
    per_replica = [Samples() for _ in procs]
    end = time.monotonic() + duration
    while time.monotonic() < end:
        tick = time.monotonic()
        names = [f"m{random.randrange(metrics)}" for _ in range(args.samples_per_second)]
        await asyncio.gather(
            *(sample(session, r, n, s) for r, s in zip(procs, per_replica, strict=True) for n in names)
        )
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    after = [await lag_buckets(session, r) for r in procs]
    merged: dict[float, float] = {}
    for b, a in zip(before, after, strict=True):
        for edge, count in a.items():
            merged[edge] = merged.get(edge, 0.0) + count - b.get(edge, 0.0)
    fresh_bound = args.interval + 2
    out: dict[str, Any] = {
        "lag_p50": quantile(merged, 0.5),
        "lag_p99": quantile(merged, 0.99),
        "fetches_per_s": (merged.get(float("inf"), 0.0)) / duration,
        "endpoint_cpu_cores": (cpu_seconds(procs[0].endpoint_pid) - endpoint_mark[1])
        / (time.monotonic() - endpoint_mark[0]),
        "replicas": [],
    }
    for r, s in zip(procs, per_replica, strict=True):
        t0, c0 = r.cpu_mark
        rss, hwm = r.rss_mib()
        total = sum(s.codes.values())
        fresh = sum(1 for a in s.ages if a <= fresh_bound)
        out["replicas"].append(
            {
                "name": r.name,
                "answers": total,
                "fresh": fresh / total if total else float("nan"),
                "503": s.codes.get(503, 0),
                "other_errors": total - s.codes.get(200, 0) - s.codes.get(503, 0),
                "age_p50": statistics.median(s.ages) if s.ages else float("nan"),
                "cpu_cores": (r.cpu_seconds() - c0) / (time.monotonic() - t0),
                "rss_mib": rss,
                "peak_rss_mib": hwm,
            }
        )
    return out


def print_freshness(label: str, result: dict[str, Any]) -> None:
    print(
        f"{label}: fetches/s {result['fetches_per_s']:.0f}, "
        f"lag p50 {result['lag_p50']:.3f}s p99 {result['lag_p99']:.3f}s, "
        f"Prometheus endpoint CPU {result['endpoint_cpu_cores']:.2f} cores"
    )
    for r in result["replicas"]:
        print(
            f"  {r['name']}: answers {r['answers']}, fresh {100 * r['fresh']:.2f} %, 503 {r['503']}, "
            f"other errors {r['other_errors']}, age p50 {r['age_p50']:.1f}s, CPU {r['cpu_cores']:.2f} cores, "
            f"RSS {r['rss_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f})"
        )
    sys.stdout.flush()


# -- modes ----------------------------------------------------------------------------------------
async def freshness(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for metrics in args.metrics:
        for replicas in args.replicas:
            async with cluster(args, replicas, metrics) as (procs, session):
                await asyncio.sleep(
                    args.interval * 2 + args.lease_duration
                )  # every metric fetched, shards settled
                result = await measure(args, procs, session, metrics, args.duration)
            result.update(mode="freshness", metrics=metrics, replica_count=replicas, interval=args.interval)
            print_freshness(f"{replicas} replicas, {metrics} metrics at {args.interval}s", result)
            results.append(result)
    return results


async def capacity(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per replica count, the largest load (fetches/s) carried at lag p99 <= 1 s."""
    results = []
    for replicas in args.replicas:
        carried = 0.0
        for load in args.loads:
            metrics = int(load * args.interval)
            async with cluster(args, replicas, metrics) as (procs, session):
                await asyncio.sleep(args.interval * 3 + args.lease_duration)
                result = await measure(args, procs, session, metrics, args.duration)
            ok = result["lag_p99"] <= 1.0
            result.update(mode="capacity", metrics=metrics, replica_count=replicas, load=load, carried=ok)
            print_freshness(
                f"capacity: {replicas} replicas, {load} fetches/s ({'ok' if ok else 'over'})", result
            )
            results.append(result)
            if not ok:
                break
            carried = load
        print(f"capacity: {replicas} replicas carry {carried:g} fetches/s at lag p99 <= 1 s")
        results.append({"mode": "capacity-summary", "replica_count": replicas, "carried": carried})
    base = next(
        (r["carried"] for r in results if r.get("mode") == "capacity-summary" and r["replica_count"] == 1), 0
    )
    for r in results:
        if r.get("mode") == "capacity-summary" and base:
            r["ratio"] = r["carried"] / base
            print(f"  {r['replica_count']} replicas: {r['ratio']:.2f} x one replica")
    return results


def owner_of(name: str, shards: int, holders: dict[int, str]) -> str:
    return holders.get(zlib.crc32(f"{NS}/{name}".encode()) % shards, "")


async def failover(args: argparse.Namespace) -> list[dict[str, Any]]:
    metrics = args.metrics[0]
    results = []
    for _ in range(args.repeat):
        async with cluster(args, 2, metrics) as (procs, session):
            await asyncio.sleep(args.interval * 2 + args.lease_duration)
            client = await KubeClient.create(procs[0].kubeconfig)
            leases = (await client.list(resource_path("coordination.k8s.io", "v1", "leases", NS)))["items"]
            await client.close()
            holders = {
                int(item["metadata"]["name"].rsplit("-", 1)[1]): str(item["spec"].get("holderIdentity") or "")
                for item in leases
                if "-shard-" in item["metadata"]["name"]
            }
            victim, survivor = procs[0], procs[1]
            victim_names = [
                f"m{i}"
                for i in range(metrics)
                if owner_of(f"m{i}", args.shards, holders).startswith(victim.name + "_")
            ]
            killed = time.time()
            os.kill(victim.proc.pid, signal.SIGKILL)
            pending = set(victim_names)
            during = Samples()
            deadline = time.monotonic() + args.lease_duration * 4 + args.interval * 3
            while pending and time.monotonic() < deadline:
                batch = random.sample(sorted(pending), min(len(pending), 200))
                values = await asyncio.gather(*(sample(session, survivor, n, during) for n in batch))
                for n, v in zip(batch, values, strict=True):
                    if v is not None and v > killed:
                        pending.discard(n)
                await asyncio.sleep(0.1)
            took = time.time() - killed
            result = {
                "mode": "failover",
                "metrics": metrics,
                "victim_metrics": len(victim_names),
                "recovered": len(victim_names) - len(pending),
                "seconds": took,
                "codes": during.codes,
                "max_age_served": max(during.ages) if during.ages else float("nan"),
                "lease_duration": args.lease_duration,
                "interval": args.interval,
            }
            print(
                f"failover: kill -9 of {victim.name} ({len(victim_names)} of {metrics} metrics): "
                f"all fetched again after {took:.1f}s "
                f"(lease {args.lease_duration:g}s + interval {args.interval}s = "
                f"{args.lease_duration + args.interval:g}s); answers meanwhile {during.codes}, "
                f"oldest served {result['max_age_served']:.1f}s"
            )
            sys.stdout.flush()
            results.append(result)
    return results


async def rolling(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A rolling update as the Deployment does it (maxSurge 1, maxUnavailable 0): start a new
    replica, wait until it is ready, SIGTERM an old one; answers of every replica in service
    (a terminating pod leaves the Service's endpoints at once) are sampled throughout."""
    metrics = args.metrics[0]
    async with cluster(args, 2, metrics) as (procs, session):
        await asyncio.sleep(args.interval * 2 + args.lease_duration)
        serving = list(procs)
        samples = Samples()
        done = asyncio.Event()
        events: list[str] = []
        t0 = time.monotonic()

        async def watched(r: Replica, name: str) -> None:
            value = await sample(session, r, name, samples)
            if value is None or time.time() - value > args.interval + 2:
                what = "no value (503 or error)" if value is None else f"age {time.time() - value:.1f}s"
                events.append(f"  {time.monotonic() - t0:6.1f}s {r.name} {name}: {what}")

        async def sampler() -> None:
            while not done.is_set():
                tick = time.monotonic()
                names = [f"m{random.randrange(metrics)}" for _ in range(args.samples_per_second)]
                await asyncio.gather(*(watched(r, n) for r in list(serving) for n in names))
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        task = asyncio.create_task(sampler())
        started = time.monotonic()
        lease = (args.lease_duration, args.lease_duration * 2 / 3, args.lease_duration * 2 / 15)
        for i, old in enumerate(list(procs)):
            new = start_replica(f"replica-new-{i}", old.kubeconfig, old.log.parent, args.shards, lease)
            new.endpoint_pid = old.endpoint_pid
            procs.append(new)
            await ready(session, new)
            events.append(f"  {time.monotonic() - t0:6.1f}s {new.name} ready; SIGTERM {old.name}")
            serving.append(new)
            serving.remove(old)  # terminating: out of the endpoints
            old.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(old.proc.wait, 30)
            events.append(f"  {time.monotonic() - t0:6.1f}s {old.name} exited")
        rolled = time.monotonic() - started
        await asyncio.sleep(args.interval)  # and one interval after the last old replica left
        done.set()
        await task
    total = sum(samples.codes.values())
    fresh = sum(1 for a in samples.ages if a <= args.interval + 2)
    result = {
        "mode": "rolling",
        "metrics": metrics,
        "seconds": rolled,
        "answers": total,
        "codes": samples.codes,
        "fresh": fresh / total if total else float("nan"),
        "max_age": max(samples.ages) if samples.ages else float("nan"),
    }
    print(
        f"rolling update of 2 replicas ({metrics} metrics at {args.interval}s) took {rolled:.1f}s: "
        f"answers {samples.codes}, fresh {100 * result['fresh']:.2f} %, oldest {result['max_age']:.1f}s"
    )
    print("\n".join(events[:40]))
    return [result]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("freshness", "capacity", "failover", "rolling"))
    parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    parser.add_argument("--metrics", type=int, nargs="+", default=[2000])
    parser.add_argument(
        "--loads", type=float, nargs="+", default=[250, 500, 1000, 1500, 2000], help="fetches/s (capacity)"
    )
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--shards", type=int, default=SHARDS)
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--samples-per-second", type=int, default=20, help="per replica")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(
        {"freshness": freshness, "capacity": capacity, "failover": failover, "rolling": rolling}[args.mode](
            args
        )
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
