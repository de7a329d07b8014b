"""One download and one parse per target and interval, shared by every query that reads it.

Eight KeptnMetrics reading one `/metrics` endpoint used to cost eight downloads and eight
parses per interval, all on the event loop that also serves the API. `ScrapeCache` keys a
scrape by (target URL, a fingerprint of the credentials and TLS settings, egress policy):

- single flight: queries arriving while a scrape is in flight wait for it;
- a short shared cache (`ttl`, default 1 s): metrics due at the same moment (the scheduler
  keeps equal intervals aligned) share one scrape even if they arrive a little apart;
- the parse runs in a worker (a process by default, see `ParserPool`), never on the loop,
  and extracts only the sample names that queries of this target have asked for, so what
  comes back to the loop is small.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from cachetools import TTLCache

from providers.exposition import Index, SampleRow, index_samples

DEFAULT_TTL = 1.0
MAX_NAMES_PER_TARGET = 1024


class ParserPool:
    """Where expositions are parsed: `process` (default), `thread`, or `inline` (tests, CLI).

    Measured in benchmarks/soak.py: parsing under the GIL in a thread still stalls the loop
    for up to the interpreter's switch interval at every hand-over; a separate process takes
    the CPU work off the serving interpreter entirely, and only the few requested samples
    are pickled back.
    """

    def __init__(self, mode: str = "process") -> None:
        if mode not in ("process", "thread", "inline"):
            raise ValueError(f"unknown parser mode {mode!r}")
        self.mode = mode
        self._executor: concurrent.futures.Executor | None = None

    def _pool(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.mode == "process":
                # forkserver: no fork of a threaded, running server; it preloads only the parser,
                # not the server's __main__, so the worker stays small
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["providers.exposition"])
                self._executor = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
            else:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="exposition-parser"
                )
        return self._executor

    async def index(self, body: bytes, names: frozenset[str]) -> Index:
        if self.mode == "inline":
            return index_samples(body, names)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), index_samples, body, names)
        except concurrent.futures.BrokenExecutor:
            self._executor = None  # a crashed worker (OOM-killed): start a new one next time
            raise

    def shutdown(self) -> None:
        """Stop the worker (waits for it to exit: an idle worker exits at once)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@dataclass
class _Scrape:
    body: bytes
    fetched_at: float
    index: Index = field(default_factory=dict)


def credentials_fingerprint(*parts: object) -> str:
    """A digest of everything that changes what a target answers (never the secrets themselves)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class ScrapeCache:
    """Shared scrapes: see the module docstring. One instance per process is enough."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        parser: ParserPool | None = None,
        clock: Callable[[], float] = time.monotonic,
        maxsize: int = 4096,
    ) -> None:
        self.ttl = ttl
        self.parser = parser or ParserPool()
        self._clock = clock
        self._scrapes: TTLCache[Hashable, _Scrape] = TTLCache(
            maxsize=maxsize, ttl=max(ttl, 0.001), timer=clock
        )
        self._names: TTLCache[Hashable, set[str]] = TTLCache(maxsize=maxsize, ttl=3600, timer=clock)
        self._downloads: dict[Hashable, asyncio.Task[_Scrape]] = {}
        self._parses: dict[Hashable, asyncio.Task[Index]] = {}
        self.downloads = 0  # counters for tests and benchmarks
        self.parses = 0

    async def samples(
        self, key: Hashable, name: str, download: Callable[[], Awaitable[bytes]]
    ) -> tuple[list[SampleRow], float]:
        """The samples named `name` from a scrape of `key` at most `ttl` old, and its wall time."""
        names = self._names.get(key)
        if names is None:
            names = self._names[key] = set()
        if len(names) < MAX_NAMES_PER_TARGET:
            names.add(name)
        cached = self._scrapes.get(key)
        scrape = (
            cached
            if cached is not None
            else await _single_flight(self._downloads, key, lambda: self._download(key, download))
        )
        if name not in scrape.index:
            current = scrape
            # keyed by this scrape too: a parse of an older scrape of the target is not this one's
            flight = (key, id(current))
            index = await _single_flight(self._parses, flight, lambda: self._parse(key, current, name))
            scrape.index = {**scrape.index, **index}
            if name not in scrape.index:  # a parse that started before this name was known
                extra = await self.parser.index(scrape.body, frozenset({name}))
                scrape.index = {**scrape.index, **extra}
        return scrape.index[name], scrape.fetched_at

    async def _download(self, key: Hashable, download: Callable[[], Awaitable[bytes]]) -> _Scrape:
        self.downloads += 1
        body = await download()
        scrape = _Scrape(body, time.time())
        if self.ttl > 0:
            self._scrapes[key] = scrape
        return scrape

    async def _parse(self, key: Hashable, scrape: _Scrape, name: str) -> Index:
        self.parses += 1
        wanted = (frozenset(self._names.get(key) or ()) | {name}) - set(scrape.index)
        return await self.parser.index(scrape.body, wanted)

    def close(self) -> None:
        self.parser.shutdown()
        self._scrapes.clear()
        with contextlib.suppress(Exception):
            self._names.clear()


T = TypeVar("T")


async def _single_flight(
    inflight: dict[Hashable, asyncio.Task[T]], key: Hashable, start: Callable[[], Awaitable[T]]
) -> T:
    """Join the task in flight for `key` (same loop), or start it; a cancelled waiter leaves it running."""
    task = inflight.get(key)
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        task = asyncio.ensure_future(start())
        inflight[key] = task

        def done(t: asyncio.Task[T], key: Hashable = key) -> None:
            if inflight.get(key) is t:
                del inflight[key]
            if not t.cancelled():
                t.exception()  # retrieved: waiters that gave up must not make it "never retrieved"

        task.add_done_callback(done)
    return await asyncio.shield(task)
