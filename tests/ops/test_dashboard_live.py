"""The dashboard and the alerts, run against a real Prometheus scraping two running servers.

Two `keptn-metrics serve` processes, exactly as shipped: one in local mode (a folder of
manifests), one in Kubernetes mode against the API stand-in (leader Lease, status writes:
series that only exist there). A real Prometheus scrapes both every second with the
ServiceMonitor's settings (job "keptn-metrics", honor_labels, the target's namespace label)
and evaluates the shipped rules. Their KeptnMetrics fetch from that same Prometheus (types
prometheus and openmetrics), one of them always fails, and the test sends API requests.

Then every dashboard variable, every panel query (variables substituted as Grafana does) and
every alert is checked against it: no typo, no metric or label that does not exist.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.kube_fixtures import KubeEnv, metric_doc
from tests.ops.rules import (
    JOB,
    alerts,
    dashboard,
    panel_queries,
    prometheus_rule,
    substitute,
    variable_queries,
)
from tests.prometheus_server import free_port, require_prometheus, run_prometheus

pytestmark = [pytest.mark.prometheus, pytest.mark.kube]
ROOT = Path(__file__).resolve().parents[2]
APPS = "apps"  # the local server's KeptnMetrics live here; the target's own namespace is keptn-system
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval, with margin


def local_manifests(prometheus_url: str) -> str:
    providers = [
        ("prom", "prometheus", prometheus_url),
        ("prom-exposition", "openmetrics", f"{prometheus_url}/metrics"),
    ]
    metrics = [
        ("scraped-targets", "prom", "count(up) or vector(0)"),  # a value before the first scrape too
        ("build-info", "prom-exposition", "prometheus_build_info"),
        ("broken", "prom", "sum("),  # a PromQL syntax error: every fetch fails
    ]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {"type": kind, "targetServer": url},
        }
        for name, kind, url in providers
    ]
    docs += [
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {"provider": {"name": provider}, "query": query, "fetchIntervalSeconds": 1},
        }
        for name, provider, query in metrics
    ]
    return yaml.safe_dump_all(docs)


SCRAPER = "system:serviceaccount:keptn-system:keptn-metrics-scraper"
SCRAPER_TOKEN = "token-of-keptn-metrics-scraper"
OTHER_TOKEN = "token-of-a-service-account-without-the-binding"
COMPONENT = ROOT / "deploy" / "components" / "service-monitor"


def scrape_config(targets: dict[str, int]) -> str:
    """What the ServiceMonitor makes the operator generate, reduced to static targets: the
    scraper ServiceAccount's token as bearer token, honor_labels, the target's namespace."""
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["keptn-metrics.rules.yaml"],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "honor_labels": True,
                    "authorization": {"type": "Bearer", "credentials": SCRAPER_TOKEN},
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {"namespace": "keptn-system", "pod": f"keptn-metrics-{name}"},
                        }
                        for name, port in targets.items()
                    ],
                }
            ],
        }
    )


async def start_serve(args: list[str], env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "metrics_server",
        "serve",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def ports() -> dict[str, int]:
    return {"metrics": free_port(), "secure": free_port(), "grpc": free_port()}


def port_args(p: dict[str, int], cert_dir: Path) -> list[str]:
    return [
        "--bind-address", "127.0.0.1", "--metrics-port", str(p["metrics"]), "--secure-port", str(p["secure"]),
        "--grpc-port", str(p["grpc"]), "--cert-dir", str(cert_dir), "--anonymous-auth",
        "--authorization-mode", "AlwaysAllow", "--shutdown-delay", "0", "--log-format", "json",
    ]  # fmt: skip


class Stand:
    """The running servers, the Prometheus scraping them, and a client for both."""

    def __init__(self, prometheus_url: str, servers: dict[str, dict[str, int]], kube_namespace: str) -> None:
        #: SubjectAccessReview specs the stand-in answered (the metrics port's --keda-auth)
        self.access_reviews: list[dict[str, Any]] = []
        self.prometheus_url = prometheus_url
        self.servers = servers
        self.kube_namespace = kube_namespace
        self.http = aiohttp.ClientSession()
        self.insecure = ssl.create_default_context()
        self.insecure.check_hostname = False
        self.insecure.verify_mode = ssl.CERT_NONE

    async def query(self, expr: str) -> dict[str, Any]:
        async with self.http.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}) as resp:
            body: dict[str, Any] = await resp.json()
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]  # type: ignore[no-any-return]

    async def label_values(self, selector: str, label: str) -> list[str]:
        async with self.http.get(
            f"{self.prometheus_url}/api/v1/label/{label}/values", params={"match[]": selector}
        ) as resp:
            body = await resp.json()
        assert body["status"] == "success", f"label_values({selector}, {label}): {body.get('error')}"
        return list(body["data"])

    async def traffic(self) -> None:
        """API requests on both servers: values (200), a failing metric (503), an unknown one (404)."""
        asks = [
            ("local", APPS, "scraped-targets"),
            ("local", APPS, "broken"),
            ("local", APPS, "missing"),
            ("kube", self.kube_namespace, "queue"),
        ]
        for server, ns, name in asks:
            p = self.servers[server]
            resource = "keptnmetrics.metrics.keptn.sh"
            custom = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/{name}"
            async with self.http.get(f"https://127.0.0.1:{p['secure']}{custom}", ssl=self.insecure) as resp:
                await resp.read()
            async with self.http.get(f"http://127.0.0.1:{p['metrics']}/api/v1/metrics/{ns}/{name}") as resp:
                await resp.read()

    async def wait_ready(self, procs: list[asyncio.subprocess.Process], limit: float = 30.0) -> None:
        """Until both servers answer /readyz on both ports (a server that exits fails the test)."""
        deadline = asyncio.get_running_loop().time() + limit
        pending = {name: p for name, p in self.servers.items()}
        while pending:
            for proc in procs:
                if proc.returncode is not None:
                    out = (await proc.communicate())[0].decode()
                    raise AssertionError(f"serve exited with {proc.returncode}: {out[-3000:]}")
            for name, p in list(pending.items()):
                try:
                    async with (
                        self.http.get(f"http://127.0.0.1:{p['metrics']}/readyz") as a,
                        self.http.get(f"https://127.0.0.1:{p['secure']}/readyz", ssl=self.insecure) as b,
                    ):
                        if a.status == b.status == 200:
                            del pending[name]
                except aiohttp.ClientError:
                    pass
            assert asyncio.get_running_loop().time() < deadline, f"not ready: {sorted(pending)}"
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
async def stand(kube: KubeEnv, tmp_path: Path) -> AsyncIterator[Stand]:
    require_prometheus()
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    servers = {"local": ports(), "kube": ports()}
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "metrics.yaml").write_text(local_manifests(prom_url))

    ns = kube.namespace
    await kube.create(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "prom"},
            "spec": {"type": "prometheus", "targetServer": prom_url},
        }
    )
    await kube.create(metric_doc("queue", provider="prom", query="vector(3)", interval=1))

    rules = yaml.safe_dump(prometheus_rule()["spec"], sort_keys=False)
    tsdb = tmp_path / "tsdb"
    tsdb.mkdir()
    config = scrape_config({name: p["metrics"] for name, p in servers.items()})
    procs: list[asyncio.subprocess.Process] = []
    with run_prometheus(tsdb, config_text=config, port=prom_port, files={"keptn-metrics.rules.yaml": rules}):
        procs.append(
            await start_serve(
                ["--manifests", str(manifests), *port_args(servers["local"], tmp_path / "certs-local")]
            )
        )
        kube_args = [
            *(["--keda-auth"] if kube.standin is not None else []),
            "--kubeconfig", kube.kubeconfig, "--namespaces", ns, "--server-namespace", ns,
            "--leader-election-namespace", ns, "--leader-election-lease-duration", "3",
            "--leader-election-renew-deadline", "2", "--leader-election-retry-period", "0.5",
        ]  # fmt: skip
        procs.append(
            await start_serve(
                [*kube_args, *port_args(servers["kube"], tmp_path / "certs-kube")], {"POD_NAME": "replica-a"}
            )
        )
        result = Stand(prom_url, servers, ns)
        if kube.standin is not None:  # a real cluster reviews with its own RBAC
            install_scraper_identity(kube.standin, result.access_reviews)
        try:
            await result.wait_ready(procs)
            yield result
        finally:
            await result.close()
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def install_scraper_identity(standin: Any, seen: list[dict[str, Any]]) -> None:
    """The service-monitor component's RBAC, applied as an admin would, and its ServiceAccount's
    token known to TokenReview; SubjectAccessReviews stay answered by the stand-in's RBAC
    (recorded in `seen`). A second service account without the binding, for the negative case."""
    from tests.rbac import service_account_user

    docs = yaml.safe_load_all((COMPONENT / "scraper-rbac.yaml").read_text(encoding="utf-8"))
    standin.install(*(d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")))
    standin.add_user(SCRAPER_TOKEN, service_account_user("keptn-system", "keptn-metrics-scraper"))
    standin.add_user(OTHER_TOKEN, service_account_user("monitoring", "someone-else"))
    review = standin.access_reviewer

    def recorded(spec: dict[str, Any]) -> tuple[bool, str]:
        seen.append(spec)
        answer: tuple[bool, str] = review(spec)
        return answer

    standin.access_reviewer = recorded


def has_data(data: dict[str, Any]) -> bool:
    """At least one sample with a finite value (NaN from an empty histogram does not count)."""
    results = data["result"]
    if data["resultType"] == "scalar":
        return math.isfinite(float(results[1]))
    return any(math.isfinite(float(r["value"][1])) for r in results)


async def eventually(
    check: Callable[[], Awaitable[list[str]]], stand: Stand, limit: float = 90.0
) -> list[str]:
    """Re-run `check` (which returns what is still missing) while sending API traffic, up to `limit`."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        await stand.traffic()
        missing = await check()
        if not missing or asyncio.get_running_loop().time() > deadline:
            return missing
        await asyncio.sleep(1.0)


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"[^"]*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def selectors(expr: str) -> list[tuple[str, list[str]]]:
    """(metric name, label names matched on) of every `name{...}` selector in an expression."""
    return [(m.group(1), MATCHER.findall(m.group(2))) for m in SELECTOR.finditer(expr)]


