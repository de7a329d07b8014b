"""The self-metrics the alerts and the dashboard rely on, read back from the /metrics exposition."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from metrics_server import selfmetrics
from metrics_server.kube.leader import LeaderElector
from metrics_server.kube.status_writer import StatusWriter
from metrics_server.model import ObjectKey, parse_metric
from metrics_server.state import MetricStates
from tests.kube_fixtures import KubeEnv, metric_doc


def samples(states: MetricStates | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition /metrics serves: (name, sorted labels) -> value."""
    text = selfmetrics.exposition(states or MetricStates()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metric: str, states: MetricStates | None = None, **labels: str) -> float | None:
    return samples(states).get((metric, tuple(sorted(labels.items()))))


def test_schedule_lag_is_also_measured_in_fetch_intervals() -> None:
    def bucket(le: str) -> float:
        return REGISTRY.get_sample_value("keptn_metrics_schedule_lag_intervals_bucket", {"le": le}) or 0.0

    before = {le: bucket(le) for le in ("0.5", "1.0", "2.0")}
    selfmetrics.observe_schedule_lag(15.0, 10.0)  # a 10 s metric started 15 s late: 1.5 intervals
    assert bucket("1.0") - before["1.0"] == 0
    assert bucket("2.0") - before["2.0"] == 1
    selfmetrics.observe_schedule_lag(2.0, 10.0)
    assert bucket("0.5") - before["0.5"] == 1


def test_each_metric_exports_the_age_past_which_it_is_not_served() -> None:
    states = MetricStates()
    cpu = states.ensure(ObjectKey("apps", "cpu"), 10)
    cpu.value, cpu.value_text, cpu.last_success = 1.0, "1", time.time() - 4
    states.ensure(ObjectKey("apps", "never"), 30)  # no value yet: a bound, no age
    assert value("keptn_metric_staleness_bound_seconds", states, namespace="apps", name="cpu") == 30
    assert value("keptn_metric_staleness_bound_seconds", states, namespace="apps", name="never") == 90
    assert value("keptn_metric_value_age_seconds", states, namespace="apps", name="never") is None
    age = value("keptn_metric_value_age_seconds", states, namespace="apps", name="cpu")
    assert age is not None and age >= 4
    states.max_staleness = 42.0  # --max-staleness wins over 3 x interval
    assert value("keptn_metric_staleness_bound_seconds", states, namespace="apps", name="cpu") == 42
    states.follower_grace = 60.0  # a standby adopting status allows for the refresh interval
    from metrics_server.state import rfc3339

    written = {"value": "5", "lastUpdated": rfc3339(time.time() - 20), "errMsg": ""}
    follower = states.load_status(
        parse_metric(
            {**metric_doc("adopted"), "metadata": {"name": "adopted", "namespace": "apps"}, "status": written}
        )
    )
    assert follower.staleness_grace == 60.0
    assert value("keptn_metric_staleness_bound_seconds", states, namespace="apps", name="adopted") == 102


def test_certificate_expiry_of_the_serving_certificate_and_client_cas(tmp_path: Path) -> None:
    import trustme

    from apiservice.certs import CertificateAuthorities, TlsManager

    ca = trustme.CA()
    leaf = ca.issue_cert("keptn-metrics.keptn-system.svc", not_after=dt.datetime(2031, 5, 4, tzinfo=dt.UTC))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    client_ca = tmp_path / "client-ca.crt"
    ca.cert_pem.write_to_path(str(client_ca))
    TlsManager(str(cert), str(key), CertificateAuthorities(), client_ca_file=str(client_ca))
    expiry = "keptn_metrics_certificate_expiry_timestamp_seconds"
    assert value(expiry, certificate="serving") == dt.datetime(2031, 5, 4, tzinfo=dt.UTC).timestamp()
    ca_not_after = ca._certificate.not_valid_after_utc.timestamp()  # trustme exposes no public accessor
    assert value(expiry, certificate="client-ca") == ca_not_after
    assert value(expiry, certificate="requestheader-client-ca") is None  # no bundle: no series


