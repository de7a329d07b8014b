"""What the fuzzers aim at: every route of both ports and the gRPC methods, a server that
runs them in a background thread, and raw requests that need not be well-formed.

Used by tests/api/test_fuzz_routes.py (hypothesis) and benchmarks/fuzz.py (>= 10,000 requests).
A 5xx other than 503 (no fresh value, not ready: by design) is a defect; so is a server that
stops answering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RES = "keptnmetrics.metrics.keptn.sh"

#: route templates of the secure port; {ns}, {name}, {metric}, {res}, {ver} are filled by fuzzers
SECURE_ROUTES = (
    "/healthz",
    "/readyz",
    "/livez",
    "/metrics",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/apis/custom.metrics.k8s.io/{ver}",
    "/apis",
    "/apis/custom.metrics.k8s.io",
    "/apis/custom.metrics.k8s.io/{ver}",
    "/apis/custom.metrics.k8s.io/{ver}/namespaces/{ns}/{res}/{name}/{metric}",
    "/apis/custom.metrics.k8s.io/{ver}/namespaces/{ns}/{res}/*/{metric}",
    "/apis/custom.metrics.k8s.io/{ver}/namespaces/{ns}/{res}/%2A/{metric}",
    "/apis/custom.metrics.k8s.io/{ver}/{res}/{name}/{metric}",
    "/apis/custom.metrics.k8s.io/{ver}/namespaces/{ns}/metrics/{metric}",
    "/apis/custom.metrics.k8s.io/{ver}/namespaces/{name}/{metric}",
    "/apis/external.metrics.k8s.io",
    "/apis/external.metrics.k8s.io/{ver}",
    "/apis/external.metrics.k8s.io/{ver}/namespaces/{ns}/{metric}",
    "/{name}",
    "/apis/{name}/{ver}/{metric}",
)
METRICS_ROUTES = (
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/api/v1/metrics/{ns}/{name}",
    "/api/v1/metrics/{ns}",
    "/api/v1/{name}",
    "/{name}",
)
VERSIONS = ("v1beta2", "v1beta1", "v1", "v1beta3", "")
RESOURCES = (RES, "keptnmetrics.metrics.sh", "keptnmetrics", "pods", "namespaces", "*", "")
NAMESPACES = ("shop", "default", "keptn-system", "", "*", "..", "kube-system")
NAMES = ("cpu", "stale", "failing", "*", "%2A", "..", "missing", "")
QUERY_KEYS = ("labelSelector", "metricLabelSelector", "fieldSelector", "watch", "timeout", "limit", "x")
HEADER_NAMES = (
    "Accept",
    "Content-Type",
    "Authorization",
    "X-Remote-User",
    "X-Remote-Group",
    "X-Remote-Extra-Scopes",
    "Impersonate-User",
    "Range",
    "Transfer-Encoding",
    "Content-Length",
    "Connection",
    "X-Forwarded-For",
)
METHODS = ("GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW")
#: statuses a fuzzed request may get: anything below 500, and 503 by design
ACCEPTABLE = frozenset(range(100, 500)) | {503}
GRPC_METHODS = ("IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics")


def acceptable(status: int | None) -> bool:
    return status is not None and status in ACCEPTABLE


def raw_request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 request exactly as given (no validation: fuzzers want malformed ones too)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: fuzz"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("utf-8", errors="surrogateescape")


def send(port: int, payload: bytes, tls: ssl.SSLContext | None, timeout: float = 10.0) -> int | None:
    """Send one raw request; the status code, or None if the server answered nothing parseable."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        sock: socket.socket = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        try:
            sock.sendall(payload)
            head = b""
            while b"\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        finally:
            if tls:
                with contextlib.suppress(OSError):
                    sock.close()
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1])
    return None


def _world() -> tuple[Any, Any]:
    from metrics_server.model import ObjectKey, parse_metric
    from metrics_server.state import MetricStates
    from metrics_server.store.base import IndexedStore

    store, states = IndexedStore(), MetricStates()
    now = time.time()
    for ns, name, value, error, age in (
        ("shop", "cpu", 2.5, "", 1.0),
        ("shop", "stale", 1.0, "", 10_000.0),
        ("shop", "failing", None, "backend down", 1.0),
        ("default", "cpu", 7.0, "", 1.0),
    ):
        store.apply(
            parse_metric(
                {
                    "apiVersion": "metrics.keptn.sh/v1",
                    "kind": "KeptnMetric",
                    "metadata": {"namespace": ns, "name": name, "labels": {"tier": "3", "app": "web"}},
                    "spec": {"provider": {"name": "prom"}, "query": "up", "fetchIntervalSeconds": 10},
                }
            )
        )
        st = states.ensure(ObjectKey(ns, name), 10)
        st.value, st.value_text = value, "" if value is None else repr(value)
        st.last_success = None if value is None else now - age
        st.last_attempt, st.error = now - age, error
    store.mark_synced()
    return store, states


