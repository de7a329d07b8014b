"""A thin, dict-based client over kubernetes-asyncio's ApiClient.

kubernetes-asyncio brings configuration (kubeconfig, in-cluster service account, exec
plugins, token refresh), TLS and authentication; we use its `call_api` directly so every
resource comes back as a plain dict and every request names its content type explicitly
(a dict body to the generated `patch_*` methods goes out as json-patch unless told).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from metrics_server.names import path_segment_errors
from metrics_server.startup import StartupError

__all__ = [
    "MERGE_PATCH",
    "ApiException",
    "InvalidPathSegment",
    "KubeClient",
    "KubeConfigError",
    "api_client",
    "error_reason",
    "resource_path",
]

MERGE_PATCH = "application/merge-patch+json"
#: a Kubernetes object or list as decoded JSON (not a content type)
KubeObject = dict[str, Any]


def resource_path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object (`group` "" is the core API).

    Every segment is percent-encoded (`/`, `%`, `.` sequences cannot change the path) even
    though the model already admits only valid names: a name is never a path.
    """
    base = f"/apis/{_segment(group)}/{_segment(version)}" if group else f"/api/{_segment(version)}"
    if namespace:
        base += f"/namespaces/{_segment(namespace)}"
    base += f"/{_segment(plural)}"
    if name:
        base += f"/{_segment(name)}"
        if subresource:
            base += f"/{_segment(subresource)}"
    return base


class InvalidPathSegment(ValueError):
    """A name the API server would refuse in a path (client-go's Request.Name() refuses it too)."""


def _segment(value: str) -> str:
    """One path segment, percent-encoded; `.`, `..`, `/` and `%` are refused as client-go does."""
    errors = path_segment_errors(value)
    if errors:
        raise InvalidPathSegment(f"invalid path segment {value!r}: {'; '.join(errors)}")
    return quote(value, safe="")


def error_reason(exc: ApiException) -> str:
    """The `reason` of the Status in an ApiException's body ("" if there is none)."""
    import json

    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return ""
    return str(body.get("reason") or "") if isinstance(body, dict) else ""


class KubeConfigError(StartupError):
    """No usable Kubernetes configuration: neither in-cluster nor a kubeconfig."""


HOW_TO_FIX = "pass --kubeconfig FILE, or --manifests DIR to run in local mode without a cluster"


async def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """The kubernetes-asyncio ApiClient every part of the server talks to the API server with.

    `kubeconfig` if given; else the in-cluster service account when running in a pod and
    $KUBECONFIG is unset; else the first file of $KUBECONFIG, else ~/.kube/config. Nothing
    usable is a `KubeConfigError` saying what is missing and how to fix it."""
    cfg = k8s_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException as exc:
            raise KubeConfigError(
                f"in-cluster Kubernetes configuration is unusable: {exc}; {HOW_TO_FIX}"
            ) from exc
        return k8s_client.ApiClient(configuration=cfg)
    path = _kubeconfig_path(kubeconfig)
    try:
        await k8s_config.load_kube_config(
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        raise KubeConfigError(f"cannot use kubeconfig {path}: {exc}; {HOW_TO_FIX}") from exc
    return k8s_client.ApiClient(configuration=cfg)


def _kubeconfig_path(kubeconfig: str | None) -> str:
    """`--kubeconfig`, else the first file of $KUBECONFIG, else ~/.kube/config; it must exist."""
    given = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = os.path.expanduser(given or "~/.kube/config")
    if not os.path.isfile(path):
        where = "--kubeconfig" if kubeconfig else "$KUBECONFIG" if given else "the default location"
        raise KubeConfigError(
            f"no Kubernetes configuration: not running in a pod and no kubeconfig at {path} ({where}); "
            + HOW_TO_FIX
        )
    return path


class KubeClient:
    """One ApiClient (one connection pool) for everything this process sends to the API server."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self.api = api_client

    @classmethod
    async def create(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """A client configured by `api_client` (the one place that reads Kubernetes configuration)."""
        return cls(await api_client(kubeconfig, context))

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = 30.0,
    ) -> KubeObject:
        """Send one request; returns the decoded JSON body, raises ApiException on non-2xx."""
        result = await self.api.call_api(
            path,
            method,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=True,
            _request_timeout=request_timeout,
        )
        return result if isinstance(result, dict) else {}

    async def stream(
        self, path: str, query: Mapping[str, Any], read_timeout: float
    ) -> aiohttp.ClientResponse:
        """Open a watch stream; the caller reads lines and must release the response."""
        resp = await self.api.call_api(
            path,
            "GET",
            query_params=[(k, v) for k, v in query.items() if v is not None],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout),
        )
        if isinstance(resp, tuple):  # (data, status, headers) when not "http data only"
            resp = resp[0]
        assert isinstance(resp, aiohttp.ClientResponse)
        if not 200 <= resp.status <= 299:
            data = await resp.read()
            resp.release()
            exc = ApiException(status=resp.status, reason=resp.reason)
            exc.body = data.decode("utf-8", errors="replace")  # type: ignore[assignment]
            raise exc
        return resp

    # convenience -------------------------------------------------------------------------------
    async def get(self, path: str) -> KubeObject:
        return await self.request("GET", path)

    async def list(self, path: str, **query: Any) -> KubeObject:
        return await self.request("GET", path, query=query)

    async def create_object(self, path: str, body: KubeObject) -> KubeObject:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: KubeObject) -> KubeObject:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: KubeObject) -> KubeObject:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> KubeObject:
        return await self.request("DELETE", path)
