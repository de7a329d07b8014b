"""Outbound connection policy: link-local and metadata addresses are refused at connect time."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from metrics_server.egress_flags import policy_from_args
from providers import BackendConfig, BackendError, Window, create_backend
from providers.egress import DEFAULT_POLICY, EgressPolicy, PolicyResolver, parse_networks
from providers.sdkutil import check_endpoint

ROOT = Path(__file__).resolve().parents[2]
POD = EgressPolicy.for_mode(kubernetes_mode=True)

DENIED_BY_DEFAULT = [
    ("169.254.169.254", "169.254.169.254/32"),
    ("169.254.170.2", "169.254.0.0/16"),
    ("169.254.0.1", "169.254.0.0/16"),
    ("100.100.100.200", "100.100.100.200/32"),
    ("fd00:ec2::254", "fd00:ec2::254/128"),
    ("fe80::1", "fe80::/10"),
    ("fe80::1%eth0", "fe80::/10"),
    ("::ffff:169.254.169.254", "169.254.169.254/32"),  # IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "169.254.169.254/32"),  # NAT64
    ("2002:a9fe:a9fe::1", "169.254.169.254/32"),  # 6to4
    ("metadata.google.internal", "metadata.google.internal"),
    ("METADATA.google.internal.", "metadata.google.internal"),
    ("metadata.goog", "metadata.goog"),
]
ALLOWED_BY_DEFAULT = [
    "10.0.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "2001:db8::1",
    "prometheus.monitoring.svc",
    "127.0.0.1",
]


@pytest.mark.parametrize(("host", "rule"), DENIED_BY_DEFAULT)
def test_metadata_and_link_local_are_denied_by_default_naming_the_rule(host: str, rule: str) -> None:
    with pytest.raises(OSError, match="refused by the egress policy") as err:
        DEFAULT_POLICY.check(host)
    assert rule in str(err.value)


@pytest.mark.parametrize("host", ALLOWED_BY_DEFAULT)
def test_ordinary_addresses_are_allowed(host: str) -> None:
    DEFAULT_POLICY.check(host)


def test_loopback_is_denied_in_a_pod_and_allowed_in_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from argparse import Namespace

    with pytest.raises(OSError, match="loopback"):
        POD.check("127.0.0.1")
    with pytest.raises(OSError, match="loopback"):
        POD.check("::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    args = Namespace(egress_allow=[], egress_deny=[], egress_loopback="auto")
    policy_from_args(args, kubernetes_mode=False).check("127.0.0.1")  # local mode: allowed
    with pytest.raises(OSError):
        policy_from_args(args, kubernetes_mode=True).check("127.0.0.1")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    policy_from_args(args, kubernetes_mode=True).check("127.0.0.1")  # kubeconfig from a workstation


def test_operator_allow_lifts_builtin_denials_and_deny_always_wins() -> None:
    policy = EgressPolicy.for_mode(
        kubernetes_mode=True,
        allow=parse_networks(["169.254.20.0/24,127.0.0.1"], "--egress-allow"),
        deny=parse_networks(["10.0.0.0/8", "169.254.20.10"], "--egress-deny"),
    )
    policy.check("169.254.20.1")
    policy.check("127.0.0.1")
    with pytest.raises(OSError, match="--egress-deny"):
        policy.check("169.254.20.10")
    with pytest.raises(OSError, match="10.0.0.0/8 is in --egress-deny"):
        policy.check("10.1.2.3")
    with pytest.raises(OSError, match="169.254.169.254"):
        policy.check("169.254.169.254")
    with pytest.raises(ValueError, match="--egress-allow"):
        parse_networks(["not-a-network"], "--egress-allow")


class FixedResolver(AbstractResolver):
    """A DNS server under the attacker's control: every name resolves to `address`."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def test_the_resolved_address_is_checked_at_connect_time(aiohttp_server: Any) -> None:
    """A harmless-looking name that resolves to a denied address (DNS rebinding) is refused."""
    app = web.Application()
    app.router.add_get("/", lambda r: web.Response(text="reached"))
    server = await aiohttp_server(app)
    url = f"http://innocent.example:{server.port}/"
    for policy, reached in ((DEFAULT_POLICY, True), (POD, False)):
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(policy, inner=FixedResolver("127.0.0.1")),
            socket_factory=policy.socket_factory,
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            if reached:
                async with session.get(url) as resp:
                    assert await resp.text() == "reached"
            else:
                with pytest.raises(aiohttp.ClientConnectorError, match="refused by the egress policy"):
                    await session.get(url)


async def test_a_provider_reports_the_rule_and_does_not_retry(aiohttp_server: Any) -> None:
    config = BackendConfig(type="openmetrics", target_server="http://169.254.169.254/latest/meta-data/")
    client = create_backend(config)
    try:
        with pytest.raises(BackendError) as err:
            await client.query("up", Window())
    finally:
        await client.close()
    assert "169.254.169.254/32 is denied by default" in err.value.message
    assert not err.value.retryable


async def test_a_redirect_to_the_metadata_service_is_refused(aiohttp_server: Any) -> None:
    app = web.Application()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/iam/security-credentials/")

    app.router.add_get("/metrics", redirect)
    server = await aiohttp_server(app)
    client = create_backend(
        BackendConfig(type="openmetrics", target_server=f"http://127.0.0.1:{server.port}/metrics")
    )
    try:
        # two defences answer: a cross-origin redirect is never followed (issue 10), and a
        # followed one would still be checked at connect time (issue 13)
        with pytest.raises(BackendError, match="redirected to another origin.*not followed"):
            await client.query("up", Window())
    finally:
        await client.close()


async def test_sdk_endpoints_are_resolved_and_checked_before_the_query() -> None:
    pod = BackendConfig(type="google", target_server="x", egress=POD)
    with pytest.raises(BackendError, match="google: connection to 127.0.0.1 refused"):
        await check_endpoint(pod, "https://localhost:8443", "google")
    with pytest.raises(BackendError, match="metadata.google.internal"):
        await check_endpoint(pod, "metadata.google.internal:443", "google")
    await check_endpoint(BackendConfig(type="google", target_server="x"), "localhost:8443", "google")


async def test_cloudwatch_refuses_a_metadata_endpoint() -> None:
    pytest.importorskip("aiobotocore")
    config = BackendConfig(
        type="cloudwatch",
        target_server="http://169.254.169.254/?region=us-east-1",
        secret={"AWS_ACCESS_KEY_ID": b"AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": b"secret"},
    )
    client = create_backend(config)
    try:
        with pytest.raises(BackendError, match="refused by the egress policy"):
            await client.query("AWS/EC2 CPUUtilization Average InstanceId=i-1", Window())
    finally:
        await client.close()


def test_query_cli_names_the_rule() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "metrics_server",
            "query",
            "--provider-type",
            "openmetrics",
            "--target-server",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "--timeout",
            "3",
            "up",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert "fd00:ec2::254/128 is denied by default" in out.stderr
