"""The evaluator fetches only what this replica owns (the sharded runtime's shards): an
acquired shard is fetched at once, a lost one stops at once, an unowned key never starts."""

from __future__ import annotations

import asyncio
from typing import Any

from metrics_server.model import ObjectKey
from tests.promapi import PromAPI
from tests.test_evaluator import eventually, metric, promapi, running, store_with

__all__ = ["promapi"]  # the fixture


async def test_only_owned_keys_are_fetched_and_an_acquired_key_at_once(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values.update({"a": 1, "b": 2})
    mine, theirs = metric("mine", "a", interval=3600), metric("theirs", "b", interval=3600)
    owned: set[ObjectKey] = {mine.key}
    async with running(store_with(url, mine, theirs)) as (evaluator, states, _sink):
        evaluator.owns = lambda key: key in owned
        evaluator.activate()
        await eventually(lambda: (s := states.get(mine.key)) is not None and s.value == 1)
        await asyncio.sleep(0.05)
        assert api.calls.get("b", 0) == 0  # not ours: never fetched

        owned.add(theirs.key)  # the shard was acquired: fetched now, not in an hour
        assert evaluator.fetch_now(lambda key: key == theirs.key) == 1
        await eventually(lambda: (s := states.get(theirs.key)) is not None and s.value == 2)


async def test_a_lost_key_stops_at_once_and_keeps_its_last_good_value(promapi: tuple[PromAPI, str]) -> None:
    api, url = promapi
    api.values["slow"] = 7
    m = metric("slow", "slow", interval=1)
    owned = {m.key}
    async with running(store_with(url, m)) as (evaluator, states, _sink):
        evaluator.owns = lambda key: key in owned
        await eventually(lambda: (s := states.get(m.key)) is not None and s.value == 7)
        api.latency = 5.0  # the next fetch hangs in the provider
        await eventually(lambda: m.key in evaluator._running)
        owned.clear()  # the shard's Lease expired
        evaluator.stop_fetching(lambda key: key == m.key)
        await eventually(lambda: m.key not in evaluator._running)  # the hanging fetch was cancelled
        api.latency = 0.0
        calls: Any = dict(api.calls)
        await asyncio.sleep(1.5)  # past its due time: an unowned key is not fetched again
        assert api.calls == calls
        state = states.get(m.key)
        assert state is not None and state.value == 7 and state.error == ""
