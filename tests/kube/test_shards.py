"""Shard Leases: fair placement over live replicas, rebalancing on join and leave, takeover
after a crash, and fencing (an owner that cannot renew stops before anyone else may start)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from metrics_server.kube.client import KubeClient
from metrics_server.kube.shards import ShardManager
from tests.kube_fixtures import KubeEnv
from tests.waiting import until as wait_until

pytestmark = pytest.mark.kube

SHARDS, LEASE, RENEW, RETRY = 4, 1.0, 0.6, 0.15


until = functools.partial(wait_until, within=10.0, poll=0.01)


class Breakable:
    """A KubeClient whose API server can be made unreachable (every request: connection refused)."""

    def __init__(self, client: KubeClient) -> None:
        self.client, self.broken = client, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise ConnectionRefusedError("API server unreachable")
            return await attr(*args, **kwargs)

        return call


class Replicas:
    """Shard managers in one namespace, with a log of ownership changes and an overlap sampler."""

    def __init__(self, kube: KubeEnv) -> None:
        self.kube = kube
        self.log: list[tuple[str, str, int]] = []
        self.managers: dict[str, ShardManager] = {}
        self.clients: dict[str, Breakable] = {}
        self.overlaps: list[int] = []
        self._sampler: asyncio.Task[None] | None = None

    async def add(self, ident: str) -> ShardManager:
        client = Breakable(await self.kube.new_client())
        m = ShardManager(
            client,  # type: ignore[arg-type]
            self.kube.namespace,
            SHARDS,
            prefix="t",
            identity=ident,
            peer_address=f"{ident}.peer:8444",
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
            on_acquired=lambda s: self.log.append(("acquired", ident, s)),
            on_lost=lambda s: self.log.append(("lost", ident, s)),
        )
        self.managers[ident], self.clients[ident] = m, client
        m.start()
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample())
        return m

    async def _sample(self) -> None:
        while True:
            for shard in range(SHARDS):
                if sum(m.owns(shard) for m in self.managers.values()) > 1:
                    self.overlaps.append(shard)
            await asyncio.sleep(0.005)

    def owned(self, ident: str) -> list[int]:
        return self.managers[ident].owned

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        for m in self.managers.values():
            m._task and m._task.cancel()
        for c in self.clients.values():
            await c.client.close()


async def holders(kube: KubeEnv) -> dict[int, str]:
    return {
        s: (await kube.get("Lease", f"t-shard-{s}"))["spec"].get("holderIdentity", "") for s in range(SHARDS)
    }


async def test_one_replica_owns_every_shard_and_a_joiner_gets_its_fair_half(kube: KubeEnv) -> None:
    r = Replicas(kube)
    try:
        a = await r.add("a")
        await until(lambda: r.owned("a") == list(range(SHARDS)))
        assert set((await holders(kube)).values()) == {"a"}
        member = await kube.get("Lease", a.member_lease)
        assert member["metadata"]["annotations"]["metrics.keptn.sh/peer-address"] == "a.peer:8444"

        await r.add("b")
        await until(lambda: len(r.owned("a")) == 2 and len(r.owned("b")) == 2)
        assert not set(r.owned("a")) & set(r.owned("b"))
        lease_holders = await holders(kube)
        assert sorted(s for s, h in lease_holders.items() if h == "b") == r.owned("b")
        # the moved shards were released by a (stop fetching) before b acquired them
        for shard in r.owned("b"):
            assert r.log.index(("lost", "a", shard)) < r.log.index(("acquired", "b", shard))
        assert r.overlaps == []
        assert set(a.members) == {"a", "b"}
    finally:
        await r.close()


async def test_a_crashed_replicas_shards_are_taken_over_after_the_lease_duration(kube: KubeEnv) -> None:
    r = Replicas(kube)
    try:
        await r.add("a")
        await r.add("b")
        await until(lambda: len(r.owned("a")) == 2 and len(r.owned("b")) == 2)
        crashed, mark = r.owned("a"), len(r.log)
        r.managers["a"]._task.cancel()  # type: ignore[union-attr]  # kill -9: no release, no renewals
        await until(lambda: r.owned("b") == list(range(SHARDS)))
        assert set(r.managers["b"].members) == {"b"}  # the dead member left the live set
        assert set((await holders(kube)).values()) == {"b"}
        for shard in crashed:
            assert ("acquired", "b", shard) in r.log[mark:]
        assert r.overlaps == []
    finally:
        await r.close()


async def test_graceful_stop_releases_every_lease_and_the_survivor_takes_them(kube: KubeEnv) -> None:
    r = Replicas(kube)
    try:
        await r.add("a")
        b = await r.add("b")
        await until(lambda: len(r.owned("a")) == 2 and len(r.owned("b")) == 2)
        await b.stop(release=True)
        member = await kube.get("Lease", b.member_lease)
        assert member["spec"]["holderIdentity"] == ""  # gone at once, not after the lease duration
        await until(lambda: r.owned("a") == list(range(SHARDS)))
        assert r.overlaps == []
    finally:
        await r.close()


async def test_an_owner_cut_off_from_the_api_server_stops_before_anyone_else_starts(kube: KubeEnv) -> None:
    r = Replicas(kube)
    try:
        await r.add("a")
        await r.add("b")
        await until(lambda: len(r.owned("a")) == 2 and len(r.owned("b")) == 2)
        cut, mark = r.owned("a"), len(r.log)
        r.clients["a"].broken = True  # renewals fail from now on
        await until(lambda: r.owned("a") == [])  # fenced: past its renew deadline a owns nothing
        await until(lambda: r.owned("b") == list(range(SHARDS)))
        after = r.log[mark:]
        for shard in cut:
            assert after.index(("lost", "a", shard)) < after.index(("acquired", "b", shard))
        assert r.overlaps == []
        r.clients["a"].broken = False  # the API server is back: a rejoins, shards are rebalanced
        await until(lambda: len(r.owned("a")) == 2 and len(r.owned("b")) == 2)
        assert r.overlaps == []
    finally:
        await r.close()


def _lease_held() -> dict[str, float]:
    from metrics_server.selfmetrics import LEASE_HELD

    return {
        s.labels["lease"]: s.value
        for family in LEASE_HELD.collect()
        for s in family.samples
        if s.labels["lease"].startswith("t-shard-")
    }


async def test_each_shard_lease_is_reported_held_or_not_until_the_replica_stops(kube: KubeEnv) -> None:
    """keptn_metrics_lease_held covers the shard Leases: the NoLeader alert sees an unowned shard."""
    r = Replicas(kube)
    try:
        a = await r.add("a")
        assert set(_lease_held()) == {f"t-shard-{s}" for s in range(SHARDS)}  # campaigning: reported
        await until(lambda: r.owned("a") == list(range(SHARDS)))
        assert set(_lease_held().values()) == {1.0}
        await a.stop()
        assert _lease_held() == {}  # no longer campaigning: the series are gone
    finally:
        await r.close()
