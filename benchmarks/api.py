"""Benchmark of the aggregated metrics API (issue 3).

1. GET of one Object metric through the whole stack (TLS, front-proxy client certificate,
   X-Remote-* headers, SubjectAccessReview answered once then cached) at a fixed
   concurrency, against a bare aiohttp TLS server returning the same bytes, in the same run
   (alternating rounds): requests/s, p50/p99 latency and the throughput ratio.
2. The whole stack at a fixed 1,000 requests/s (open loop; latency measured from the
   scheduled send time, so a stall is not hidden): p50/p99.
3. Discovery with 10,000 KeptnMetrics: the first answer after a change (list built) and
   the following ones (cached), in process and over HTTPS.

Servers and the load generator run in separate processes (uvloop when installed).

    python benchmarks/api.py                # ~45 s
    python benchmarks/api.py --duration 3   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJ = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/keptnmetrics.metrics.keptn.sh/cpu/cpu"
DISCOVERY = "/apis/custom.metrics.k8s.io/v1beta2"
FRONT_CN = "front-proxy-client"


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def make_pki(d: Path) -> dict[str, str]:
    import trustme

    server_ca, front_ca = trustme.CA(), trustme.CA()
    files = {k: str(d / f"{k}.pem") for k in ("server", "server_ca", "front_ca", "client")}
    server_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        files["server"]
    )
    server_ca.cert_pem.write_to_path(files["server_ca"])
    front_ca.cert_pem.write_to_path(files["front_ca"])
    front_ca.issue_cert(common_name=FRONT_CN).private_key_and_cert_chain_pem.write_to_path(files["client"])
    return files


def build_world(n_extra: int = 0) -> tuple[Any, Any]:
    from metrics_server.model import ObjectKey, parse_metric
    from metrics_server.state import MetricStates
    from metrics_server.store.base import IndexedStore

    store, states = IndexedStore(), MetricStates()

    def add(ns: str, name: str, value: float) -> None:
        store.apply(
            parse_metric(
                {
                    "apiVersion": "metrics.keptn.sh/v1",
                    "kind": "KeptnMetric",
                    "metadata": {"namespace": ns, "name": name, "labels": {"app": "web"}},
                    "spec": {"provider": {"name": "prom"}, "query": "up", "fetchIntervalSeconds": 3600},
                }
            )
        )
        st = states.ensure(ObjectKey(ns, name), 3600)
        st.value, st.value_text, st.last_success = value, str(value), time.time()

    add("shop", "cpu", 1.5)
    for i in range(n_extra):
        add(f"ns{i % 100}", f"metric-{i:05d}", float(i))
    store.mark_synced()
    return store, states


# -- servers (child processes) -------------------------------------------------------------
async def _serve_control(conn: Any) -> None:
    """Answer "cpu" with this process's CPU time until told to stop."""
    while True:
        if conn.poll():
            if conn.recv() != "cpu":
                return
            conn.send(time.process_time())
        await asyncio.sleep(0.05)


