"""A shared provider's credentials echoed by its backend reach no channel (issue 10, item 2):
the 503 body of the APIs, the KEDA REST error and the gRPC scaler's UNAVAILABLE details all
carry the evaluator's redacted message."""

from __future__ import annotations

import base64
import socket
from typing import Any

import grpc
import pytest
from aiohttp import web

from apiservice import keda_proto as pb
from metrics_server.fetch import BackendPool, fetch_once
from metrics_server.http_server import MetricsPortApp
from providers import BackendError
from tests.api.conftest import World
from tests.api.test_keda_grpc import Client, ref
from tests.security.test_redaction import BASIC, PASSWORD, echo_app, leaked, shared_provider

RES = "keptnmetrics.metrics.keptn.sh"


async def backend_error(aiohttp_server: Any) -> str:
    server = await aiohttp_server(echo_app())
    store, provider = shared_provider(f"http://127.0.0.1:{server.port}")
    pool = BackendPool(store)
    try:
        client, config = await pool.get(provider)
        with pytest.raises(BackendError) as err:
            await fetch_once(client, config, "/fail|value", None)
        return err.value.message
    finally:
        await pool.close()


async def test_no_channel_carries_the_echoed_credential(
    aiohttp_server: Any, aiohttp_client: Any, start: Any, world: World
) -> None:
    message = await backend_error(aiohttp_server)
    assert "HTTP 500" in message and leaked(message) == []
    world.add("shop", "orders", None, error=message)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = await start("--grpc-port", str(port))
    status, data, _ = await api.get(
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/orders/orders"
    )
    assert status == 503 and "HTTP 500" in data["message"] and leaked(data["message"]) == []
    creds = grpc.ssl_channel_credentials(root_certificates=api.pki.server_ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await Client(channel).get_metrics(
                pb.GetMetricsRequest(scaledObjectRef=ref("orders"), metricName="m")
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and leaked(info.value.details() or "x") == []
    rest = await aiohttp_client(MetricsPortApp(world.store, world.states, ready=lambda: True).build())
    resp = await rest.get("/api/v1/metrics/shop/orders")
    body = await resp.text()
    assert resp.status == 503 and leaked(body) == []
    assert (
        BASIC not in body
        and PASSWORD not in body
        and base64.b64encode(PASSWORD.encode()).decode() not in body
    )
    assert isinstance(rest.app, web.Application)
