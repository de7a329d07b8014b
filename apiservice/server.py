"""Start and stop the aggregated API server (HTTPS) and the KEDA gRPC scaler.

async with await start_api(store, states, options) as runner:
    ...

`start_api` either returns a running ApiRunner or, on a failure half-way (a port already in
use, an unreadable certificate), closes what it opened and raises.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from apiservice.api import MetricsApi, build_server
from apiservice.auth import (
    AccessReviewer,
    Authenticator,
    Authorizer,
    KubeReviewClient,
    RequestHeaderConfig,
    TokenReviewer,
    kube_api_client,
)
from apiservice.certs import CertificateAuthorities, TlsManager, ensure_self_signed
from apiservice.connections import GuardedTCPSite, listen
from apiservice.flags import ApiOptions
from metrics_server.startup import StartupError
from metrics_server.state import MetricStates
from metrics_server.store.base import Store

log = logging.getLogger(__name__)

AUTH_CONFIGMAP = "kube-system/extension-apiserver-authentication"


@dataclass
class ApiRunner:
    api: MetricsApi
    authenticator: Authenticator
    authorizer: Authorizer
    port: int | None = None  # bound HTTPS (or --insecure-http) port
    grpc_port: int | None = None  # bound KEDA gRPC port, None when disabled
    scheme: str = "https"
    #: PEM of the self-signed CA (None when --tls-cert-file was given): an APIService's caBundle.
    ca_bundle: bytes | None = None
    tls: TlsManager | None = None
    site: GuardedTCPSite | None = None
    _runner: web.BaseRunner | None = None
    _grpc: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    async def __aenter__(self) -> ApiRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), release everything."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._runner is not None:
            await self._runner.cleanup()
        await _close_all(self._closers)


async def _close_all(closers: list[Callable[[], Any]]) -> None:
    """Close review clients and the like; a failing close must not stop the others."""
    for close in closers:
        with contextlib.suppress(Exception):
            result = close()
            if asyncio.iscoroutine(result):
                await result


@dataclass
class KedaAuth:
    """The `--keda-auth` middleware and the review clients it owns (closed on shutdown)."""

    middleware: Any
    closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        await _close_all(self.closers)


def _read(path: str | None) -> bytes:
    return Path(path).read_bytes() if path else b""


def _json_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return [p.strip() for p in text.split(",") if p.strip()]
    return [str(v) for v in value] if isinstance(value, list) else None


class _AuthConfigMap:
    """Applies `kube-system/extension-apiserver-authentication` where flags did not say otherwise."""

    def __init__(
        self,
        options: ApiOptions,
        requestheader: RequestHeaderConfig,
        cas: CertificateAuthorities,
        tls: TlsManager | None,
    ) -> None:
        self.options = options
        self.requestheader = requestheader
        self.cas = cas
        self.tls = tls

    def apply(self, data: dict[str, str] | None) -> None:
        if not data:
            return
        o, rh = self.options, self.requestheader
        if o.requestheader_allowed_names is None:
            names = _json_list(data.get("requestheader-allowed-names"))
            rh.allowed_names = names or []
        for flag_value, key, attr in (
            (o.requestheader_username_headers, "requestheader-username-headers", "username_headers"),
            (o.requestheader_uid_headers, "requestheader-uid-headers", "uid_headers"),
            (o.requestheader_group_headers, "requestheader-group-headers", "group_headers"),
            (
                o.requestheader_extra_headers_prefix,
                "requestheader-extra-headers-prefix",
                "extra_headers_prefixes",
            ),
        ):
            if flag_value is None:
                got = _json_list(data.get(key))
                if got:
                    setattr(rh, attr, got)
        rh_pem = (
            None
            if o.requestheader_client_ca_file
            else (data.get("requestheader-client-ca-file") or "").encode()
        )
        cl_pem = None if o.client_ca_file else (data.get("client-ca-file") or "").encode()
        if self.tls is not None:
            changed = self.tls.set_cas(rh_pem, cl_pem)
        else:
            changed = self.cas.set(
                rh_pem if rh_pem is not None else self.cas.requestheader_pem,
                cl_pem if cl_pem is not None else self.cas.client_pem,
            )
        if changed:
            log.info("client CAs updated from ConfigMap %s", AUTH_CONFIGMAP)


async def inject_ca_bundle(api_client: Any, names: list[str], ca_pem: bytes) -> None:
    """Patch `spec.caBundle` of the named APIServices with our CA (self-signed mode)."""
    from kubernetes_asyncio import client

    api = client.ApiregistrationV1Api(api_client)
    body = {"spec": {"caBundle": base64.b64encode(ca_pem).decode()}}
    for name in names:
        try:
            await api.patch_api_service(name, body, _content_type="application/merge-patch+json")  # type: ignore[call-arg]
            log.info("patched APIService %s with the self-signed CA", name)
        except Exception as exc:  # the server still runs; the operator sees why HPA cannot reach it
            log.error("could not patch caBundle of APIService %s: %s", name, exc)


async def _reviewers(
    o: ApiOptions, kube_auth: Any, api_client: Any
) -> tuple[TokenReviewer | None, AccessReviewer | None, list[Callable[[], Any]]]:
    """TokenReview/SubjectAccessReview backends: `kube_auth` if given, else clients built from
    --authentication-kubeconfig / --authorization-kubeconfig, else `api_client`, else
    in-cluster / --kubeconfig; none in local mode unless asked for."""
    if kube_auth is not None:
        return kube_auth, kube_auth, []
    needs_kube = (
        o.kubernetes_mode
        or o.authorization_mode == "Webhook"
        or bool(o.authentication_kubeconfig)
        or bool(o.authorization_kubeconfig)
    )
    if not needs_kube:
        return None, None, []
    closers: list[Callable[[], Any]] = []
    authn_client, authz_client = api_client, None
    if o.authentication_kubeconfig or authn_client is None:
        authn_client = await kube_api_client(o.authentication_kubeconfig, o.kubeconfig)
        closers.append(authn_client.close)
    if o.authorization_kubeconfig and o.authorization_kubeconfig != o.authentication_kubeconfig:
        authz_client = await kube_api_client(o.authorization_kubeconfig, o.kubeconfig)
        closers.append(authz_client.close)
    reviews = KubeReviewClient(authn_client, authz_client)
    return reviews, reviews, closers


async def keda_auth_middleware_for(o: ApiOptions, kube_api: Any = None) -> KedaAuth:
    """The `--keda-auth` middleware for the plain-HTTP metrics port (bearer token: TokenReview,
    then SubjectAccessReview `get keptnmetrics` in the namespace).

    `kube_api`: a kubernetes-asyncio ApiClient to send the reviews with (default: built from
    --authentication-kubeconfig / in-cluster / --kubeconfig)."""
    from dataclasses import replace

    from apiservice.auth import keda_auth_middleware

    forced = replace(o, authorization_mode="Webhook")  # a token always needs reviews
    token_reviewer, access_reviewer, closers = await _reviewers(forced, None, kube_api)
    authenticator = Authenticator(CertificateAuthorities(), None, token_reviewer, token_ttl=o.token_cache_ttl)
    authorizer = Authorizer(
        "Webhook", access_reviewer, allowed_ttl=o.authz_allowed_ttl, denied_ttl=o.authz_denied_ttl
    )
    return KedaAuth(keda_auth_middleware(o, authenticator, authorizer), closers)


async def _shared_ca(o: ApiOptions, api_client: Any) -> tuple[bytes, bytes]:
    from apiservice.shared_ca import shared_ca
    from metrics_server.kube.client import KubeClient

    if api_client is not None:  # the caller's client: wrap it, do not close it
        return await shared_ca(KubeClient(api_client), o.server_namespace)
    async with await KubeClient.create(o.kubeconfig) as client:
        return await shared_ca(client, o.server_namespace)


def _grpc_listener(o: ApiOptions, tls: TlsManager | None) -> tuple[str, int, Any]:
    """(address, port, credentials) of the gRPC scaler: TLS with the serving certificate unless
    --keda-grpc-insecure; local --insecure-http has no certificate, so plain text on loopback."""
    if o.keda_grpc_insecure:
        return o.bind_address, o.grpc_port, None
    if tls is None:
        return "127.0.0.1", o.grpc_port, None
    from apiservice.grpc_tls import GrpcServingCredentials

    creds = GrpcServingCredentials(tls.cert_file, tls.key_file, o.keda_grpc_client_ca_file)
    return o.bind_address, o.grpc_port, creds.credentials()


async def start_api(
    store: Store,
    states: MetricStates,
    options: ApiOptions,
    *,
    kube_auth: Any = None,
    auth_source: Any = None,
    api_client: Any = None,
    clock: Callable[[], float] = time.time,
) -> ApiRunner:
    """Start the HTTPS server of the metrics APIs and the KEDA gRPC scaler.

    kube_auth: an object with `review_token(token)` and `review_access(user, attrs)` (see
      apiservice.auth.TokenReviewer/AccessReviewer); default: built from
      --authentication-kubeconfig / --authorization-kubeconfig, else in-cluster, else
      --kubeconfig, when needed (Kubernetes mode or --authorization-mode Webhook).
    auth_source: object with `auth_configmap` (dict or None) and
      `subscribe_auth_configmap(callback)`; default: `store` if it has them (Kubernetes mode).
    api_client: kubernetes-asyncio ApiClient used to patch APIService caBundles.
    """
    o = options
    cas = CertificateAuthorities()
    requestheader = RequestHeaderConfig()
    if o.requestheader_allowed_names is not None:
        requestheader.allowed_names = list(o.requestheader_allowed_names)
    if o.requestheader_username_headers:
        requestheader.username_headers = list(o.requestheader_username_headers)
    if o.requestheader_uid_headers:
        requestheader.uid_headers = list(o.requestheader_uid_headers)
    if o.requestheader_group_headers:
        requestheader.group_headers = list(o.requestheader_group_headers)
    if o.requestheader_extra_headers_prefix:
        requestheader.extra_headers_prefixes = list(o.requestheader_extra_headers_prefix)

    stack = contextlib.AsyncExitStack()  # what is opened, closed again if the start fails half-way
    async with stack:
        runner = await _start(
            stack, store, states, o, cas, requestheader, kube_auth, auth_source, api_client, clock
        )
        stack.pop_all()
    return runner


async def _start(
    stack: contextlib.AsyncExitStack,
    store: Store,
    states: MetricStates,
    o: ApiOptions,
    cas: CertificateAuthorities,
    requestheader: RequestHeaderConfig,
    kube_auth: Any,
    auth_source: Any,
    api_client: Any,
    clock: Callable[[], float],
) -> ApiRunner:
    closers: list[Callable[[], Any]] = []
    stack.push_async_callback(_close_all, closers)
    tls, ca_bundle = await _serving_tls(o, cas, api_client)

    # Review backends (TokenReview / SubjectAccessReview).
    if (
        kube_auth is not None
        and not hasattr(kube_auth, "review_access")
        and hasattr(kube_auth, "auth_configmap")
    ):
        auth_source, kube_auth = auth_source or kube_auth, None  # a ConfigMap source passed as kube_auth
    token_reviewer, access_reviewer, more = await _reviewers(o, kube_auth, api_client)
    closers.extend(more)

    authenticator = Authenticator(
        cas, requestheader, token_reviewer, anonymous=o.anonymous_auth, token_ttl=o.token_cache_ttl
    )
    authorizer = Authorizer(
        o.authorization_mode,
        access_reviewer if o.authorization_mode == "Webhook" else None,
        allowed_ttl=o.authz_allowed_ttl,
        denied_ttl=o.authz_denied_ttl,
    )

    source = auth_source
    if source is None and o.kubernetes_mode and hasattr(store, "auth_configmap"):
        source = store
    if source is not None:
        _follow_auth_configmap(source, _AuthConfigMap(o, requestheader, cas, tls))

    api = MetricsApi(
        store,
        states,
        authenticator,
        authorizer,
        max_staleness=o.max_staleness,
        discovery_limit=o.discovery_limit,
        always_allow_paths=o.always_allow_paths,
        clock=clock,
    )
    server = build_server(api, keepalive_timeout=o.limits.keep_alive_timeout)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host = "127.0.0.1" if o.insecure_http else o.bind_address
    site = GuardedTCPSite(
        runner, host, o.secure_port, limits=o.limits, ssl_context=tls.context if tls else None, backlog=1024
    )
    await listen(site, "--secure-port")
    port = None
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            port = addr[1]
            break
    result = ApiRunner(
        api=api,
        authenticator=authenticator,
        authorizer=authorizer,
        port=port,
        scheme="http" if o.insecure_http else "https",
        ca_bundle=ca_bundle,
        tls=tls,
        site=site,
        _runner=runner,
        _closers=closers,
    )
    log.info("metrics APIs listening on %s://%s:%s", result.scheme, host, port)
    stack.pop_all()  # from here on, result.stop() closes everything
    stack.push_async_callback(result.stop)
    await _start_beside_https(result, store, o, api_client)
    return result


async def _start_beside_https(result: ApiRunner, store: Store, o: ApiOptions, api_client: Any) -> None:
    """What runs next to the HTTPS server and is stopped by `result.stop()`: the KEDA gRPC
    scaler, the certificate watch; then the caBundle injection (self-signed, Kubernetes mode)."""
    if o.grpc_port:
        result._grpc, result.grpc_port = await _start_grpc(store, result.api, o, result.tls)
    if result.tls is not None and o.cert_reload_interval > 0:
        result._tasks.append(asyncio.create_task(result.tls.watch(o.cert_reload_interval)))
    if o.kubernetes_mode and o.apiservice_ca_injection and result.ca_bundle is not None:
        client = api_client
        if client is None:
            client = await kube_api_client(None, o.kubeconfig)
            result._closers.append(client.close)
        await inject_ca_bundle(client, o.apiservice_ca_injection, result.ca_bundle)


async def _serving_tls(
    o: ApiOptions, cas: CertificateAuthorities, api_client: Any
) -> tuple[TlsManager | None, bytes | None]:
    """The serving certificate (given, or self-signed; from the shared CA when caBundles are
    injected) and the CA bundle to inject; (None, None) for local --insecure-http."""
    if o.insecure_http:
        if o.kubernetes_mode:
            raise ValueError("--insecure-http is only allowed in local mode")
        cas.set(_read(o.requestheader_client_ca_file), _read(o.client_ca_file))
        return None, None
    ca_bundle: bytes | None = None
    if o.tls_cert_file and o.tls_private_key_file:
        cert_file, key_file = o.tls_cert_file, o.tls_private_key_file
    else:
        ca = None
        if o.kubernetes_mode and o.apiservice_ca_injection:
            ca = await _shared_ca(o, api_client)  # every replica must present a cert from the injected CA
        cert_path, key_path, ca_bundle = ensure_self_signed(o.cert_dir, o.self_signed_hosts, ca)
        cert_file, key_file = str(cert_path), str(key_path)
    tls = TlsManager(
        cert_file,
        key_file,
        cas,
        requestheader_ca_file=o.requestheader_client_ca_file,
        client_ca_file=o.client_ca_file,
    )
    return tls, ca_bundle


def _follow_auth_configmap(source: Any, configmap: _AuthConfigMap) -> None:
    """The authentication ConfigMap (Kubernetes mode): CA files and header names not given as
    flags, applied now and on every change."""
    configmap.apply(getattr(source, "auth_configmap", None))
    subscribe = getattr(source, "subscribe_auth_configmap", None)
    if subscribe is None:
        return

    def on_configmap(*args: Any) -> None:
        data = args[0] if args else getattr(source, "auth_configmap", None)
        try:
            configmap.apply(data)
        except Exception:
            log.exception("applying %s failed; keeping the previous settings", AUTH_CONFIGMAP)

    subscribe(on_configmap)


async def _start_grpc(
    store: Store, api: MetricsApi, o: ApiOptions, tls: TlsManager | None
) -> tuple[Any, int]:
    """The KEDA gRPC scaler. grpcio is the optional `grpc` extra: without it a non-zero
    --grpc-port is a start-up error, never a scaler silently missing."""
    try:
        from apiservice.keda_grpc import ExternalScaler, start_grpc_scaler
    except ImportError as exc:
        raise StartupError(
            f"--grpc-port {o.grpc_port}: the KEDA gRPC scaler needs grpcio ({exc.name or exc} is not"
            " installed); install keptn-metrics[grpc] or pass --grpc-port 0"
        ) from exc
    scaler = ExternalScaler(store, api.fresh_value)
    return await start_grpc_scaler(scaler, *_grpc_listener(o, tls))
