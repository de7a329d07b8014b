"""A kube-aggregator player: what kube-apiserver 1.36's aggregation layer sends to our server,
and what the clients behind it (client-go discovery, the HPA's metrics clients) make of it.

Every request goes to the running server over TLS with the front-proxy client certificate
and the identity in `X-Remote-*` headers, as the real component sends it. Read from the
source (kubernetes/kube-aggregator v0.36.0 unless said otherwise; facts only):

- availability, pkg/controllers/status/remote/remote_available_controller.go: `GET
  /apis/<group>/<version>` with no Accept header as `system:kube-aggregator` in
  `system:masters` (transport.SetAuthProxyHeaders), 5 attempts, any 2xx makes the APIService
  `Available`; otherwise `FailedDiscoveryCheck` "failing or missing response from <url>: bad
  status from <url>: <code>". TLS is verified against the APIService's caBundle with
  ServerName `<service>.<namespace>.svc` (BuildTransportConfig).
- proxying, pkg/apiserver/handler_proxy.go: an APIService that is not Available answers 503
  "service unavailable" without contacting us; otherwise the caller's user, uid (feature
  RemoteRequestHeaderUID, on since 1.33), groups and extra go out as `X-Remote-*`
  (client-go transport/round_trippers.go, extra keys %-escaped by headerKeyEscape).
- aggregated discovery, pkg/apiserver/handler_discovery.go: per APIService, `GET /apis` as
  `system:kube-aggregator` + `system:masters` with `Accept: <v2>,<v2beta1>` (client-go
  discovery.AcceptV2 + "," + AcceptV2Beta1) and `If-None-Match` with the cached ETag. 304
  keeps the cached document; 503 is an error; 200 with a Content-Type that is the v2 GVK
  (discovery.ContentTypeIsGVK) is decoded and cached per Service; anything else falls back to
  `GET /apis/<group>/<version>` as `system:kube-aggregator` with **no groups** and `Accept:
  application/json`, whose non-200 answer is "failed to download legacy discovery for
  <path>: ...". The resources are converted by k8s.io/apiserver's
  ConvertGroupVersionIntoToDiscovery. Any error makes that group-version `freshness: Stale`
  with no resources; a success `Current`. The merged document sorts groups by
  groupPriorityMinimum (higher first, then name) and versions by versionPriority (then
  kube-aware version order), as k8s.io/apiserver's discovery/aggregated/handler.go does.
- OpenAPI v2, pkg/controllers/openapi/aggregator/downloader.go: `GET /openapi/v2` as
  `system:aggregator` with no groups, `Accept: application/json`, `If-None-Match` with the
  last server ETag; 404 is skipped, 200/304 are fine, anything else is logged as "failed to
  retrieve openAPI spec, http error: ResponseCode: <code>, ...".
- OpenAPI v3, pkg/controllers/openapiv3/aggregator/{downloader,aggregator}.go: `GET
  /openapi/v3` (no Accept) as `system:aggregator`, no groups; 404 means "legacy" (then the
  v2 download above, converted); 200 is decoded; anything else is the error "Error, could
  not get list of group versions for APIService", logged by the controller as `loading
  OpenAPI spec for "<apiservice>" failed with: ...`. A client's `GET
  /openapi/v3/apis/<g>/<v>` is proxied to us as that client when the root listed it.

Client side (kubernetes/client-go discovery/aggregated_discovery.go, kubernetes/metrics
pkg/client/custom_metrics/discovery.go): Stale group-versions are dropped, the preferred
version is the first one left, and with none of v1beta2/v1beta1 left the HPA's custom
metrics client fails with "no known available metric versions found". The HPA's calls
(pkg/client/custom_metrics/versioned_client.go, pkg/client/external_metrics/client.go) are
made as `system:serviceaccount:kube-system:horizontal-pod-autoscaler` with kube-controller-
manager's `Accept: application/vnd.kubernetes.protobuf, */*`; an Object metric needs exactly
one item, an External metric at least one (pkg/controller/podautoscaler/metrics/client.go).

Not modelled: Service/EndpointSlice checks of the availability controller, timeouts, HTTP/2,
gzip, retries with backoff (each call here is one sync).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ACCEPT_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
ACCEPT_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
AGGREGATED_DISCOVERY_ACCEPT = f"{ACCEPT_V2},{ACCEPT_V2BETA1}"
KUBE_CONTROLLER_MANAGER_ACCEPT = "application/vnd.kubernetes.protobuf, */*"

SYSTEM_MASTERS = "system:masters"
KUBE_AGGREGATOR = "system:kube-aggregator"
OPENAPI_AGGREGATOR = "system:aggregator"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
NO_METRIC_VERSIONS = "no known available metric versions found"
CUSTOM_METRICS_VERSIONS = ("custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1")


@dataclass(frozen=True)
class Identity:
    """A user as kube-apiserver authenticated it (what it forwards in X-Remote-*)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


