"""The store: the resources we consume, behind one interface with two backends.

Backends (a folder of manifests, the Kubernetes API) only feed events into an
`IndexedStore`; lookups and listeners are shared so both behave identically.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from metrics_server.model import KeptnMetric, KeptnMetricsProvider, ObjectKey, Resource, Secret

log = logging.getLogger(__name__)


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class StoreEvent:
    type: EventType
    obj: Resource  # for DELETED: the last state we knew


Listener = Callable[[StoreEvent], None]


class Store(ABC):
    """Read access to KeptnMetrics, KeptnMetricsProviders and Secrets, plus change events."""

    #: Namespace of this server: KeptnMetricsProviders here serve metrics in every namespace.
    server_namespace: str = "keptn-system"

    @abstractmethod
    async def start(self) -> None:
        """Begin loading/watching; returns once the first full sync is done."""

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def synced(self) -> bool: ...

    @abstractmethod
    def list_metrics(self, namespace: str | None = None) -> list[KeptnMetric]: ...

    @abstractmethod
    def get_metric(self, key: ObjectKey) -> KeptnMetric | None: ...

    @abstractmethod
    def get_provider(self, key: ObjectKey) -> KeptnMetricsProvider | None: ...

    @abstractmethod
    async def get_secret(self, key: ObjectKey) -> Secret | None:
        """Read a Secret (Kubernetes: `get` only, cached; never list/watch)."""

    def invalidate_secret(self, key: ObjectKey) -> None:  # noqa: B027 - only caching stores need it
        """Forget a cached Secret (after an auth failure) so the next read is fresh."""

    @abstractmethod
    def subscribe(self, listener: Listener) -> None: ...

    def resolve_provider(self, metric: KeptnMetric) -> KeptnMetricsProvider | None:
        """The metric's provider: its own namespace first, then the server's namespace."""
        own = self.get_provider(ObjectKey(metric.meta.namespace, metric.provider_name))
        if own is not None:
            return own
        return self.get_provider(ObjectKey(self.server_namespace, metric.provider_name))


class IndexedStore(Store):
    """In-memory indexes plus listener fan-out; backends call `apply`/`replace_all`.

    Used as is, it is an in-memory store (embedding, tests): `start` just marks it synced.
    """

    def __init__(self, server_namespace: str = "keptn-system") -> None:
        self.server_namespace = server_namespace
        self._metrics: dict[ObjectKey, KeptnMetric] = {}
        self._providers: dict[ObjectKey, KeptnMetricsProvider] = {}
        self._secrets: dict[ObjectKey, Secret] = {}
        self._listeners: list[Listener] = []
        self._synced = asyncio.Event()

    async def start(self) -> None:
        self.mark_synced()

    async def stop(self) -> None:
        return None

    # -- reads ---------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def list_metrics(self, namespace: str | None = None) -> list[KeptnMetric]:
        if namespace is None:
            return list(self._metrics.values())
        return [m for k, m in self._metrics.items() if k.namespace == namespace]

    def get_metric(self, key: ObjectKey) -> KeptnMetric | None:
        return self._metrics.get(key)

    def get_provider(self, key: ObjectKey) -> KeptnMetricsProvider | None:
        return self._providers.get(key)

    def list_providers(self) -> list[KeptnMetricsProvider]:
        return list(self._providers.values())

    async def get_secret(self, key: ObjectKey) -> Secret | None:
        return self._secrets.get(key)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- writes from backends ------------------------------------------------------------
    def _index_for(self, obj: Resource) -> dict[ObjectKey, Resource]:
        if isinstance(obj, KeptnMetric):
            return self._metrics  # type: ignore[return-value]
        if isinstance(obj, KeptnMetricsProvider):
            return self._providers  # type: ignore[return-value]
        return self._secrets  # type: ignore[return-value]

    def apply(self, obj: Resource, deleted: bool = False) -> None:
        """Record an object (or its deletion) and notify listeners if anything changed."""
        index = self._index_for(obj)
        old = index.get(obj.key)
        if deleted:
            if old is None:
                return
            del index[obj.key]
            self._emit(StoreEvent(EventType.DELETED, old))
            return
        if old == obj:
            return
        index[obj.key] = obj
        self._emit(StoreEvent(EventType.ADDED if old is None else EventType.MODIFIED, obj))

    def replace_all(self, objects: Iterable[Resource], kinds: Iterable[type]) -> None:
        """Make the indexes of `kinds` equal `objects` (a relist), emitting the differences."""
        kinds = tuple(kinds)
        fresh = [o for o in objects if isinstance(o, kinds)]
        seen = {(type(o), o.key) for o in fresh}
        for kind in kinds:
            probe: dict[ObjectKey, Resource] = {
                KeptnMetric: self._metrics,
                KeptnMetricsProvider: self._providers,
                Secret: self._secrets,
            }[kind]  # type: ignore[assignment]
            for key, old in list(probe.items()):
                if (kind, key) not in seen:
                    self.apply(old, deleted=True)
        for obj in fresh:
            self.apply(obj)

    def mark_synced(self) -> None:
        self._synced.set()

    def _emit(self, event: StoreEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a faulty listener must not stop the others
                log.exception("store listener failed on %s %s", event.type.value, event.obj.key)
