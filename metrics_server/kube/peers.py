"""Value streaming between replicas: every replica holds every value at its owner's freshness.

Each replica serves `GET /peer/v1/values` on the peer port (mutually authenticated TLS, see
peer_tls.py) and subscribes to every live peer. Each replica sends a snapshot of every
state it holds on connect (a joining replica so has every value, even of shards in handover),
then the changes of its own shards, coalesced per key and batched every
`flush_interval`, as newline-delimited JSON (`{"states": [...]}`, at most BATCH records per
line; `{}` is a heartbeat; `{"synced": true}` ends the snapshot). A receiver applies a state
only when it is newer than what it holds (by the owner's attempt time), so a former owner's
late message cannot undo the new owner's value, and it keeps the owner's fetch time, so the
age it serves is the true one.
See docs/scaling.md for why streaming rather than forwarding.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from metrics_server.kube.peer_tls import PEER_COMMON_NAME, PeerTls, peer_common_name
from metrics_server.kube.shards import Member
from metrics_server.model import ObjectKey
from metrics_server.state import MetricState, MetricStates

log = logging.getLogger(__name__)

PATH = "/peer/v1/values"
BATCH = 200  # records per line: keeps lines far below aiohttp's line limit
HEARTBEAT = 5.0  # seconds between heartbeats on an idle stream
MAX_QUEUED = 256  # lines queued for one subscriber before it is cut off (it reconnects for a snapshot)


def _record(state: MetricState) -> dict[str, Any]:
    return {
        "ns": state.key.namespace,
        "name": state.key.name,
        "v": state.value,
        "t": state.value_text,
        "f": state.last_success,
        "a": state.last_attempt,
        "e": state.error,
    }


def encode(states: Iterable[MetricState]) -> list[bytes]:
    """NDJSON lines of at most BATCH records each."""
    records = [_record(s) for s in states if s.last_attempt is not None]
    return [orjson.dumps({"states": records[i : i + BATCH]}) + b"\n" for i in range(0, len(records), BATCH)]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


@dataclass(eq=False)  # identity-hashed: subscribers live in a set
class _Subscriber:
    lines: collections.deque[bytes] = field(default_factory=collections.deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    cut_off: bool = False

    def push(self, line: bytes) -> None:
        if len(self.lines) >= MAX_QUEUED:
            self.cut_off = True
        else:
            self.lines.append(line)
        self.ready.set()


@dataclass
class PeerStats:
    sent_records: int = 0
    applied: int = 0
    ignored_older: int = 0
    rejected: int = 0
    connects: int = 0


class PeerHub:
    """The peer endpoint and one subscription per live peer; `start`, `set_peers`, `stop`."""

    def __init__(
        self,
        states: MetricStates,
        tls: PeerTls,
        *,
        owns: Callable[[ObjectKey], bool],
        identity: str,
        bind_address: str = "0.0.0.0",
        port: int = 0,
        flush_interval: float = 0.1,
    ) -> None:
        self.states, self.tls, self.owns, self.identity = states, tls, owns, identity
        self.bind_address, self.port, self.flush_interval = bind_address, port, flush_interval
        self.stats = PeerStats()
        self._pending: dict[ObjectKey, MetricState] = {}
        self._subscribers: set[_Subscriber] = set()
        self._peers: dict[str, tuple[Member, asyncio.Task[None]]] = {}
        self._runner: web.AppRunner | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._applying = False
        self._closing = False
        self._snapshots: set[str] = set()  # peers whose snapshot arrived
        states.subscribe(self._on_change)

    # -- outgoing --------------------------------------------------------------------------------
    def _on_change(self, state: MetricState | None, key: ObjectKey) -> None:
        if state is not None and not self._applying and self.owns(key):
            self._pending[key] = state  # coalesced: the newest state goes out at the next flush

    async def _flush_loop(self) -> None:
        idle = 0.0
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._pending:
                batch, self._pending = list(self._pending.values()), {}
                if self._subscribers:
                    lines = encode(batch)
                    for sub in list(self._subscribers):
                        for line in lines:
                            sub.push(line)
                    self.stats.sent_records += len(batch) * len(self._subscribers)
                idle = 0.0
            else:
                idle += self.flush_interval
                if idle >= HEARTBEAT:
                    idle = 0.0
                    for sub in list(self._subscribers):
                        sub.push(b"{}\n")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if peer_common_name(
            request.transport.get_extra_info("ssl_object") if request.transport else None
        ) != (PEER_COMMON_NAME):
            return web.Response(status=403, text="peer certificate required\n")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            # the snapshot is everything we hold, not only our shards: a shard in handover (released,
            # not yet fetched by its new owner) is in nobody's shards, but every replica has its values
            for line in encode(self.states.values()):
                await response.write(line)
            await response.write(b'{"synced": true}\n')
            while not sub.cut_off:
                await sub.ready.wait()
                sub.ready.clear()
                while sub.lines and not sub.cut_off:
                    await response.write(sub.lines.popleft())
            if not self._closing:
                log.warning("%s: a peer fell behind; closing its stream (it reconnects)", self.identity)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._subscribers.discard(sub)
        return response

    # -- incoming --------------------------------------------------------------------------------
    def apply(self, doc: Any) -> int:
        """Apply one decoded line from a peer; returns how many states changed."""
        changed = 0
        records = doc.get("states") if isinstance(doc, dict) else None
        for r in records if isinstance(records, list) else ():
            try:
                key = ObjectKey(str(r["ns"]), str(r["name"]))
                attempt = _number(r["a"])
                value, fetched = _number(r.get("v")), _number(r.get("f"))
                text, error = str(r.get("t") or ""), str(r.get("e") or "")
            except (KeyError, TypeError, ValueError):
                self.stats.rejected += 1
                continue
            if attempt is None or self.owns(key):
                continue  # we fetch it ourselves
            state = self.states.get(key)
            if state is None:
                continue  # not (yet) a KeptnMetric we know; its next change will reach us
            if state.last_attempt is not None and attempt <= state.last_attempt:
                self.stats.ignored_older += 1
                continue
            state.value, state.value_text, state.last_success = value, text, fetched
            state.last_attempt, state.error = attempt, error
            state.staleness_grace = 0.0  # the owner's own fetch time: its true age
            self._applying = True
            try:
                self.states.changed(state)
            finally:
                self._applying = False
            changed += 1
        self.stats.applied += changed
        return changed

    async def _follow(self, member: Member) -> None:
        backoff = 0.2
        url = f"https://{member.address}{PATH}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=HEARTBEAT * 3)
        while True:
            try:
                assert self._session is not None
                async with self._session.get(url, ssl=self.tls.client, timeout=timeout) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    self.stats.connects += 1
                    backoff = 0.2
                    async for line in resp.content:
                        if line.strip():
                            doc = orjson.loads(line)
                            if isinstance(doc, dict) and doc.get("synced") is True:
                                self._snapshots.add(member.identity)
                            else:
                                self.apply(doc)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.debug("%s: stream from %s (%s) ended: %s", self.identity, member.identity, url, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def synced(self) -> bool:
        """True once every followed peer has delivered its snapshot (readiness of a new replica)."""
        return all(identity in self._snapshots for identity in self._peers)

    def set_peers(self, members: dict[str, Member]) -> None:
        """Follow every live member but us (called by the ShardManager when the live set changes)."""
        wanted = {i: m for i, m in members.items() if i != self.identity and m.address}
        for identity in list(self._peers):
            member, task = self._peers[identity]
            if wanted.get(identity) != member:
                task.cancel()
                del self._peers[identity]
        for identity, member in wanted.items():
            if identity not in self._peers:
                task = asyncio.create_task(self._follow(member), name=f"peer stream {identity}")
                self._peers[identity] = (member, task)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen on the peer port; returns the bound port."""
        app = web.Application()
        app.router.add_get(PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind_address, self.port, ssl_context=self.tls.server)
        await site.start()
        for addr in self._runner.addresses:
            if isinstance(addr, tuple):
                self.port = int(addr[1])
                break
        self._session = aiohttp.ClientSession()
        self._flusher = asyncio.create_task(self._flush_loop(), name="peer flush")
        return self.port

    async def stop(self) -> None:
        self._closing = True
        tasks = [t for _, t in self._peers.values()]
        if self._flusher is not None:
            tasks.append(self._flusher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._peers.clear()
        for sub in list(self._subscribers):
            sub.cut_off = True
            sub.ready.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