KUBE_AGGREGATOR_AS_MASTER = Identity(KUBE_AGGREGATOR, (SYSTEM_MASTERS,))
KUBE_AGGREGATOR_NO_GROUPS = Identity(KUBE_AGGREGATOR)
OPENAPI_DOWNLOADER = Identity(OPENAPI_AGGREGATOR)
HPA = Identity(
    HPA_USER,
    ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"),
    uid="7f1d3c52-5f7e-4a44-9d0e-hpa000000001",
    extra={"authentication.kubernetes.io/credential-id": ["JTI=6c0f7a1e-hpa"]},
)


def _legal_header_byte(b: int) -> bool:
    return b < 127 and (chr(b).isalnum() or chr(b) in "!#$&'*+-.^_`|~")


def header_key_escape(key: str) -> str:
    """client-go transport.headerKeyEscape: %XX for bytes illegal in a header name, and `%`."""
    return "".join(chr(b) if _legal_header_byte(b) else f"%{b:02X}" for b in key.encode())


def auth_proxy_headers(who: Identity) -> list[tuple[str, str]]:
    """transport.SetAuthProxyHeaders."""
    headers = [("X-Remote-User", who.name)]
    if who.uid:
        headers.append(("X-Remote-Uid", who.uid))
    headers += [("X-Remote-Group", g) for g in who.groups]
    for key, values in who.extra.items():
        headers += [(f"X-Remote-Extra-{header_key_escape(key)}", v) for v in values]
    return headers


@dataclass(frozen=True)
class APIService:
    """The fields of an apiregistration.k8s.io/v1 APIService that the aggregator uses."""

    group: str
    version: str
    service_namespace: str
    service_name: str
    group_priority_minimum: int
    version_priority: int

    @property
    def name(self) -> str:
        return f"{self.version}.{self.group}"

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def server_name(self) -> str:
        return f"{self.service_name}.{self.service_namespace}.svc"

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any]) -> APIService:
        spec = doc["spec"]
        return cls(
            spec["group"],
            spec["version"],
            spec["service"]["namespace"],
            spec["service"]["name"],
            int(spec["groupPriorityMinimum"]),
            int(spec["versionPriority"]),
        )


@dataclass(frozen=True)
class Exchange:
    apiservice: str
    path: str
    who: Identity
    headers: dict[str, str]
    status: int


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def describe(self) -> str:
        """k8s.io/apiserver responsewriter.InMemoryResponseWriter.String()."""
        body = self.body.decode(errors="replace")
        return f"ResponseCode: {self.status}, Body: {body}, Header: {dict(self.headers)}"


