"""KEDA external scaler: a real grpc.aio client against the server started by start_api."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from apiservice import keda_proto as pb
from tests.api.conftest import World

PROTO = Path(__file__).resolve().parents[2] / "apiservice" / "externalscaler.proto"


def test_runtime_descriptor_matches_protoc(tmp_path):
    pytest.importorskip("grpc_tools")
    out = tmp_path / "fds.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--descriptor_set_out={out}",
            str(PROTO),
        ],
        check=True,
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert compiled == pb.file_descriptor_proto()


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        def unary(method: str, req, resp):
            return channel.unary_unary(
                f"/externalscaler.ExternalScaler/{method}",
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )

        self.is_active = unary("IsActive", pb.ScaledObjectRef, pb.IsActiveResponse)
        self.get_metric_spec = unary("GetMetricSpec", pb.ScaledObjectRef, pb.GetMetricSpecResponse)
        self.get_metrics = unary("GetMetrics", pb.GetMetricsRequest, pb.GetMetricsResponse)
        self.stream_is_active = channel.unary_stream(
            "/externalscaler.ExternalScaler/StreamIsActive",
            request_serializer=pb.ScaledObjectRef.SerializeToString,
            response_deserializer=pb.IsActiveResponse.FromString,
        )


@pytest.fixture
async def scaler(world: World, start):
    world.add("shop", "queue", 7.5)
    world.add("shop", "idle", 0)
    world.add("shop", "pending", None, error="boom")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    api = await start("--grpc-port", str(port))
    assert api.runner.grpc_port == port
    creds = grpc.ssl_channel_credentials(root_certificates=api.pki.server_ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{api.runner.grpc_port}", creds) as channel:
        yield Client(channel), api


def ref(name: str, ns: str = "shop", **meta: str):
    r = pb.ScaledObjectRef(name="so", namespace=ns)
    r.scalerMetadata["keptnMetricName"] = name
    for k, v in meta.items():
        r.scalerMetadata[k] = v
    return r


async def test_is_active(scaler):
    client, _ = scaler
    assert (await client.is_active(ref("queue"))).result is True
    assert (await client.is_active(ref("idle"))).result is False
    assert (await client.is_active(ref("queue", activationTargetValue="10"))).result is False
    assert (await client.is_active(ref("queue", namespace="shop", activationTargetValue="7"))).result is True


async def test_documented_metadata_names_and_their_aliases(scaler):
    client, _ = scaler
    # what examples/kubernetes/keda-external.yaml uses
    same_ns = ref("queue", ns="shop", keptnMetricNamespace="shop", activationValue="10")
    assert (await client.is_active(same_ns)).result is False
    assert (await client.is_active(ref("queue", ns="shop", keptnMetricNamespace="shop"))).result is True


async def test_get_metric_spec(scaler):
    client, _ = scaler
    resp = await client.get_metric_spec(ref("queue", targetValue="2.5"))
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in resp.metricSpecs] == [("queue", 3, 2.5)]


async def test_get_metrics(scaler):
    client, _ = scaler
    resp = await client.get_metrics(pb.GetMetricsRequest(scaledObjectRef=ref("queue"), metricName="s0-queue"))
    assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in resp.metricValues] == [
        ("s0-queue", 8, 7.5)
    ]


async def test_errors_are_grpc_statuses(scaler):
    client, _ = scaler
    cases = [
        (ref("missing"), grpc.StatusCode.NOT_FOUND),
        (ref("pending"), grpc.StatusCode.UNAVAILABLE),
        (pb.ScaledObjectRef(name="so", namespace="shop"), grpc.StatusCode.INVALID_ARGUMENT),
        (ref("queue", targetValue="abc"), grpc.StatusCode.INVALID_ARGUMENT),
        (ref("queue", targetValue="0"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if "targetValue" in request.scalerMetadata:
                await client.get_metric_spec(request)
            else:
                await client.get_metrics(pb.GetMetricsRequest(scaledObjectRef=request, metricName="x"))
        assert info.value.code() == code, request
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.is_active(ref("pending"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no value yet" in (info.value.details() or "")


async def test_stream_is_active_follows_changes(scaler, world: World):
    client, _api = scaler
    from metrics_server.model import ObjectKey

    # make the scaler poll fast
    call = client.stream_is_active(ref("idle"))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.result is False
    world.states.get(ObjectKey("shop", "idle")).value = 3.0
    second = await asyncio.wait_for(call.read(), 5)
    assert second.result is True
    call.cancel()


async def test_grpc_port_zero_disables(world: World, pki, kube):
    import tests.api.conftest as c
    from apiservice.server import start_api

    opts = c.options(pki, "--grpc-port", "0")
    runner = await start_api(world.store, world.states, opts)
    try:
        assert runner.grpc_port is None
    finally:
        await runner.stop(grace=0.1)
