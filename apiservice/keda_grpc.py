"""KEDA external scaler (gRPC, KEDA's externalscaler.proto) over the same values as the APIs.

A ScaledObject trigger of `type: external` names the KeptnMetric in its metadata:

    scalerAddress: keptn-metrics.keptn-system.svc:9998
    keptnMetricName: cpu-throttling     # required (alias: metricName)
    keptnMetricNamespace: podtato-kubectl  # default: the ScaledObject's namespace (alias: namespace)
    targetValue: "10"                   # default 1
    activationValue: "0"                # default 0: active while value > activation
                                        # (alias: activationTargetValue, KEDA's usual spelling)

A ScaledObject reads KeptnMetrics of its own namespace (`scaledObjectRef.namespace`); one of
another namespace only when that KeptnMetric's annotation `metrics.keptn.sh/allowed-namespaces`
lists the ScaledObject's namespace (PERMISSION_DENIED otherwise). TLS with the serving
certificate by default (see apiservice/grpc_tls.py).

Errors are gRPC statuses: NOT_FOUND (no such KeptnMetric), UNAVAILABLE (no fresh value:
same staleness rule as the HTTP APIs), INVALID_ARGUMENT (bad metadata), PERMISSION_DENIED
(another namespace's KeptnMetric that did not opt in, existing or not). KEDA then applies
the ScaledObject's fallback, if any.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from apiservice import keda_proto as pb
from apiservice.selfmetrics import observe
from apiservice.status import ApiError
from metrics_server.excerpt import excerpt
from metrics_server.model import KeptnMetric, ObjectKey, ObjectMeta
from metrics_server.startup import StartupError
from metrics_server.store.base import Store
from metrics_server.tenancy import may_read_metric, metric_denied_message

log = logging.getLogger(__name__)

ValueFn = Callable[[KeptnMetric], tuple[float, float]]  # MetricsApi.fresh_value


@dataclass(frozen=True)
class Trigger:
    key: ObjectKey
    target: float
    activation: float
    consumer: str = ""  # scaledObjectRef.namespace: whose ScaledObject asks (tenancy)


#: targetSize is an int64 on the wire: ceil(targetValue) must fit (the largest double below 2**63).
MAX_TARGET_VALUE = float(2**63 - 1024)


def _number(meta: Any, name: str, default: float) -> float:
    raw = meta.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"scalerMetadata.{name}={excerpt(raw, 64)!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"scalerMetadata.{name} must be finite, got {value}")
    return value


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_trigger(ref: Any) -> Trigger:
    meta = ref.scalerMetadata
    name = meta.get("keptnMetricName") or meta.get("metricName") or ""
    if not name:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "scalerMetadata.keptnMetricName is required")
    namespace = meta.get("keptnMetricNamespace") or meta.get("namespace") or ref.namespace
    if not namespace:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT, "no namespace: set scalerMetadata.keptnMetricNamespace"
        )
    target = _number(meta, "targetValue", 1.0)
    if target <= 0:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "scalerMetadata.targetValue must be greater than 0")
    if target > MAX_TARGET_VALUE:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"scalerMetadata.targetValue must be at most {MAX_TARGET_VALUE:.0f} (KEDA's int64 targetSize)",
        )
    activation_key = "activationValue" if "activationValue" in meta else "activationTargetValue"
    return Trigger(ObjectKey(namespace, name), target, _number(meta, activation_key, 0.0), ref.namespace)


def _denied(trigger: Trigger) -> str:
    return metric_denied_message(ObjectMeta(trigger.key.namespace, trigger.key.name), trigger.consumer)


class ExternalScaler:
    def __init__(self, store: Store, value_fn: ValueFn, *, stream_interval: float = 1.0) -> None:
        self.store = store
        self.value_fn = value_fn
        self.stream_interval = stream_interval

    def _value(self, trigger: Trigger) -> float:
        metric = self.store.get_metric(trigger.key)
        if trigger.key.namespace != trigger.consumer and (
            metric is None or not may_read_metric(metric.meta, trigger.consumer)
        ):
            # the same answer whether or not it exists: no probing other tenants' metric names
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, _denied(trigger))
        if metric is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"KeptnMetric {excerpt(str(trigger.key))} not found")
        try:
            return self.value_fn(metric)[0]
        except ApiError as err:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, err.message) from None

    async def _run(self, method: str, context: grpc.aio.ServicerContext, fn: Callable[[], Any]) -> Any:
        """Answer with `fn()`; every outcome is counted with the status actually sent, before it is sent."""
        start = time.perf_counter()
        try:
            answer = fn()
        except _Abort as exc:
            observe(f"keda/grpc/{method}", exc.code.value[0], time.perf_counter() - start)
            await context.abort(exc.code, exc.message)
        except Exception as exc:  # a bug: INTERNAL (counted as such), never an UNKNOWN counted as OK
            log.exception("KEDA gRPC %s failed", method)
            observe(f"keda/grpc/{method}", grpc.StatusCode.INTERNAL.value[0], time.perf_counter() - start)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})")
        observe(f"keda/grpc/{method}", grpc.StatusCode.OK.value[0], time.perf_counter() - start)
        return answer

    async def is_active(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def answer() -> Any:
            trigger = parse_trigger(request)
            return pb.IsActiveResponse(result=self._value(trigger) > trigger.activation)

        return await self._run("IsActive", context, answer)

    async def stream_is_active(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Sends the activity now and whenever it changes (checked every `stream_interval` s)."""
        try:
            trigger = parse_trigger(request)
        except _Abort as exc:
            await context.abort(exc.code, exc.message)
            return
        last: bool | None = None
        while True:
            try:
                active = self._value(trigger) > trigger.activation
            except _Abort as exc:
                if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                    await context.abort(exc.code, exc.message)
                    return
                active = False  # no fresh value: not active (KEDA keeps polling GetMetrics too)
            if active != last:
                last = active
                yield pb.IsActiveResponse(result=active)
            await asyncio.sleep(self.stream_interval)

    async def get_metric_spec(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def answer() -> Any:
            trigger = parse_trigger(request)
            spec = pb.MetricSpec(
                metricName=trigger.key.name,
                targetSize=max(1, math.ceil(trigger.target)),
                targetSizeFloat=trigger.target,
            )
            return pb.GetMetricSpecResponse(metricSpecs=[spec])

        return await self._run("GetMetricSpec", context, answer)

    async def get_metrics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def answer() -> Any:
            trigger = parse_trigger(request.scaledObjectRef)
            value = self._value(trigger)
            name = request.metricName or trigger.key.name
            as_int = round(value) if abs(value) < 2**62 else (2**62 if value > 0 else -(2**62))
            return pb.GetMetricsResponse(
                metricValues=[pb.MetricValue(metricName=name, metricValue=as_int, metricValueFloat=value)]
            )

        return await self._run("GetMetrics", context, answer)

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, req: Any, resp: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            pb.SERVICE,
            {
                "IsActive": unary(self.is_active, pb.ScaledObjectRef, pb.IsActiveResponse),
                "StreamIsActive": grpc.unary_stream_rpc_method_handler(
                    self.stream_is_active,
                    request_deserializer=pb.ScaledObjectRef.FromString,
                    response_serializer=pb.IsActiveResponse.SerializeToString,
                ),
                "GetMetricSpec": unary(self.get_metric_spec, pb.ScaledObjectRef, pb.GetMetricSpecResponse),
                "GetMetrics": unary(self.get_metrics, pb.GetMetricsRequest, pb.GetMetricsResponse),
            },
        )