# -- k8s.io/apiserver facts the aggregator relies on ------------------------------------------------
def convert_group_version_into_to_discovery(
    api_resources: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """k8s.io/apiserver endpoints.ConvertGroupVersionIntoToDiscovery (kube-aggregator's fallback)."""
    resources = list(api_resources)
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}

    def scope(r: Mapping[str, Any]) -> str:
        return "Namespaced" if r.get("namespaced") else "Cluster"

    for r in resources:
        if "/" in r["name"]:
            continue
        entry: dict[str, Any] = {
            "resource": r["name"],
            "responseKind": {
                "group": r.get("group", ""),
                "version": r.get("version", ""),
                "kind": r.get("kind", ""),
            },
            "scope": scope(r),
            "singularResource": r.get("singularName", ""),
            "verbs": r.get("verbs"),
        }
        for key in ("shortNames", "categories"):
            if r.get(key):
                entry[key] = list(r[key])
        index[r["name"]] = len(out)
        out.append(entry)
    for r in resources:
        parent, slash, sub = r["name"].partition("/")
        if not slash:
            continue
        if parent not in index:
            index[parent] = len(out)
            kind0 = {"group": "", "version": "", "kind": ""}
            out.append(
                {
                    "resource": parent,
                    "responseKind": kind0,
                    "scope": scope(r),
                    "singularResource": "",
                    "verbs": None,
                }
            )
        target = out[index[parent]]
        if target["scope"] != scope(r):
            raise ValueError(
                f"Error: Parent {parent} (scope: {target['scope']}) and subresource {sub} "
                f"(scope: {scope(r)}) scope do not match"
            )
        kind = {"group": r.get("group", ""), "version": r.get("version", ""), "kind": r.get("kind", "")}
        if not r.get("kind"):
            kind = {"group": "", "version": "", "kind": ""}
        target.setdefault("subresources", []).append(
            {"subresource": sub, "responseKind": kind, "verbs": r.get("verbs")}
        )
    return out


