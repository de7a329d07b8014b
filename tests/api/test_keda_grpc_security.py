"""The KEDA gRPC scaler's security (issue 10, item 3: no TLS, no authentication, and
`GetMetrics` answered for any `keptnMetricNamespace`)."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import pytest

from apiservice import keda_proto as pb
from metrics_server.model import ObjectKey, parse_metric
from metrics_server.tenancy import ALLOWED_NAMESPACES_ANNOTATION
from tests.api.conftest import World, metric_doc
from tests.api.test_keda_grpc import Client, ref


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_shared(world: World, ns: str, name: str, allowed: str) -> None:
    doc = metric_doc(ns, name)
    doc["metadata"]["annotations"] = {ALLOWED_NAMESPACES_ANNOTATION: allowed}
    world.store.apply(parse_metric(doc))
    st = world.states.ensure(ObjectKey(ns, name), 10)
    st.value, st.value_text, st.last_success, st.last_attempt = 4.0, "4", world.now - 1, world.now - 1


def tls_creds(api: Any, cert: Any = None) -> grpc.ChannelCredentials:
    kwargs: dict[str, bytes] = {}
    if cert is not None:
        kwargs = {
            "private_key": cert.private_key_pem.bytes(),
            "certificate_chain": b"".join(b.bytes() for b in cert.cert_chain_pems),
        }
    return grpc.ssl_channel_credentials(root_certificates=api.pki.server_ca.cert_pem.bytes(), **kwargs)


async def get_metrics(channel: grpc.aio.Channel, request: Any) -> Any:
    return await Client(channel).get_metrics(pb.GetMetricsRequest(scaledObjectRef=request, metricName="m"))


async def test_plain_text_is_refused_by_default(world: World, start: Any) -> None:
    world.add("shop", "queue", 7.5)
    api = await start("--grpc-port", str(free_port()))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.runner.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_metrics(channel, ref("queue"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.secure_channel(f"127.0.0.1:{api.runner.grpc_port}", tls_creds(api)) as channel:
        assert (await get_metrics(channel, ref("queue"))).metricValues[0].metricValueFloat == 7.5


async def test_plain_text_only_behind_the_flag(world: World, start: Any) -> None:
    world.add("shop", "queue", 7.5)
    api = await start("--grpc-port", str(free_port()), "--keda-grpc-insecure")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.runner.grpc_port}") as channel:
        assert (await get_metrics(channel, ref("queue"))).metricValues[0].metricValueFloat == 7.5


async def test_a_scaled_object_reads_only_its_own_namespace(world: World, start: Any) -> None:
    world.add("shop", "queue", 7.5)
    add_shared(world, "platform", "shared", "shop, billing")
    api = await start("--grpc-port", str(free_port()))
    async with grpc.aio.secure_channel(f"127.0.0.1:{api.runner.grpc_port}", tls_creds(api)) as channel:
        for request in (
            ref("queue", ns="elsewhere", keptnMetricNamespace="shop"),  # the reproduced read
            ref("missing", ns="elsewhere", keptnMetricNamespace="shop"),  # same answer: no probing
            ref("shared", ns="elsewhere", keptnMetricNamespace="platform"),  # not listed
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_metrics(channel, request)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await Client(channel).is_active(request)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        allowed = ref("shared", ns="billing", keptnMetricNamespace="platform")
        assert (await get_metrics(channel, allowed)).metricValues[0].metricValueFloat == 4.0


async def test_client_certificates_when_a_client_ca_is_given(world: World, start: Any, pki: Any) -> None:
    world.add("shop", "queue", 7.5)
    api = await start("--grpc-port", str(free_port()), "--keda-grpc-client-ca-file", str(pki.client_ca_file))
    target = f"127.0.0.1:{api.runner.grpc_port}"
    good = api.pki.user("keda-operator")
    foreign = api.pki.user("keda-operator", ca=api.pki.other_ca)
    for cert in (None, foreign):
        async with grpc.aio.secure_channel(target, tls_creds(api, cert)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_metrics(channel, ref("queue"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.secure_channel(target, tls_creds(api, good)) as channel:
        assert (await get_metrics(channel, ref("queue"))).metricValues[0].metricValueFloat == 7.5
