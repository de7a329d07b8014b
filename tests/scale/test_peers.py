"""Applying a peer's stream: newest wins, the owner's fetch time is kept, bad records are refused."""

from __future__ import annotations

import orjson

from apiservice.certs import generate_ca
from metrics_server.kube.peer_tls import peer_contexts
from metrics_server.kube.peers import BATCH, PeerHub, encode
from metrics_server.model import ObjectKey
from metrics_server.state import MetricStates

KEY = ObjectKey("shop", "rps")


def hub(states: MetricStates, owned: set[ObjectKey] | None = None) -> PeerHub:
    mine = owned or set()
    return PeerHub(states, peer_contexts(*generate_ca()), owns=lambda k: k in mine, identity="me")


def record(attempt: float, value: float | None = 5.0, fetched: float | None = None, **extra: object) -> dict:
    return {
        "states": [
            {
                "ns": "shop",
                "name": "rps",
                "v": value,
                "t": "5",
                "f": fetched or attempt,
                "a": attempt,
                "e": "",
                **extra,
            }
        ]
    }


async def test_a_newer_state_is_applied_with_the_owners_fetch_time() -> None:
    states = MetricStates()
    st = states.ensure(KEY, 10)
    st.staleness_grace = 60.0  # adopted from status before
    assert hub(states).apply(record(1000.0, fetched=999.5)) == 1
    assert (st.value, st.last_success, st.last_attempt, st.staleness_grace) == (5.0, 999.5, 1000.0, 0.0)


async def test_an_older_or_equal_state_never_undoes_a_newer_one() -> None:
    states = MetricStates()
    st = states.ensure(KEY, 10)
    peers = hub(states)
    peers.apply(record(1000.0, value=7.0))
    assert peers.apply(record(990.0, value=1.0)) == 0  # a former owner's late message
    assert peers.apply(record(1000.0, value=1.0)) == 0
    assert st.value == 7.0 and peers.stats.ignored_older == 2


async def test_own_and_unknown_metrics_are_left_alone() -> None:
    states = MetricStates()
    st = states.ensure(KEY, 10)
    assert hub(states, owned={KEY}).apply(record(1000.0)) == 0  # we fetch it ourselves
    assert st.value is None
    assert hub(MetricStates()).apply(record(1000.0)) == 0  # not a KeptnMetric we know


async def test_malformed_records_are_refused_not_raised() -> None:
    states = MetricStates()
    states.ensure(KEY, 10)
    peers = hub(states)
    for bad in (record(1000.0, value="5"), record(1000.0, value=float("nan")), {"states": [{"ns": "shop"}]}):
        assert peers.apply(bad) == 0
    assert peers.apply({"states": "nope"}) == 0 and peers.apply([1, 2]) == 0
    assert peers.stats.rejected == 3


async def test_encode_splits_into_bounded_lines_and_skips_never_attempted() -> None:
    states = MetricStates()
    for i in range(BATCH + 5):
        st = states.ensure(ObjectKey("ns", f"m{i}"), 10)
        st.value, st.value_text, st.last_success, st.last_attempt = float(i), str(i), 1.0, 1.0
    states.ensure(ObjectKey("ns", "never"), 10)
    lines = encode(states.values())
    assert [len(orjson.loads(line)["states"]) for line in lines] == [BATCH, 5]
    assert all(line.endswith(b"\n") for line in lines)