def serve_stack(files: dict[str, str], n_extra: int, conn: Any) -> None:
    async def main() -> None:
        from aiohttp import web
        from kubernetes_asyncio import client

        from apiservice.auth import KubeReviewClient
        from apiservice.flags import ApiOptions
        from apiservice.server import start_api

        async def sar(request: web.Request) -> web.Response:
            body = await request.json()
            body["status"] = {"allowed": True}
            return web.json_response(body, status=201)

        kube_app = web.Application()
        kube_app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
        kube_runner = web.AppRunner(kube_app, access_log=None)
        await kube_runner.setup()
        site = web.TCPSite(kube_runner, "127.0.0.1", 0)
        await site.start()
        kube_port = kube_runner.addresses[0][1]
        reviews = KubeReviewClient(
            client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{kube_port}"))
        )
        store, states = build_world(n_extra)
        opts = ApiOptions(
            secure_port=0,
            grpc_port=0,
            bind_address="127.0.0.1",
            tls_cert_file=files["server"],
            tls_private_key_file=files["server"],
            requestheader_client_ca_file=files["front_ca"],
            requestheader_allowed_names=[FRONT_CN],
            authorization_mode="Webhook",
            cert_reload_interval=0,
        )
        runner = await start_api(store, states, opts, kube_auth=reviews)
        # in-process discovery timings (10,000 metrics when n_extra is set)
        disc: dict[str, float] = {}
        if n_extra:
            api = runner.api
            t = time.perf_counter()
            api.custom_discovery("v1beta2")
            disc["cold_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            for _ in range(1000):
                api.custom_discovery("v1beta2")
            disc["warm_ms"] = time.perf_counter() - t
            api._discovery.clear()
        conn.send((runner.port, disc))
        await _serve_control(conn)
        await runner.stop(grace=0.5)
        await reviews.close()
        await kube_runner.cleanup()

    _loop().run_until_complete(main())


def serve_bare(files: dict[str, str], body: bytes, conn: Any) -> None:
    async def main() -> None:
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(files["server"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(files["front_ca"])
        app = web.Application()
        app.router.add_get(OBJ, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        conn.send((runner.addresses[0][1], {}))
        await _serve_control(conn)
        await runner.cleanup()

    _loop().run_until_complete(main())


# -- load generator (child process) --------------------------------------------------------
def client_ctx(files: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=files["server_ca"])
    ctx.load_cert_chain(files["client"])
    return ctx


def load(files: dict[str, str], url: str, concurrency: int, duration: float, rate: float, out: Any) -> None:
    async def main() -> dict[str, Any]:
        import aiohttp

        headers = {
            "X-Remote-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            "X-Remote-Group": "system:serviceaccounts",
            "Accept": "application/vnd.kubernetes.protobuf, */*",
        }
        conn = aiohttp.TCPConnector(ssl=client_ctx(files), limit=concurrency)
        latencies: list[float] = []
        errors = 0
        async with aiohttp.ClientSession(connector=conn, headers=headers) as s:

            async def one(sent: float) -> None:
                nonlocal errors
                async with s.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - sent)

            # warm up connections
            await asyncio.gather(*(one(time.perf_counter()) for _ in range(concurrency)))
            latencies.clear()
            start = time.perf_counter()
            end = start + duration
            if rate <= 0:  # closed loop: `concurrency` workers back to back

                async def worker() -> None:
                    while time.perf_counter() < end:
                        await one(time.perf_counter())

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            else:  # open loop at `rate` requests/s: worker k owns the slots k, k + c, k + 2c, ...
                interval = 1.0 / rate

                async def paced(k: int) -> None:
                    i = k
                    while True:
                        due = start + i * interval
                        if due >= end:
                            return
                        delay = due - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        await one(due)  # a late send counts its delay in the latency
                        i += concurrency

                await asyncio.gather(*(paced(k) for k in range(concurrency)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        return {
            "rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "n": len(latencies),
            "total": len(latencies) + concurrency,
            "errors": errors,
        }

    out.send(_loop().run_until_complete(main()))


def run_load(
    files: dict[str, str], port: int, path: str, concurrency: int, duration: float, rate: float = 0
) -> dict[str, Any]:
    parent, child = mp.Pipe()
    p = mp.Process(
        target=load, args=(files, f"https://127.0.0.1:{port}{path}", concurrency, duration, rate, child)
    )
    p.start()
    result = parent.recv()
    p.join()
    return result


def start_server(target: Any, *args: Any) -> tuple[Any, Any, int, dict[str, float]]:
    parent, child = mp.Pipe()
    p = mp.Process(target=target, args=(*args, child))
    p.start()
    if not parent.poll(120):
        p.terminate()
        raise SystemExit("the server process did not start")
    port, extra = parent.recv()
    return p, parent, port, extra


def server_cpu(conn: Any) -> float:
    conn.send("cpu")
    return float(conn.recv())


def stop_server(p: Any, conn: Any) -> None:
    conn.send("stop")
    p.join(10)


def fetch(files: dict[str, str], port: int, path: str, n: int = 1) -> tuple[bytes, list[float]]:
    async def main() -> tuple[bytes, list[float]]:
        import aiohttp

        conn = aiohttp.TCPConnector(ssl=client_ctx(files))
        times = []
        body = b""
        async with aiohttp.ClientSession(connector=conn, headers={"X-Remote-User": "bench"}) as s:
            async with s.get(f"https://127.0.0.1:{port}/healthz") as r:  # TLS handshake not timed
                await r.read()
            for _ in range(n):
                t = time.perf_counter()
                async with s.get(f"https://127.0.0.1:{port}{path}") as r:
                    body = await r.read()
                    assert r.status == 200, body
                times.append(time.perf_counter() - t)
        return body, times

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--metrics", type=int, default=10000, help="KeptnMetrics for the discovery test")
    args = ap.parse_args()
    mp.set_start_method("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_pki(Path(tmp))
        stack = start_server(serve_stack, files, 0)
        body, _ = fetch(files, stack[2], OBJ)
        bare = start_server(serve_bare, files, body)
        check, _ = fetch(files, bare[2], OBJ)
        assert check == body
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
            f"{args.rounds} x {args.duration:.0f} s rounds; body {len(body)} bytes"
        )
        results: dict[str, list[dict[str, Any]]] = {"bare": [], "stack": []}
        for _ in range(args.rounds):
            for name, srv in (("bare", bare), ("stack", stack)):
                before = server_cpu(srv[1])
                r = run_load(files, srv[2], OBJ, args.concurrency, args.duration)
                r["cpu_us"] = (server_cpu(srv[1]) - before) / r["total"] * 1e6
                results[name].append(r)
        stop_server(*bare[:2])
        summary = {}
        for name, rs in results.items():
            summary[name] = {
                "rps": statistics.mean(r["rps"] for r in rs),
                "p50_ms": statistics.mean(r["p50_ms"] for r in rs),
                "p99_ms": statistics.mean(r["p99_ms"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "cpu_us": statistics.mean(r["cpu_us"] for r in rs),
            }
            s = summary[name]
            print(
                f"{name:5s}: {s['rps']:7.0f} req/s  p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
                f"server CPU {s['cpu_us']:4.0f} us/req  errors {s['errors']}"
            )
        ratio = summary["stack"]["rps"] / summary["bare"]["rps"]
        capacity = summary["bare"]["cpu_us"] / summary["stack"]["cpu_us"]
        print(
            f"ratio stack/bare: measured throughput {ratio:.2f}, server capacity (CPU per request) "
            f"{capacity:.2f} (target >= 0.8)"
        )
        fixed = run_load(files, stack[2], OBJ, args.concurrency, args.duration, rate=args.rate)
        print(
            f"stack at {args.rate:.0f} req/s (open loop): achieved {fixed['rps']:.0f} req/s, "
            f"p50 {fixed['p50_ms']:.2f} ms, p99 {fixed['p99_ms']:.2f} ms (target p99 < 5 ms), "
            f"errors {fixed['errors']}"
        )
        stop_server(*stack[:2])

        big = start_server(serve_stack, files, args.metrics)
        cold_body, cold = fetch(files, big[2], DISCOVERY, 1)
        _, warm = fetch(files, big[2], DISCOVERY, 200)
        warm.sort()
        disc = big[3]
        print(
            f"discovery with {args.metrics + 1} KeptnMetrics ({len(cold_body)} bytes): in process "
            f"{disc['cold_ms']:.2f} ms to build, {disc['warm_ms']:.3f} ms cached; "
            f"over HTTPS (open connection) first "
            f"{cold[0] * 1000:.2f} ms, then p50 {warm[100] * 1000:.2f} ms p99 {warm[197] * 1000:.2f} ms "
            f"(target < 20 ms)"
        )
        stop_server(*big[:2])


if __name__ == "__main__":
    main()