@pytest.mark.kube
async def test_status_writer_reports_budget_queue_and_results(kube: KubeEnv) -> None:
    writer = StatusWriter(await kube.new_client(), qps=7, burst=1)

    def requests(kind: str, result: str) -> float:
        return value("keptn_metrics_status_write_requests_total", kind=kind, result=result) or 0.0

    ok_before, gone_before = requests("status", "ok"), requests("status", "not_found")
    assert value("keptn_metrics_status_write_budget_qps") == 7
    metric = parse_metric(await kube.create(metric_doc("m1")))
    ghost = parse_metric({**metric_doc("ghost"), "metadata": {"name": "ghost", "namespace": kube.namespace}})
    states = MetricStates()
    for m in (metric, ghost):
        state = states.ensure(m.key, 10)
        state.value, state.value_text, state.last_success = 1.0, "1", time.time()
        state.last_attempt = time.time()
        await writer.publish(m, state, changed=True)
    assert value("keptn_metrics_status_write_queue") == 2  # waiting: the workers have not started
    writer.start()
    try:
        await writer.flush()
    finally:
        await writer.stop()
    assert value("keptn_metrics_status_write_queue") == 0
    assert requests("status", "ok") - ok_before == 1
    assert requests("status", "not_found") - gone_before == 1


@pytest.mark.kube
async def test_lease_held_is_1_for_the_holder_0_while_campaigning_and_gone_after_stop(kube: KubeEnv) -> None:
    holder_leads, campaigner_leads = asyncio.Event(), asyncio.Event()
    holder = LeaderElector(
        await kube.new_client(),
        kube.namespace,
        "gauge-lease",
        identity="other-replica",
        lease_duration=3,
        renew_deadline=2,
        retry_period=0.2,
        on_started_leading=holder_leads.set,
    )
    holder.start()
    await asyncio.wait_for(holder_leads.wait(), 10)
    assert value("keptn_metrics_lease_held", lease="gauge-lease") == 1
    await holder.stop(release=False)  # another process holds it now, as far as the gauge goes
    assert value("keptn_metrics_lease_held", lease="gauge-lease") is None

    campaigner = LeaderElector(
        await kube.new_client(),
        kube.namespace,
        "gauge-lease",
        identity="me",
        lease_duration=3,
        renew_deadline=2,
        retry_period=0.2,
        on_started_leading=campaigner_leads.set,
    )
    campaigner.start()  # the lease still looks held (not released, not yet expired)
    await asyncio.sleep(0.5)
    assert not campaigner.leading
    assert value("keptn_metrics_lease_held", lease="gauge-lease") == 0
    await asyncio.wait_for(campaigner_leads.wait(), 10)  # once the holder's lease expires
    assert value("keptn_metrics_lease_held", lease="gauge-lease") == 1
    await campaigner.stop()
    assert value("keptn_metrics_lease_held", lease="gauge-lease") is None


async def test_keda_rest_requests_are_counted_with_the_other_apis(aiohttp_client: Any) -> None:
    from metrics_server.http_server import MetricsPortApp
    from metrics_server.store.base import IndexedStore

    def requests(code: str) -> float:
        return value("keptn_metrics_api_requests_total", route="keda/rest", code=code) or 0.0

    before = requests("404")
    client = await aiohttp_client(MetricsPortApp(IndexedStore(), MetricStates()).build())
    assert (await client.get("/api/v1/metrics/apps/missing")).status == 404
    assert requests("404") - before == 1


