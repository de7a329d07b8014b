"""KubernetesStore: KeptnMetrics and KeptnMetricsProviders from the API server.

One informer per (kind, namespace) — or one per kind for all namespaces — feeds the shared
`IndexedStore`. Secrets are read with `get` only, when a provider needs them, and cached
for `secret_ttl` seconds (least privilege: no list/watch on Secrets). The ConfigMap
kube-system/extension-apiserver-authentication is watched (by name) for the aggregated API.
Objects that do not parse are logged once per resourceVersion and left out of the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from metrics_server.excerpt import excerpt
from metrics_server.kube.client import ApiException, InvalidPathSegment, KubeClient, KubeObject, resource_path
from metrics_server.kube.informer import Informer
from metrics_server.model import (
    METRICS_GROUP,
    KeptnMetric,
    KeptnMetricsProvider,
    ObjectKey,
    Resource,
    Secret,
    ValidationError,
    parse_metric,
    parse_provider,
    parse_secret,
)
from metrics_server.store.base import IndexedStore

log = logging.getLogger(__name__)

AUTH_CONFIGMAP = ObjectKey("kube-system", "extension-apiserver-authentication")
AuthConfigMapListener = Callable[[dict[str, str] | None], None]

_KINDS: dict[type, tuple[str, Callable[..., Resource]]] = {
    KeptnMetric: ("keptnmetrics", parse_metric),
    KeptnMetricsProvider: ("keptnmetricsproviders", parse_provider),
}


class KubernetesStore(IndexedStore):
    def __init__(
        self,
        client: KubeClient,
        namespaces: Sequence[str] | None = None,
        server_namespace: str = "keptn-system",
        *,
        secret_ttl: float = 300.0,
        negative_secret_ttl: float = 30.0,
        watch_auth_configmap: bool = True,
        api_version: str = "v1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(server_namespace=server_namespace)
        self.client = client
        self.namespaces = [n for n in (namespaces or []) if n] or None
        self.secret_ttl = secret_ttl
        self.negative_secret_ttl = negative_secret_ttl
        self.api_version = api_version
        self.clock = clock
        self.informers: list[Informer] = []
        self.auth_sync_timeout = 10.0
        self._kind_informers: list[Informer] = []
        self._secrets_cache: dict[ObjectKey, tuple[float, Secret | None]] = {}
        self._secret_inflight: dict[ObjectKey, asyncio.Future[Secret | None]] = {}
        self.secret_reads = 0
        self._invalid_logged: set[tuple[str, str, str, str]] = set()
        self._auth_data: dict[str, str] | None = None
        self._auth_listeners: list[AuthConfigMapListener] = []
        self._auth_informer: Informer | None = None
        if watch_auth_configmap:
            self._auth_informer = Informer(
                client,
                resource_path("", "v1", "configmaps", AUTH_CONFIGMAP.namespace),
                self._auth_list,
                self._auth_event,
                name="configmap kube-system/extension-apiserver-authentication",
                field_selector=f"metadata.name={AUTH_CONFIGMAP.name}",
            )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the informers; returns when KeptnMetrics and KeptnMetricsProviders are listed."""
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for kind, (plural, _) in _KINDS.items():
            for ns in scopes:
                inf = Informer(
                    self.client,
                    resource_path(METRICS_GROUP, self.api_version, plural, ns),
                    self._list_handler(kind, ns),
                    self._event_handler(kind),
                    name=f"{plural} in {ns or 'all namespaces'}",
                )
                self._kind_informers.append(inf)
        self.informers = list(self._kind_informers)
        if self._auth_informer is not None:
            self.informers.append(self._auth_informer)
        for inf in self.informers:
            inf.start()
        await asyncio.gather(*(inf.synced.wait() for inf in self._kind_informers))
        if self._auth_informer is not None:
            # the API authenticates front-proxy requests with it: wait, but not forever (RBAC may deny it)
            try:
                await asyncio.wait_for(self._auth_informer.synced.wait(), self.auth_sync_timeout)
            except TimeoutError:
                log.warning("the authentication ConfigMap is not readable yet; continuing without it")
        self.mark_synced()

    async def stop(self) -> None:
        await asyncio.gather(*(inf.stop() for inf in self.informers))

    # -- KeptnMetric / KeptnMetricsProvider ----------------------------------------------------
    def _parse(self, kind: type, doc: KubeObject) -> Resource | None:
        _, parser = _KINDS[kind]
        try:
            return parser(doc)
        except ValidationError as exc:
            md = doc.get("metadata") or {}
            mark = (
                kind.__name__,
                str(md.get("namespace")),
                str(md.get("name")),
                str(md.get("resourceVersion")),
            )
            if mark not in self._invalid_logged:
                if len(self._invalid_logged) > 10_000:
                    self._invalid_logged.clear()
                self._invalid_logged.add(mark)
                log.warning(
                    "ignoring invalid %s (resourceVersion %s): %s",
                    kind.__name__,
                    mark[3],
                    excerpt(str(exc), 500),
                )
            return None

    def _list_handler(self, kind: type, namespace: str | None) -> Callable[[list[KubeObject]], None]:
        def on_list(items: list[KubeObject]) -> None:
            fresh = [o for o in (self._parse(kind, d) for d in items) if o is not None]
            index = self._metrics if kind is KeptnMetric else self._providers
            if namespace is not None:  # other namespaces' informers own the rest of this index
                fresh += [o for k, o in index.items() if k.namespace != namespace]
            self.replace_all(fresh, [kind])

        return on_list

    def _event_handler(self, kind: type) -> Callable[[str, KubeObject], None]:
        def on_event(etype: str, doc: KubeObject) -> None:
            md = doc.get("metadata") or {}
            key = ObjectKey(str(md.get("namespace") or ""), str(md.get("name") or ""))
            index = self._metrics if kind is KeptnMetric else self._providers
            if etype == "DELETED":
                old = index.get(key)
                if old is not None:
                    self.apply(old, deleted=True)
                return
            obj = self._parse(kind, doc)
            if obj is None:  # became invalid: it no longer describes a usable resource
                old = index.get(key)
                if old is not None:
                    self.apply(old, deleted=True)
                return
            self.apply(obj)

        return on_event

    # -- Secrets: get only, cached ---------------------------------------------------------------
    async def get_secret(self, key: ObjectKey) -> Secret | None:
        """The Secret, from the cache if younger than the TTL; None if it does not exist.

        The caller passes the provider's namespace (a provider's Secret must live next to it);
        `provider_secret()` does that for you. Network/API errors return a stale cached
        copy if there is one, else raise ApiException/OSError.
        """
        now = self.clock()
        cached = self._secrets_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        inflight = self._secret_inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        fut: asyncio.Future[Secret | None] = asyncio.get_running_loop().create_future()
        self._secret_inflight[key] = fut
        try:
            secret = await self._read_secret(key, cached)
            fut.set_result(secret)
            return secret
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._secret_inflight[key]

    async def _read_secret(self, key: ObjectKey, cached: tuple[float, Secret | None] | None) -> Secret | None:
        self.secret_reads += 1
        try:
            path = resource_path("", "v1", "secrets", key.namespace, key.name)
        except InvalidPathSegment as exc:  # the model refuses such names; this is the last line
            log.warning("refusing to read Secret %r in %r: %s", key.name, key.namespace, exc)
            return None
        try:
            doc = await self.client.get(path)
        except ApiException as exc:
            if exc.status == 404:
                self._secrets_cache[key] = (self.clock() + self.negative_secret_ttl, None)
                return None
            if exc.status == 403:
                log.warning("not allowed to get Secret %s (RBAC): %s", key, exc.reason)
                self._secrets_cache[key] = (self.clock() + self.negative_secret_ttl, None)
                return None
            if cached is not None:
                log.warning("reading Secret %s failed (%s); using the cached copy", key, exc.status)
                return cached[1]
            raise
        except (OSError, TimeoutError):
            if cached is not None:
                return cached[1]
            raise
        doc.setdefault("apiVersion", "v1")
        doc.setdefault("kind", "Secret")
        try:
            secret = parse_secret(doc, key.namespace)
        except ValidationError as exc:
            log.warning("ignoring invalid Secret %s: %s", key, excerpt(str(exc), 500))
            secret = None
        self._secrets_cache[key] = (self.clock() + self.secret_ttl, secret)
        return secret

    def invalidate_secret(self, key: ObjectKey) -> None:
        self._secrets_cache.pop(key, None)

    async def provider_secret(self, provider: KeptnMetricsProvider) -> Secret | None:
        """The Secret named by the provider's secretKeyRef, in the provider's own namespace."""
        if provider.secret_key_ref is None:
            return None
        return await self.get_secret(ObjectKey(provider.meta.namespace, provider.secret_key_ref.name))

    # -- the aggregated API's authentication ConfigMap ----------------------------------------------
    @property
    def auth_configmap(self) -> dict[str, str] | None:
        """`data` of kube-system/extension-apiserver-authentication (None until seen or if absent)."""
        return None if self._auth_data is None else dict(self._auth_data)

    def subscribe_auth_configmap(self, callback: AuthConfigMapListener) -> None:
        """Call `callback(data_or_None)` whenever the ConfigMap's data changes."""
        self._auth_listeners.append(callback)

    async def wait_auth_configmap(self, within: float | None = None) -> dict[str, str] | None:
        """Wait (up to `within` seconds) until the auth ConfigMap has been listed once."""
        if self._auth_informer is None:
            return None
        try:
            await asyncio.wait_for(self._auth_informer.synced.wait(), within)
        except TimeoutError:
            pass
        return self.auth_configmap

    def _set_auth(self, data: dict[str, str] | None) -> None:
        if data == self._auth_data:
            return
        self._auth_data = data
        for cb in list(self._auth_listeners):
            try:
                cb(None if data is None else dict(data))
            except Exception:
                log.exception("auth ConfigMap listener failed")

    def _auth_list(self, items: list[KubeObject]) -> None:
        match = [i for i in items if (i.get("metadata") or {}).get("name") == AUTH_CONFIGMAP.name]
        self._set_auth(dict(match[0].get("data") or {}) if match else None)

    def _auth_event(self, etype: str, doc: KubeObject) -> None:
        if (doc.get("metadata") or {}).get("name") != AUTH_CONFIGMAP.name:
            return
        self._set_auth(None if etype == "DELETED" else dict(doc.get("data") or {}))
