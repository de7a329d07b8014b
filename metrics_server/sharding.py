"""Which shard a KeptnMetric belongs to, and which live replica owns which shard.

Pure functions, so every replica computes the same answer from the same live set
(docs/scaling.md, "Shards"). crc32, not `hash()`: Python salts `hash()` per process.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from metrics_server.model import ObjectKey


def shard_of(key: ObjectKey, shards: int) -> int:
    """The shard of a (namespace, name) key: crc32 of "namespace/name" modulo the shard count."""
    return zlib.crc32(f"{key.namespace}/{key.name}".encode()) % shards


def _rank(shard: int, member: str) -> tuple[int, str]:
    return (zlib.crc32(f"{shard}/{member}".encode()), member)


def assign(shards: int, members: Iterable[str]) -> dict[int, str]:
    """shard -> member: rendezvous hashing with bounded loads.

    Each shard goes to its highest-ranked member still below its fair share: floor(shards /
    members), or one more for the first `shards mod members` members to get there. Loads differ
    by at most one, and a join or leave moves few shards (a shard keeps its winner unless that
    winner left or is full).
    """
    live = sorted(set(members))
    if not live:
        return {}
    floor, extra = divmod(shards, len(live))  # `extra` members may hold floor + 1
    load = dict.fromkeys(live, 0)
    at_ceiling = 0
    out: dict[int, str] = {}
    for shard in range(shards):
        for member in sorted(live, key=lambda m: _rank(shard, m), reverse=True):
            if load[member] < floor or (load[member] == floor and at_ceiling < extra):
                at_ceiling += load[member] == floor
                out[shard] = member
                load[member] += 1
                break
    return out