def reference_exposition(states: MetricStates, now: float) -> bytes:
    """The per-KeptnMetric families as prometheus_client renders them (the format's reference)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    from metrics_server.state import staleness_bound

    families = [GaugeMetricFamily(name, help_text, labels=["namespace", "name"])
                for name, help_text in selfmetrics.PER_METRIC_FAMILIES]  # fmt: skip
    for state in states.values():
        key = [state.key.namespace, state.key.name]
        if state.value is not None:
            families[0].add_metric(key, state.value)
        if state.age(now) is not None:
            families[1].add_metric(key, state.age(now))  # type: ignore[arg-type]
        families[2].add_metric(key, 1.0 if state.error else 0.0)
        families[3].add_metric(key, staleness_bound(state, states.max_staleness))

    class Families:
        def collect(self) -> Any:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())  # type: ignore[arg-type]
    return generate_latest(registry)


def test_per_metric_exposition_is_exactly_what_prometheus_client_renders() -> None:
    states = MetricStates()
    values = [0.0, -1.5, 1e21, 1.5e-7, 46358528.0, 12345.678, 7.0]
    names = ["cpu", 'we"ird', "back\\slash", "new\nline", "queue-depth", "a.b", "x"]
    now = time.time()
    for i, (name, number) in enumerate(zip(names, values, strict=True)):
        state = states.ensure(ObjectKey(f"team-{i % 2}", name), 5 + i)
        state.value, state.value_text, state.last_success = number, str(number), now - i * 1.25
        state.error = "boom" if i % 3 == 0 else ""
    states.ensure(ObjectKey("team-0", "never-fetched"), 10)
    states.max_staleness = None
    assert selfmetrics.per_metric_exposition(states, now) == reference_exposition(states, now)
    states.max_staleness = 17.5
    assert selfmetrics.per_metric_exposition(states, now) == reference_exposition(states, now)
    assert selfmetrics.per_metric_exposition(MetricStates(), now) == reference_exposition(MetricStates(), now)


def reference_upstream_gauges(states: MetricStates, reserved: set[str]) -> bytes:
    """Upstream's gauge per KeptnMetric through prometheus_client's families (the reference)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    families: dict[str, list[tuple[str, str, float | None]]] = {}
    for state in states.values():
        gauge = selfmetrics.upstream_gauge_name(state.key.name)
        if gauge is not None and gauge not in reserved:
            families.setdefault(gauge, []).append((state.key.namespace, state.key.name, state.value))
    rendered = []
    for gauge in sorted(families):
        members = sorted(families[gauge], key=lambda m: (m[0], m[1]))
        family = GaugeMetricFamily(
            gauge, ", ".join(sorted({n for _, n, _ in members})), labels=["namespace", "name"]
        )
        for namespace, name, number in members:
            if number is not None:
                family.add_metric([namespace, name], number)
        rendered.append(family)

    class Families:
        def collect(self) -> Any:
            return iter(rendered)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())  # type: ignore[arg-type]
    return generate_latest(registry)


def test_upstream_gauges_are_exactly_what_prometheus_client_renders() -> None:
    states = MetricStates()
    cases = [
        ("apps", "my-app.rps", 3.5),
        ("shop", "my-app.rps", 1e-9),  # the same name in another namespace: one family, two series
        ("apps", "my_app_rps", 2.0),  # another name, the same gauge name
        ("apps", "queue-depth", None),  # no value yet: HELP and TYPE only
        ("apps", "5xx-rate", 1.0),  # no valid gauge name: not exposed
        ("apps", "keptn_metric_value", 9.0),  # taken by our own family: skipped
        ("apps", "déjà-vu", 4.0),
        ("apps", "a" * 200, 12345678.9),
    ]
    for namespace, name, number in cases:
        state = states.ensure(ObjectKey(namespace, name), 10)
        if number is not None:
            state.value, state.value_text, state.last_success = number, str(number), time.time()
    reserved = {"keptn_metric_value"}
    direct = selfmetrics.upstream_gauges_exposition(states, reserved)
    assert direct == reference_upstream_gauges(states, reserved)
    assert b"# HELP my_app_rps my-app.rps, my_app_rps\n" in direct
    assert b"keptn_metric_value{" not in direct and b"5xx" not in direct