def preference_key(version: str) -> tuple[int, int, int, int, str]:
    """Ascending sort key = descending k8s.io/apimachinery CompareKubeAwareVersionStrings:
    GA before beta before alpha, higher numbers first, non-kube-like names last."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (1, 0, 0, 0, version)
    stage = {"alpha": 2, "beta": 1, None: 0}[m[2]]
    return (0, -int(m[1]), stage, -int(m[3] or 0), "")


def _content_type_is_gvk(content_type: str, group: str, version: str, kind: str) -> bool:
    """client-go discovery.ContentTypeIsGVK (mime.ParseMediaType, parameters in any order)."""
    base, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        k, eq, v = part.strip().partition("=")
        if eq:
            params[k.strip().lower()] = v.strip().strip('"')
    return (
        base.strip().lower() == "application/json"
        and params.get("g") == group
        and params.get("v") == version
        and params.get("as") == kind
    )


# -- the player --------------------------------------------------------------------------------------
@dataclass
class _Cached:
    discovery: dict[str, dict[str, Any]]  # "group/version" -> APIVersionDiscovery
    etag: str


@dataclass
class Aggregator:
    """kube-aggregator in front of one server. `base` is the server's https URL, `ca_pem` the
    APIServices' caBundle, `client_pem` the front-proxy client key and certificate (one PEM file,
    kube-apiserver's --proxy-client-cert-file/--proxy-client-key-file)."""

    base: str
    ca_pem: bytes
    client_pem: str
    apiservices: Sequence[APIService]
    available: dict[str, bool] = field(default_factory=dict)
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (reason, message)
    merged: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> APIVersionDiscovery entry
    errors: list[str] = field(default_factory=list)  # what kube-apiserver would log
    sent: list[Exchange] = field(default_factory=list)  # every request that reached the server
    _cache: dict[tuple[str, str], _Cached] = field(default_factory=dict)
    _openapi_v2_etag: str = ""
    _openapi_v3_roots: dict[str, dict[str, Any]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Aggregator:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        ctx.load_cert_chain(self.client_pem)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # -- the wire ----------------------------------------------------------------------------------
    async def send(
        self, apiservice: APIService, path: str, who: Identity, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """One request to the server as the aggregator's transport sends it (front-proxy cert,
        X-Remote-* identity, ServerName of the APIService's Service)."""
        assert self._session is not None, "use `async with Aggregator(...)`"
        wire = [*(headers or {}).items(), *auth_proxy_headers(who)]
        async with self._session.get(
            self.base + path,
            headers=wire,
            server_hostname=apiservice.server_name,
            allow_redirects=False,
            skip_auto_headers=("Accept", "User-Agent"),
        ) as resp:
            body = await resp.read()
        self.sent.append(Exchange(apiservice.name, path, who, dict(headers or {}), resp.status))
        return Reply(resp.status, dict(resp.headers), body)

    async def proxy(
        self, apiservice: APIService, path: str, who: Identity, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """handler_proxy.go: a client's request through the aggregator (503 if not Available)."""
        if not self.available.get(apiservice.name):
            return Reply(503, {"Content-Type": "text/plain; charset=utf-8"}, b"service unavailable\n")
        return await self.send(apiservice, path, who, headers)

    def apiservice_for(self, group_version: str) -> APIService:
        for a in self.apiservices:
            if a.group_version == group_version:
                return a
        raise LookupError(f"no APIService for {group_version}")

    # -- controllers -------------------------------------------------------------------------------
    async def check_availability(self, apiservice: APIService, attempts: int = 5) -> bool:
        url = f"{self.base}/apis/{apiservice.group}/{apiservice.version}"
        last = ""
        for _ in range(attempts):
            try:
                reply = await self.send(
                    apiservice, f"/apis/{apiservice.group}/{apiservice.version}", KUBE_AGGREGATOR_AS_MASTER
                )
            except aiohttp.ClientError as exc:
                last = f"failing or missing response from {url}: {exc}"
                continue
            if 200 <= reply.status < 300:
                self.available[apiservice.name] = True
                self.conditions[apiservice.name] = ("Passed", "all checks passed")
                return True
            last = f"failing or missing response from {url}: bad status from {url}: {reply.status}"
        self.available[apiservice.name] = False
        self.conditions[apiservice.name] = ("FailedDiscoveryCheck", last)
        return False

    async def _fetch_discovery(self, apiservice: APIService) -> dict[str, dict[str, Any]]:
        """fetchFreshDiscoveryForService: {"group/version": APIVersionDiscovery}; raises on error."""
        key = (apiservice.service_namespace, apiservice.service_name)
        cached = self._cache.get(key)
        headers = {"Accept": AGGREGATED_DISCOVERY_ACCEPT}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        reply = await self.proxy(apiservice, "/apis", KUBE_AGGREGATOR_AS_MASTER, headers)
        ctype = reply.headers.get("Content-Type", "")
        if reply.status == 304 and cached is not None:
            return cached.discovery
        if reply.status == 503:
            raise DiscoveryError(f"service {key[0]}/{key[1]}:443 returned non-success response code: 503")
        if reply.status == 200 and _content_type_is_gvk(
            ctype, "apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList"
        ):
            doc = reply.json()
            if (
                doc.get("apiVersion") != "apidiscovery.k8s.io/v2"
                or doc.get("kind") != "APIGroupDiscoveryList"
            ):
                raise DiscoveryError(
                    f"cannot decode {doc.get('apiVersion')}/{doc.get('kind')} as APIGroupDiscoveryList"
                )
            found = {
                f"{g['metadata']['name']}/{v['version']}": v
                for g in doc.get("items") or []
                for v in g.get("versions") or []
            }
            self._cache[key] = _Cached(found, reply.headers.get("Etag", ""))
            return found
        path = f"/apis/{apiservice.group}/{apiservice.version}"
        legacy_headers = {"Accept": "application/json"}
        if cached is not None and cached.etag:
            legacy_headers["If-None-Match"] = cached.etag
        legacy = await self.proxy(apiservice, path, KUBE_AGGREGATOR_NO_GROUPS, legacy_headers)
        if legacy.status != 200:
            raise DiscoveryError(f"failed to download legacy discovery for {path}: {legacy.describe()}")
        resources = convert_group_version_into_to_discovery(legacy.json().get("resources") or [])
        return {
            apiservice.group_version: {"version": apiservice.version, "resources": resources}
        }  # not cached

    async def sync_discovery(self, apiservice: APIService) -> dict[str, Any]:
        """syncAPIService: the group-version's entry in the cluster's document, with freshness."""
        try:
            found = await self._fetch_discovery(apiservice)
            entry = dict(found.get(apiservice.group_version) or {"version": apiservice.version})
            entry["freshness"] = "Current"
        except DiscoveryError as exc:
            self.errors.append(f"discovery of {apiservice.name}: {exc}")
            entry = {"version": apiservice.version, "freshness": "Stale"}
        self.merged[apiservice.name] = entry
        return entry

    async def download_openapi_v2(self, apiservice: APIService) -> int:
        headers = {"Accept": "application/json"}
        if self._openapi_v2_etag:
            headers["If-None-Match"] = self._openapi_v2_etag
        reply = await self.proxy(apiservice, "/openapi/v2", OPENAPI_DOWNLOADER, headers)
        if reply.status == 200:
            reply.json()  # spec.Swagger.UnmarshalJSON
            self._openapi_v2_etag = reply.headers.get("Etag", "")
        elif reply.status not in (304, 404):
            self.errors.append(
                f'loading OpenAPI spec for "{apiservice.name}" failed with: '
                f"failed to download {apiservice.name}: "
                f"failed to retrieve openAPI spec, http error: {reply.describe()}"
            )
        return reply.status

    async def download_openapi_v3(self, apiservice: APIService) -> int:
        """updateAPIServiceSpecLocked: the v3 root, else (404) the v2 document."""
        reply = await self.proxy(apiservice, "/openapi/v3", OPENAPI_DOWNLOADER)
        if reply.status == 404:
            return await self.download_openapi_v2(apiservice)
        if reply.status == 200:
            root = reply.json()
            if not isinstance(root.get("paths"), dict):
                raise DiscoveryError("malformed OpenAPI v3 root")
            self._openapi_v3_roots[apiservice.name] = root
            return 200
        self.errors.append(
            f'loading OpenAPI spec for "{apiservice.name}" failed with: '
            "Error, could not get list of group versions for APIService"
        )
        return reply.status

    def openapi_v3_paths(self) -> dict[str, dict[str, str]]:
        """getOpenAPIV3Root: the merged `paths` of every downloaded root."""
        merged: dict[str, dict[str, str]] = {}
        for root in self._openapi_v3_roots.values():
            merged.update(root["paths"])
        return merged

    async def openapi_v3_document(
        self, key: str, who: Identity, query: str = "", accept: str = "application/json"
    ) -> Reply:
        """handleGroupVersion: a client's `/openapi/v3/<key>` proxied to the server that listed it."""
        for name, root in self._openapi_v3_roots.items():
            if key in root["paths"]:
                apiservice = next(a for a in self.apiservices if a.name == name)
                return await self.proxy(apiservice, f"/openapi/v3/{key}{query}", who, {"Accept": accept})
        return Reply(404, {}, b"")

    async def sync(self) -> None:
        """One round of every controller, in the order a starting kube-apiserver runs them."""
        for a in self.apiservices:
            await self.check_availability(a)
        for a in self.apiservices:
            await self.sync_discovery(a)
        for a in self.apiservices:
            await self.download_openapi_v2(a)
            await self.download_openapi_v3(a)

    # -- what kube-apiserver serves on /apis (our groups) -----------------------------------------
    def discovery_document(self) -> dict[str, Any]:
        """The cluster's aggregated `APIGroupDiscoveryList` (v2), restricted to our APIServices."""
        by_group: dict[str, list[APIService]] = {}
        for a in self.apiservices:
            if a.name in self.merged:
                by_group.setdefault(a.group, []).append(a)
        priority = {g: max(a.group_priority_minimum for a in ss) for g, ss in by_group.items()}
        items = []
        for g in sorted(by_group, key=lambda g: (-priority[g], g)):
            ss = sorted(by_group[g], key=lambda a: (-a.version_priority, preference_key(a.version)))
            items.append({"metadata": {"name": g}, "versions": [self.merged[a.name] for a in ss]})
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }


class DiscoveryError(Exception):
    pass


# -- client-go and the HPA ---------------------------------------------------------------------------
def split_groups_and_resources(
    doc: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]:
    """client-go discovery.SplitGroupsAndResources: (APIGroupList, resources by GV, failed GVs)."""
    groups = []
    resources: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for g in doc.get("items") or []:
        name = g["metadata"]["name"]
        group: dict[str, Any] = {
            "name": name,
            "versions": [],
            "preferredVersion": {"groupVersion": "", "version": ""},
        }
        for v in g.get("versions") or []:
            gv = f"{name}/{v['version']}"
            if v.get("freshness") == "Stale":
                failed[gv] = f"stale GroupVersion discovery: {gv}"
                continue
            version = {"groupVersion": gv, "version": v["version"]}
            group["versions"].append(version)
            if not group["preferredVersion"]["groupVersion"]:
                group["preferredVersion"] = version
            listed = []
            for r in v.get("resources") or []:
                kind = r.get("responseKind") or {}
                if kind and any(kind.values()):
                    listed.append({"name": r["resource"], "kind": kind.get("kind", "")})
                for s in r.get("subresources") or []:
                    sk = s.get("responseKind") or {}
                    if sk and any(sk.values()):
                        listed.append(
                            {"name": f"{r['resource']}/{s['subresource']}", "kind": sk.get("kind", "")}
                        )
            resources[gv] = {"groupVersion": gv, "resources": listed}
        groups.append(group)
    return {"kind": "APIGroupList", "groups": groups}, resources, failed


class MetricsClientError(Exception):
    pass


def custom_metrics_preferred_version(group_list: Mapping[str, Any]) -> str:
    """custom_metrics apiVersionsFromDiscovery.fetchVersions + chooseVersion."""
    group = next((g for g in group_list["groups"] if g["name"] == "custom.metrics.k8s.io"), None)
    if group is None:
        raise MetricsClientError("no custom metrics API (custom.metrics.k8s.io) registered")
    preferred = group["preferredVersion"]["groupVersion"]
    if preferred and preferred in CUSTOM_METRICS_VERSIONS:
        return preferred
    for v in group["versions"]:
        if v["groupVersion"] in CUSTOM_METRICS_VERSIONS:
            return str(v["groupVersion"])
    raise MetricsClientError(NO_METRIC_VERSIONS)


@dataclass
class HorizontalPodAutoscaler:
    """The HPA controller's metrics clients, through the aggregator, as its service account."""

    aggregator: Aggregator
    who: Identity = HPA

    def _check(self, reply: Reply, what: str) -> dict[str, Any]:
        if reply.status != 200:
            raise MetricsClientError(
                f"unable to fetch metrics from {what}: {reply.status} {reply.body[:300]!r}"
            )
        body: dict[str, Any] = reply.json()
        return body

    async def object_metric(self, namespace: str, resource: str, name: str, metric: str) -> dict[str, Any]:
        """GetForObject: one MetricValue of `resource`/`name` (HPA `Object` metric)."""
        group_list, _, _ = split_groups_and_resources(self.aggregator.discovery_document())
        try:
            gv = custom_metrics_preferred_version(group_list)
        except MetricsClientError as exc:
            raise MetricsClientError(f"unable to fetch metrics from custom metrics API: {exc}") from None
        path = f"/apis/{gv}/namespaces/{namespace}/{resource}/{name}/{metric}"
        reply = await self.aggregator.proxy(
            self.aggregator.apiservice_for(gv), path, self.who, {"Accept": KUBE_CONTROLLER_MANAGER_ACCEPT}
        )
        body = self._check(reply, "custom metrics API")
        if body.get("kind") != "MetricValueList":
            raise MetricsClientError(
                f"the custom metrics API server didn't return MetricValueList: {body.get('kind')}"
            )
        if len(body["items"]) != 1:
            raise MetricsClientError(
                f"the custom metrics API server returned {len(body['items'])} results "
                "when we asked for exactly one"
            )
        return dict(body["items"][0])

    async def external_metric(self, namespace: str, metric: str, selector: str = "") -> list[dict[str, Any]]:
        """external_metrics List (no discovery): the items HPA sums; none is an error."""
        gv = "external.metrics.k8s.io/v1beta1"
        query = f"?labelSelector={selector}" if selector else ""
        reply = await self.aggregator.proxy(
            self.aggregator.apiservice_for(gv),
            f"/apis/{gv}/namespaces/{namespace}/{metric}{query}",
            self.who,
            {"Accept": KUBE_CONTROLLER_MANAGER_ACCEPT},
        )
        items: list[dict[str, Any]] = self._check(reply, "external metrics API")["items"]
        if not items:
            raise MetricsClientError("no metrics returned from external metrics API")
        return items