async def test_every_panel_variable_and_alert_query_returns_data(stand: Stand) -> None:
    board = dashboard()
    values = {"job": JOB, "instance": ".*", "__rate_interval": RATE_INTERVAL}

    # 1. the variables, as Grafana resolves them (label_values -> /api/v1/label/<l>/values?match[]=)
    expected = {
        "job": {JOB},
        "namespace": {APPS, stand.kube_namespace},  # honor_labels keeps the KeptnMetric's namespace
        "name": {"scraped-targets", "build-info", "broken"},  # of namespace apps
    }

    async def variables_missing() -> list[str]:
        missing = []
        for name, selector in variable_queries(board):
            found = set(await stand.label_values(substitute(selector, {**values, "namespace": APPS}), name))
            if not found or (name in expected and found != expected[name]):
                missing.append(f"{name}: {sorted(found)}")
        return missing

    assert await eventually(variables_missing, stand) == []
    values.update(namespace=APPS, name="scraped-targets")

    # 2. every panel's query returns data
    queries = [(title, substitute(expr, values)) for title, expr in panel_queries(board)]
    assert len(queries) >= 30

    async def panels_missing() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries if not has_data(await stand.query(expr))]

    assert await eventually(panels_missing, stand) == []

    # 3. every alert: the expression evaluates; each metric it selects exists on our job; every
    #    label it matches on or groups by exists on those series
    async def alerts_missing() -> list[str]:
        missing = []
        for rule in alerts():
            expr = rule["expr"]
            await stand.query(expr)  # valid PromQL (raises otherwise), firing or not
            labels_seen: set[str] = set()
            for metric, matched in selectors(expr):
                series = (await stand.query(f'{metric}{{job="{JOB}"}}'))["result"]
                if not series:
                    missing.append(f"{rule['alert']}: no series {metric}")
                labels_seen |= {label for s in series for label in s["metric"]}
                missing += [f"{rule['alert']}: {metric} has no label {label}" for label in matched if not any(
                    label in s["metric"] for s in series)]  # fmt: skip
            for group in GROUPING.findall(expr):
                for label in filter(None, (g.strip() for g in group.split(","))):
                    if label not in labels_seen:
                        missing.append(f"{rule['alert']}: groups by {label}, which no series has")
        return missing

    assert await eventually(alerts_missing, stand) == []

    # 4. Prometheus evaluates every shipped rule without an error (e.g. many-to-many matching)
    async with stand.http.get(f"{stand.prometheus_url}/api/v1/rules") as resp:
        groups = (await resp.json())["data"]["groups"]
    evaluated = [r for g in groups for r in g["rules"]]
    assert len(evaluated) == len(alerts())
    assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []

    # 5. on real series, an alert is active exactly where the stand provokes it: "broken" never
    #    has a value (KeptnMetricNoValue for it alone); leadership, scraping, freshness of the
    #    healthy metrics, certificates, 5xx and the write budget are fine
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in evaluated:
        by_name.setdefault(r["name"], []).append(r)
    no_value = [a["labels"] for r in by_name["KeptnMetricNoValue"] for a in r.get("alerts", [])]
    assert {(a["namespace"], a["name"]) for a in no_value} == {(APPS, "broken")}
    healthy = [
        "KeptnMetricsDown",
        "KeptnMetricsNoLeader",
        "KeptnMetricStale",
        "KeptnMetricsAPIErrors",
        "KeptnMetricsStatusWriteBudgetExhausted",
        "KeptnMetricsCertificateExpiry",
    ]
    assert [(name, r["state"]) for name in healthy for r in by_name[name] if r["state"] != "inactive"] == []


