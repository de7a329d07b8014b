"""Two replicas with --shards: each fetches only the shards it holds, both serve every metric
at the owner's freshness (streamed over mTLS, not read from status), and a crashed owner's
shards are taken over and fetched again while its last good values keep being served."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from apiservice.certs import generate_ca
from metrics_server.config import ServeConfig
from metrics_server.kube.peer_tls import peer_contexts
from metrics_server.kube.peers import PATH
from metrics_server.kube.runtime import KubernetesRuntime
from metrics_server.model import ObjectKey
from metrics_server.sharding import shard_of
from tests.kube_fixtures import KubeEnv, metric_doc
from tests.waiting import until as wait_until

pytestmark = pytest.mark.kube

NAMES = [f"m{i}" for i in range(8)]


until = functools.partial(wait_until, within=15.0)


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[dict[str, Any]]:
    """An HTTP endpoint answering /value/<name> with the number currently set for that name."""
    box: dict[str, Any] = {"values": dict.fromkeys(NAMES, 1), "hits": {}}

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        box["hits"][name] = box["hits"].get(name, 0) + 1
        return web.json_response(box["values"][name])

    app = web.Application()
    app.router.add_get("/value/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield box
    await runner.cleanup()


def sharded_args(kube: KubeEnv) -> ServeConfig:
    ns = kube.namespace
    return ServeConfig.from_argv(
        [
            *("--kubeconfig", kube.kubeconfig, "--namespaces", ns, "--server-namespace", ns),
            *("--leader-election-namespace", ns, "--leader-election-lease-duration", "1"),
            *("--leader-election-renew-deadline", "0.6", "--leader-election-retry-period", "0.15"),
            *("--metrics-port", "0", "--secure-port", "0", "--bind-address", "127.0.0.1"),
            *("--shards", "4", "--peer-port", "0", "--shard-lease-prefix", "km"),
        ]
    )


def value(rt: KubernetesRuntime, name: str) -> float | None:
    st = rt.states.get(ObjectKey(rt.store.namespaces[0], name))
    return None if st is None else st.value



async def create_metrics(kube: KubeEnv, backend: dict[str, Any]) -> None:
    """A provider `web` on the loopback backend and one KeptnMetric per NAMES, fetched every second."""
    await kube.create(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "web"},
            "spec": {"type": "http", "targetServer": backend["url"]},
        }
    )
    for name in NAMES:
        await kube.create(metric_doc(name, provider="web", query=f"/value/{name}", interval=1))

async def test_each_replica_fetches_its_shards_and_serves_all(kube: KubeEnv, backend: dict[str, Any]) -> None:
    await create_metrics(kube, backend)
    a = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="a")
    b = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="b")
    crashed = False
    try:
        await a.start()
        await b.start()
        await until(lambda: len(a.shards.owned) == 2 and len(b.shards.owned) == 2)
        keys = [ObjectKey(kube.namespace, n) for n in NAMES]
        assert all(a.owns(k) != b.owns(k) for k in keys)  # exactly one owner per metric
        assert {shard_of(k, 4) for k in keys if a.owns(k)} <= set(a.shards.owned)
        # --status-write-qps (20) is cluster-wide: each owner writes at its shards' share of it
        assert a.writer.bucket.rate == b.writer.bucket.rate == 10.0

        backend["values"] = {n: 100 + i for i, n in enumerate(NAMES)}
        for rt in (a, b):  # every replica serves every metric's current value
            await until(lambda rt=rt: all(value(rt, n) == 100 + i for i, n in enumerate(NAMES)))

        def streamed(k: ObjectKey) -> bool:  # the owner's own fetch time, not a status' (grace 0)
            st = (b if a.owns(k) else a).states.get(k)
            return st is not None and st.staleness_grace == 0.0

        await until(lambda: all(streamed(k) for k in keys))  # a status may win a race for a moment
        assert a.peers.stats.applied > 0 and b.peers.stats.applied > 0

        # kill -9 of a: no release, no renewals, its stream ends
        a_keys = [k for k in keys if a.owns(k)]
        last_good = {k: value(b, k.name) for k in a_keys}
        a.shards._task.cancel()
        for shard in list(a.shards._owned):
            a.shards._lose(shard, "killed")
        await a.peers.stop()
        crashed = True
        assert all(value(b, k.name) == last_good[k] for k in a_keys)  # last good values are still held
        await until(lambda: len(b.shards.owned) == 4)
        assert b.writer.bucket.rate == 20.0
        backend["values"] = {n: 200 + i for i, n in enumerate(NAMES)}
        await until(lambda: all(value(b, n) == 200 + i for i, n in enumerate(NAMES)))
    finally:
        for rt in (b, a):
            if rt is a and crashed:
                rt.peers = None  # already stopped
            await rt.stop()
            await rt.client.close()


async def test_the_peer_endpoint_requires_a_certificate_from_the_shared_ca(kube: KubeEnv) -> None:
    a = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="a")
    try:
        await a.start()
        url = f"https://127.0.0.1:{a.peers.port}{PATH}"
        no_cert = ssl.create_default_context()
        no_cert.check_hostname, no_cert.verify_mode = False, ssl.CERT_NONE
        stranger = peer_contexts(*generate_ca()).client  # a peer certificate from another CA
        async with aiohttp.ClientSession() as session:
            for ctx in (no_cert, stranger):
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
                    async with session.get(url, ssl=ctx) as resp:
                        await resp.read()
    finally:
        await a.stop()
        await a.client.close()


async def test_a_joining_replica_opens_its_ports_holding_the_peers_values(
    kube: KubeEnv, backend: dict[str, Any]
) -> None:
    await create_metrics(kube, backend)
    backend["values"] = {n: 300 + i for i, n in enumerate(NAMES)}
    a = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="a")
    b = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="b")
    try:
        await a.start()
        await until(lambda: all(value(a, n) == 300 + i for i, n in enumerate(NAMES)))
        await b.start()  # a rolling update's new pod: returns once its ports are open
        for name in NAMES:  # already the owner's values, with the owner's fetch time, not status
            st = b.states.get(ObjectKey(kube.namespace, name))
            assert st is not None and st.value is not None and st.value >= 300 and st.staleness_grace == 0.0
    finally:
        for rt in (b, a):
            await rt.stop()
            await rt.client.close()


async def test_a_replica_cut_off_from_the_api_server_stops_fetching_and_keeps_serving(
    kube: KubeEnv, backend: dict[str, Any]
) -> None:
    from tests.kube.test_shards import Breakable

    await create_metrics(kube, backend)
    cut = Breakable(await kube.new_client())
    a = KubernetesRuntime(sharded_args(kube), cut, identity="a")  # type: ignore[arg-type]
    b = KubernetesRuntime(sharded_args(kube), await kube.new_client(), identity="b")
    try:
        await a.start()
        await b.start()
        await until(lambda: len(a.shards.owned) == 2 and len(b.shards.owned) == 2)
        cut.broken = True  # a can no longer renew its Leases (nor write status, nor watch)
        await until(lambda: a.shards.owned == [])  # fenced after the renew deadline
        assert not any(a.owns(ObjectKey(kube.namespace, n)) for n in NAMES)
        await until(lambda: len(b.shards.owned) == 4)  # b takes over once a's Leases expired
        backend["values"] = {n: 500 + i for i, n in enumerate(NAMES)}
        # a still serves every metric, at b's freshness: the peer stream does not need the API server
        await until(lambda: all(value(a, n) == 500 + i for i, n in enumerate(NAMES)))
        assert a.store.get_metric(ObjectKey(kube.namespace, NAMES[0])) is not None
    finally:
        cut.broken = False
        for rt in (b, a):
            await rt.stop()
            await rt.client.close()