@dataclass
class FuzzServer:
    """The secure port (TLS, anonymous allowed, AlwaysAllow), the metrics port and the gRPC
    scaler (TLS), served from a loop in a background thread."""

    secure_port: int = 0
    metrics_port: int = 0
    grpc_port: int = 0
    ca_pem: bytes = b""
    extra_args: tuple[str, ...] = ()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: Any = None
    _dir: Any = None
    _closers: list[Any] = field(default_factory=list)

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        return ctx

    def __enter__(self) -> FuzzServer:
        import trustme

        self._dir = tempfile.TemporaryDirectory()
        d = Path(self._dir.name)
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(d / "server.pem")
        )
        self.ca_pem = ca.cert_pem.bytes()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.grpc_port = s.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(d, ready))
            except BaseException as exc:  # reported to the caller
                errors.append(exc)
                ready.set()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    async def _serve(self, d: Path, ready: threading.Event) -> None:
        from aiohttp import web

        from apiservice import connections
        from apiservice.flags import ApiOptions, add_arguments
        from apiservice.server import start_api
        from metrics_server.http_server import MetricsPortApp

        store, states = _world()
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            [
                "--secure-port", "0", "--grpc-port", str(self.grpc_port), "--bind-address", "127.0.0.1",
                "--tls-cert-file", str(d / "server.pem"), "--tls-private-key-file", str(d / "server.pem"),
                "--anonymous-auth", "--authorization-mode", "AlwaysAllow", "--cert-reload-interval", "0",
                *self.extra_args,
            ]
        )  # fmt: skip
        runner = await start_api(store, states, ApiOptions.from_args(args, kubernetes_mode=False))
        assert runner.port is not None
        self.secure_port = runner.port
        limits = connections.limits_from_args(args)  # the metrics port as `serve` runs it
        metrics = web.AppRunner(
            MetricsPortApp(store, states).build(),
            access_log=None,
            shutdown_timeout=0.5,
            keepalive_timeout=limits.keep_alive_timeout,
        )
        await metrics.setup()
        site = connections.GuardedTCPSite(metrics, "127.0.0.1", 0, limits=limits)
        await site.start()
        self.metrics_port = site.port
        self._stop = asyncio.Event()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await metrics.cleanup()
            await runner.stop(grace=0.5)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self._dir is not None:
            self._dir.cleanup()


@contextlib.contextmanager
def fuzz_server(*extra_args: str) -> Iterator[FuzzServer]:
    with FuzzServer(extra_args=extra_args) as server:
        yield server


GRPC_ACCEPTABLE = frozenset({"OK", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAVAILABLE"})


def grpc_call(channel: Any, method: str, name: str, namespace: str, metadata: dict[str, str]) -> str:
    """Call one scaler method; the gRPC status code's name ("OK" on success)."""
    import grpc

    from apiservice import keda_proto as pb

    ref = pb.ScaledObjectRef(name=name, namespace=namespace)
    for k, v in metadata.items():
        ref.scalerMetadata[k] = v
    path = f"/externalscaler.ExternalScaler/{method}"
    try:
        if method == "StreamIsActive":
            call = channel.unary_stream(
                path,
                request_serializer=pb.ScaledObjectRef.SerializeToString,
                response_deserializer=pb.IsActiveResponse.FromString,
            )(ref, timeout=5)
            next(iter(call))
            call.cancel()
            return "OK"
        if method == "GetMetrics":
            request: Any = pb.GetMetricsRequest(
                scaledObjectRef=ref, metricName=metadata.get("keptnMetricName", "")
            )
            resp_type: Any = pb.GetMetricsResponse
        else:
            request, resp_type = (
                ref,
                (pb.IsActiveResponse if method == "IsActive" else pb.GetMetricSpecResponse),
            )
        channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=resp_type.FromString,
        )(request, timeout=5)
        return "OK"
    except grpc.RpcError as err:
        return str(err.code().name)


def grpc_channel(server: FuzzServer) -> Any:
    import grpc

    creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
    return grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", creds)
