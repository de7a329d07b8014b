"""Fuzz the running server: >= 10,000 malformed or hostile requests, counts by status.

Starts the full server (secure port over TLS, metrics port, gRPC scaler over TLS) in a
background thread (tests/fuzz_targets.py) and drives seeded random requests at every route:
paths with fuzzed segments (percent-encoded junk, dot segments, huge numbers, unicode),
query strings (selectors with huge numbers, junk keys), headers (identity headers, junk,
long values), odd methods; and gRPC calls with fuzzed refs. A 5xx other than 503 (no fresh
value / not ready, by design), or a request that got no answer, is a defect: the run exits 1.

    python benchmarks/fuzz.py                     # 10,000 HTTP + 1,000 gRPC requests
    python benchmarks/fuzz.py --requests 20000 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote as _quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics_server import logsetup
from tests.fuzz_targets import (
    GRPC_ACCEPTABLE,
    GRPC_METHODS,
    HEADER_NAMES,
    METHODS,
    METRICS_ROUTES,
    NAMES,
    NAMESPACES,
    QUERY_KEYS,
    RES,
    RESOURCES,
    SECURE_ROUTES,
    VERSIONS,
    acceptable,
    fuzz_server,
    grpc_call,
    grpc_channel,
    raw_request,
    send,
)

JUNK = "\x00\x01\t\n\r \"#%&'()*+,-./:;<=>?@[\\]^_`{|}~é中\U0001f4a5\udcff"


def junk(rng: random.Random, max_len: int = 60) -> str:
    alphabet = rng.choice([JUNK, "abcdefghijklmnopqrstuvwxyz0123456789-.", JUNK + "abc0123456789"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def quote(value: str, safe: str = "") -> str:
    """Percent-encode; a lone surrogate becomes its raw byte (invalid UTF-8, on purpose)."""
    return _quote(value, safe=safe, errors="surrogateescape")


def text(rng: random.Random, max_len: int = 60) -> str:
    """Junk that protobuf strings can carry (no lone surrogates)."""
    return "".join(ch for ch in junk(rng, max_len) if not 0xD800 <= ord(ch) <= 0xDFFF)


def huge_number(rng: random.Random) -> str:
    return rng.choice(["", "-", "+"]) + rng.choice("19") * rng.choice([1, 19, 20, 4300, 4301, 5000, 6000])


def segment(rng: random.Random, valid: list[str]) -> str:
    kind = rng.random()
    if kind < 0.55:
        return rng.choice(valid)
    if kind < 0.65:
        return rng.choice(NAMESPACES + NAMES)
    if kind < 0.85:
        return quote(junk(rng), safe="")
    if kind < 0.93:
        return quote(junk(rng), safe="/%*.:@")
    return huge_number(rng)


def selector(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return rng.choice(["tier>", "tier<", "app=web,tier>", "tier>1,tier<"]) + huge_number(rng)
    if kind < 0.7:
        return rng.choice(
            ["tier in (3,4)", "!tier", "app=web,tier!=2", "tier", "tier notin ()", "(", "=", "a b"]
        )
    return junk(rng, 200)


def http_target(rng: random.Random, routes: tuple[str, ...]) -> str:
    template = rng.choice(routes)
    ver = "v1beta1" if "external" in template else rng.choice(["v1beta2", "v1beta1"])
    path = template.format(
        ns=segment(rng, ["shop", "default"]),
        name=segment(rng, ["cpu", "*", "stale", "failing"]),
        metric=segment(rng, ["cpu", "stale", "failing"]),
        res=segment(rng, [RES, *RESOURCES[:3]]),
        ver=segment(rng, [ver]) if rng.random() < 0.9 else rng.choice(VERSIONS),
    )
    params = []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        key = rng.choice(QUERY_KEYS[:2]) if rng.random() < 0.6 else rng.choice([*QUERY_KEYS, junk(rng, 10)])
        value = selector(rng) if "Selector" in key else junk(rng, 100)
        params.append(f"{quote(key, safe='')}={quote(value, safe='')}")
    return path + ("?" + "&".join(params) if params else "")


def http_headers(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for _ in range(rng.choice([0, 0, 1, 2, 4])):
        name = (
            rng.choice(HEADER_NAMES) if rng.random() < 0.8 else "X-" + quote(junk(rng, 20), safe="") or "X-a"
        )
        value = "".join(ch for ch in junk(rng, 300) if ch not in "\r\n" and ord(ch) < 0xD800)
        out.append((name, value))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000, help="HTTP requests (default 10,000)")
    ap.add_argument("--grpc-requests", type=int, default=1_000, help="gRPC calls (default 1,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    logsetup.configure("text", "info")  # as `serve` logs: a defect shows up as an error line
    with fuzz_server() as server:
        tls = server.client_tls()
        jobs = []
        for i in range(args.requests):
            secure = i % 3 != 2  # two thirds to the secure port, one third to the metrics port
            routes = SECURE_ROUTES if secure else METRICS_ROUTES
            method = rng.choice(METHODS)
            jobs.append(
                (
                    "secure" if secure else "metrics",
                    server.secure_port if secure else server.metrics_port,
                    tls if secure else None,
                    raw_request(method, http_target(rng, routes), http_headers(rng)),
                )
            )
        counts: dict[str, collections.Counter[str]] = {
            "secure": collections.Counter(),
            "metrics": collections.Counter(),
        }
        bad: list[str] = []

        def one(job: tuple) -> tuple[str, int | None, bytes]:
            port_name, port, ctx, payload = job
            try:
                return port_name, send(port, payload, ctx), payload
            except OSError as exc:
                return port_name, None, payload + f" [{type(exc).__name__}]".encode()

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            for port_name, status, payload in pool.map(one, jobs):
                counts[port_name][str(status) if status is not None else "no answer"] += 1
                if not acceptable(status) and len(bad) < 10:
                    bad.append(f"{status}: {payload[:200]!r}")
        http_seconds = time.perf_counter() - start

        grpc_counts: collections.Counter[str] = collections.Counter()
        start = time.perf_counter()
        with grpc_channel(server) as channel:
            for _ in range(args.grpc_requests):
                ns = rng.choice(["shop", "shop", *NAMESPACES, text(rng, 70)])
                meta = {
                    "keptnMetricName": rng.choice(["cpu", "stale", "failing", *NAMES, text(rng, 300)]),
                    "keptnMetricNamespace": rng.choice([ns, ns, "default", text(rng, 70)]),
                    "targetValue": rng.choice(
                        ["1", "0", "-1", "nan", "inf", "1e309", "2.5", "", text(rng, 20)]
                    ),
                    "activationValue": rng.choice(["0", "", "x", huge_number(rng)]),
                }
                code = grpc_call(channel, rng.choice(GRPC_METHODS), text(rng, 50), ns, meta)
                grpc_counts[code] += 1
                if code not in GRPC_ACCEPTABLE and len(bad) < 20:
                    bad.append(f"gRPC {code}: {meta}")
        grpc_seconds = time.perf_counter() - start
        alive = send(server.secure_port, raw_request("GET", "/healthz", []), tls) == 200 and (
            send(server.metrics_port, raw_request("GET", "/healthz", []), None) == 200
        )

    print(
        f"HTTP requests: {args.requests} in {http_seconds:.1f} s (seed {args.seed}, {args.workers} workers)"
    )
    for port_name, counter in counts.items():
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
        print(f"  {port_name} port: {shown}")
    print(f"gRPC calls: {args.grpc_requests} in {grpc_seconds:.1f} s")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(grpc_counts.items())))
    print(f"server still answering /healthz on both ports: {alive}")
    if bad:
        print("defects (first ones):")
        for line in bad:
            print("  " + line)
    return 0 if alive and not bad else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