#: bounds of the gRPC server (connection hygiene): concurrent RPCs, message size, idle and
#: handshake-less connections are closed by gRPC core's keepalive/max-connection-idle settings
GRPC_MAX_CONCURRENT_RPCS = 1000
GRPC_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024),
    ("grpc.max_send_message_length", 64 * 1024),
    ("grpc.max_connection_idle_ms", 300_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.server_handshake_timeout_ms", 10_000),
)


async def start_grpc_scaler(
    scaler: ExternalScaler,
    address: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start the scaler on `address:port` (port 0: any free port); returns (server, bound port).

    `credentials` None means plain text: only behind `--keda-grpc-insecure` (or local
    `--insecure-http` on loopback); the caller decides.
    """
    server = grpc.aio.server(options=GRPC_OPTIONS, maximum_concurrent_rpcs=GRPC_MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers((scaler.handler(),))
    target = f"{address}:{port}"
    try:
        if credentials:
            bound = server.add_secure_port(target, credentials)
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError:  # grpcio >= 1.6x raises where older releases returned 0
        bound = 0
    if bound == 0:
        raise StartupError(
            f"cannot listen on {target} (--grpc-port): the port is taken or the address is not local"
        )
    await server.start()
    mode = "TLS" if credentials else "plain text"
    log.info("KEDA external scaler (gRPC, %s) listening on %s:%d", mode, address, bound)
    return server, bound
