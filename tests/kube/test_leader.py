"""Lease-based leader election: one leader, failover within the lease duration, release."""

from __future__ import annotations

import asyncio
import functools

import pytest

from metrics_server.kube.leader import LeaderElector
from tests.kube_fixtures import KubeEnv
from tests.waiting import until as wait_until

pytestmark = pytest.mark.kube

LEASE, RENEW, RETRY = 1.0, 0.6, 0.15


until = functools.partial(wait_until, within=5.0, poll=0.01)


async def elector(kube: KubeEnv, ident: str, log: list[str]) -> LeaderElector:
    return LeaderElector(
        await kube.new_client(),
        kube.namespace,
        "test-leader",
        identity=ident,
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
        on_started_leading=lambda: log.append(f"start {ident}"),
        on_stopped_leading=lambda: log.append(f"stop {ident}"),
    )


async def test_one_leads_other_takes_over_when_renewals_stop(kube: KubeEnv) -> None:
    log: list[str] = []
    a, b = await elector(kube, "a", log), await elector(kube, "b", log)
    a.start()
    await until(lambda: a.leading)
    b.start()
    await asyncio.sleep(LEASE * 1.5)  # b must not take a lease that is being renewed
    assert a.leading and not b.leading
    lease = await kube.get("Lease", "test-leader")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 1
    await a.stop(release=False)  # a crashes: no release, renewals just stop
    took = await until(lambda: b.leading, within=LEASE + 3 * RETRY * 2.2 + 1)
    assert took <= LEASE + 3 * RETRY * 2.2 + 0.5
    lease = await kube.get("Lease", "test-leader")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert log == ["start a", "stop a", "start b"]
    await b.stop()


async def test_release_on_shutdown_hands_over_quickly(kube: KubeEnv) -> None:
    log: list[str] = []
    a, b = await elector(kube, "a", log), await elector(kube, "b", log)
    a.start()
    await until(lambda: a.leading)
    b.start()
    await asyncio.sleep(RETRY * 3)
    await a.stop()  # releases
    lease = await kube.get("Lease", "test-leader")
    assert lease["spec"].get("holderIdentity", "") in ("", "b")
    took = await until(lambda: b.leading, within=LEASE)
    assert took < LEASE  # no need to wait for the lease to expire
    await b.stop()
    lease = await kube.get("Lease", "test-leader")
    assert lease["spec"].get("holderIdentity", "") == "" and lease["spec"]["leaseDurationSeconds"] == 1


async def test_leader_that_loses_the_lease_stops_at_once_and_campaigns_again(kube: KubeEnv) -> None:
    log: list[str] = []
    a = await elector(kube, "a", log)
    a.start()
    await until(lambda: a.leading)
    await kube.patch("Lease", "test-leader", {"spec": {"holderIdentity": "intruder"}})
    took = await until(lambda: not a.leading, within=RENEW + RETRY * 2)
    assert took <= RETRY * 2 + 0.3
    assert a.observed_holder == "intruder"
    # the intruder never renews: a campaigns and wins again after the lease duration
    await until(lambda: a.leading, within=LEASE * 3)
    assert log == ["start a", "stop a", "start a"]
    await a.stop()


async def test_leader_stops_when_it_cannot_renew(kube: KubeEnv) -> None:
    if kube.standin is None:
        pytest.skip("fault injection needs the stand-in")
    log: list[str] = []
    a = await elector(kube, "a", log)
    a.start()
    await until(lambda: a.leading)
    kube.standin.fail_next(
        lambda r: r.resource == "leases", code=503, reason="ServiceUnavailable", times=1000
    )
    took = await until(lambda: not a.leading, within=RENEW + RETRY * 3)
    assert took <= RENEW + RETRY * 2 + 0.2
    kube.standin._failures.clear()
    await a.stop()


def test_rejects_inconsistent_durations() -> None:
    with pytest.raises(ValueError):
        LeaderElector(None, "ns", lease_duration=5, renew_deadline=10, retry_period=2)  # type: ignore[arg-type]
