"""A generic informer: list, then watch from the list's resourceVersion, forever.

- the watch asks for bookmarks, so the resourceVersion we resume from stays fresh;
- a 410 Gone (an HTTP 410 or an `ERROR` event carrying a 410 Status, which is how a real
  API server reports an expired version on a watch) means relist;
- network errors and 5xx reconnect with exponential backoff and full jitter; a watch that
  ends normally (server timeout, dropped connection) resumes from the last version at once,
  but one that ends quickly without delivering anything counts as a failure (no hot loops);
- the handler sees `on_list(items)` after every (re)list and `on_event(type, obj)` for
  each ADDED/MODIFIED/DELETED, both with plain dicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from metrics_server.kube.client import ApiException, KubeClient, KubeObject

log = logging.getLogger(__name__)

ListHandler = Callable[[list[KubeObject]], None]
EventHandler = Callable[[str, KubeObject], None]


class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.failures = base, cap, 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        return max(self.base / 2, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


class Gone(Exception):
    """The resourceVersion we watch from is too old: relist."""


class Informer:
    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_list: ListHandler,
        on_event: EventHandler,
        *,
        name: str = "",
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout: tuple[int, int] = (240, 300),
        backoff: Backoff | None = None,
        min_healthy_watch: float = 1.0,
    ) -> None:
        self.client = client
        self.path = path
        self.name = name or path
        self.on_list = on_list
        self.on_event = on_event
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.min_healthy_watch = min_healthy_watch
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.lists = 0  # how many times we listed (observability, tests)
        self.watches = 0
        self._task: asyncio.Task[None] | None = None
        self._gone_streak = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer {self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                started = loop.time()
                delivered = await self._watch()
                if delivered or loop.time() - started >= self.min_healthy_watch:
                    self.backoff.reset()
                    continue
                delay = self.backoff.next_delay()
                log.debug("%s: watch ended at once without events; retrying in %.2fs", self.name, delay)
                await asyncio.sleep(delay)
            except Gone:
                log.info("%s: resourceVersion %s expired, relisting", self.name, self.resource_version)
                self.resource_version = None
                self._gone_streak += 1
                if self._gone_streak > 1:  # a fresh list expired at once again: do not spin
                    await asyncio.sleep(self.backoff.next_delay())
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version = None
                    continue
                delay = self.backoff.next_delay()
                log.warning(
                    "%s: API error %s %s; retrying in %.2fs", self.name, exc.status, exc.reason, delay
                )
                await asyncio.sleep(delay)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                delay = self.backoff.next_delay()
                log.warning("%s: %s: %s; retrying in %.2fs", self.name, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a handler bug must not kill the informer silently nor spin
                delay = self.backoff.next_delay()
                log.exception("%s: unexpected error; retrying in %.2fs", self.name, delay)
                await asyncio.sleep(delay)

    # -- list and watch ----------------------------------------------------------------------
    def _selectors(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.label_selector:
            q["labelSelector"] = self.label_selector
        if self.field_selector:
            q["fieldSelector"] = self.field_selector
        return q

    async def _list(self) -> None:
        items: list[KubeObject] = []
        query: dict[str, Any] = {**self._selectors(), "limit": 500}
        rv = ""
        while True:
            page = await self.client.request("GET", self.path, query=query, request_timeout=60)
            items.extend(page.get("items") or [])
            md = page.get("metadata") or {}
            rv = str(md.get("resourceVersion") or rv)
            cont = md.get("continue")
            if not cont:
                break
            query = {**self._selectors(), "limit": 500, "continue": cont}
        kind = page.get("kind", "")
        api_version = page.get("apiVersion", "")
        for item in items:  # list items may omit kind/apiVersion (core types do)
            if kind.endswith("List"):
                item.setdefault("kind", kind[: -len("List")])
            item.setdefault("apiVersion", api_version)
        self.lists += 1
        self.on_list(items)
        self.resource_version = rv
        self.synced.set()
        self.backoff.reset()

    async def _watch(self) -> bool:
        """Watch from self.resource_version until the stream ends; True if anything arrived."""
        timeout = random.randint(*self.watch_timeout)
        query = {
            **self._selectors(),
            "watch": "1",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        self.watches += 1
        resp = await self.client.stream(self.path, query, read_timeout=timeout + 30)
        delivered = False
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return delivered
                line = line.strip()
                if not line:
                    continue
                event = json.loads(line)
                delivered = True
                self._handle(event)
        finally:
            resp.release()

    def _handle(self, event: Mapping[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Gone(obj.get("message", ""))
            raise ApiException(status=int(code or 500), reason=str(obj.get("message", "watch error")))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        self._gone_streak = 0
        if etype == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            return
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(etype, obj)
            if rv:
                self.resource_version = str(rv)
        else:
            log.warning("%s: unknown watch event type %r", self.name, etype)