async def test_the_scraper_identity_is_all_the_metrics_port_needs(stand: Stand, kube: KubeEnv) -> None:
    """The ServiceMonitor's token and the component's ClusterRole (applied to the stand-in's
    RBAC) satisfy the metrics port's authentication, and nothing less does: no token, an
    unknown token, another service account's token."""
    if kube.standin is None:
        pytest.skip("reviews are answered by the real cluster's RBAC")
    port = stand.servers["kube"]["metrics"]

    async def scraped() -> list[str]:
        up = (await stand.query(f'up{{job="{JOB}", pod="keptn-metrics-kube"}} == 1'))["result"]
        return [] if up else ["kube target not up"]

    assert await eventually(scraped, stand) == []
    async with stand.http.get(f"http://127.0.0.1:{port}/metrics") as anonymous:
        anonymous_status = anonymous.status
    async with stand.http.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer not-a-token"}
    ) as stranger:
        stranger_status = stranger.status
    async with stand.http.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
    ) as unbound:
        unbound_status = unbound.status
    metrics_reviews = [s for s in stand.access_reviews if "nonResourceAttributes" in s]
    assert anonymous_status in (401, 403) and stranger_status == 401 and unbound_status == 403
    assert {s["user"] for s in metrics_reviews} == {SCRAPER, "system:serviceaccount:monitoring:someone-else"}
    assert all(s["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"} for s in metrics_reviews)
