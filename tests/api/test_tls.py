"""TLS: self-signed pairs, reloading changed files, CA rotation from the ConfigMap, caBundle injection."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509

from apiservice.certs import ensure_self_signed
from tests.api.conftest import FRONT_PROXY_CN, KubeReviews, Pki, World

OBJ = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/keptnmetrics.metrics.keptn.sh/cpu/cpu"


@pytest.fixture(autouse=True)
def metrics(world: World) -> None:
    world.add("shop", "cpu", 2.5)


def test_self_signed_pair_is_generated_and_reused(tmp_path):
    cert, key, ca = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "svc.ns.svc"])
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "svc.ns.svc" in san.get_values_for_type(x509.DNSName)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    assert again[2] == ca and again[0].read_bytes() == cert.read_bytes()  # reused
    third = ensure_self_signed(tmp_path, ["other.example"])
    assert third[2] != ca  # new hosts: regenerated


async def test_self_signed_server_serves_with_its_ca(start, tmp_path, pki: Pki):
    api = await start(
        "--cert-dir",
        str(tmp_path / "certs"),
        "--self-signed-hosts",
        "localhost,127.0.0.1",
        "--anonymous-auth",
        pki_flags=False,
    )
    ca = api.runner.ca_bundle
    assert ca and b"BEGIN CERTIFICATE" in ca
    ctx = ssl.create_default_context(cadata=ca.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        async with s.get(f"https://127.0.0.1:{api.runner.port}{OBJ}") as resp:
            assert resp.status == 200


async def _status(port: int, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> int | str:
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as s:
            async with s.get(f"https://127.0.0.1:{port}{OBJ}", headers=headers) as resp:
                return resp.status
    except (aiohttp.ClientError, ssl.SSLError) as exc:
        return type(exc).__name__


async def test_serving_cert_and_ca_files_reload_without_restart(start, tmp_path, pki: Pki):
    cert_file, ca_file = tmp_path / "tls.pem", tmp_path / "front-ca.pem"
    old_ca, new_ca, new_front = trustme.CA(), trustme.CA(), trustme.CA()
    old_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    pki.front_proxy_ca.cert_pem.write_to_path(str(ca_file))
    api = await start(
        "--tls-cert-file",
        str(cert_file),
        "--tls-private-key-file",
        str(cert_file),
        "--requestheader-client-ca-file",
        str(ca_file),
        "--requestheader-allowed-names",
        "",
        "--cert-reload-interval",
        "0.05",
        pki_flags=False,
    )
    port = api.runner.port

    def ctx(server_ca: trustme.CA, client: trustme.LeafCert) -> ssl.SSLContext:
        c = ssl.create_default_context()
        server_ca.configure_trust(c)
        client.configure_cert(c)
        return c

    hdr = {"X-Remote-User": "alice"}
    assert await _status(port, ctx(old_ca, pki.front_proxy()), hdr) == 200
    new_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    new_front.cert_pem.write_to_path(str(ca_file))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if await _status(port, ctx(new_ca, new_front.issue_cert(common_name="x")), hdr) == 200:
            break
    assert await _status(port, ctx(new_ca, new_front.issue_cert(common_name="x")), hdr) == 200
    assert await _status(port, ctx(old_ca, pki.front_proxy()), hdr) != 200  # old serving cert gone
    assert await _status(port, ctx(new_ca, pki.front_proxy()), hdr) != 200  # old front-proxy CA gone
    # a broken file keeps the last good configuration
    cert_file.write_text("garbage")
    await asyncio.sleep(0.2)
    assert await _status(port, ctx(new_ca, new_front.issue_cert(common_name="x")), hdr) == 200


class ConfigMapSource:
    """The shape the Kubernetes store exposes: auth_configmap + subscribe_auth_configmap."""

    def __init__(self, data: dict[str, str] | None) -> None:
        self.auth_configmap = data
        self.callbacks: list[Callable[[Any], None]] = []

    def subscribe_auth_configmap(self, cb: Callable[[Any], None]) -> None:
        self.callbacks.append(cb)

    def update(self, data: dict[str, str]) -> None:
        self.auth_configmap = data
        for cb in self.callbacks:
            cb(data)


async def test_configmap_supplies_and_rotates_client_cas(start, tmp_path, pki: Pki, kube: KubeReviews):
    cm = {
        "client-ca-file": pki.client_ca.cert_pem.bytes().decode(),
        "requestheader-client-ca-file": pki.front_proxy_ca.cert_pem.bytes().decode(),
        "requestheader-allowed-names": f'["{FRONT_PROXY_CN}"]',
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }
    source = ConfigMapSource(cm)
    api = await start(
        "--tls-cert-file",
        str(pki.server_cert),
        "--tls-private-key-file",
        str(pki.server_cert),
        kubernetes_mode=True,
        pki_flags=False,
        auth_source=source,
    )
    assert api.runner.authorizer.mode == "Webhook"
    port = api.runner.port
    hdr = {"X-Remote-User": "alice"}
    assert await _status(port, pki.client_ctx(pki.front_proxy()), hdr) == 200
    assert await _status(port, pki.client_ctx(pki.user("bob"))) == 200
    assert await _status(port, pki.client_ctx(pki.front_proxy("other-cn")), hdr) == 401
    assert kube.sars[-1]["user"] == "bob"
    # rotation: a new front-proxy CA and allowed names, no restart
    rotated = trustme.CA()
    source.update(
        {
            **cm,
            "requestheader-client-ca-file": rotated.cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["aggregator"]',
        }
    )
    carol = {"X-Remote-User": "carol"}
    assert await _status(port, pki.client_ctx(rotated.issue_cert(common_name="aggregator")), carol) == 200
    assert kube.sars[-1]["user"] == "carol"
    assert await _status(port, pki.client_ctx(pki.front_proxy()), hdr) != 200
    assert api.runner.tls is not None and api.runner.tls.reloads >= 2


async def test_flags_win_over_configmap(start, pki: Pki):
    source = ConfigMapSource(
        {
            "requestheader-client-ca-file": trustme.CA().cert_pem.bytes().decode(),
            "requestheader-allowed-names": '["nobody"]',
        }
    )
    api = await start(kubernetes_mode=True, auth_source=source)  # pki flags given
    assert await _status(api.runner.port, pki.client_ctx(pki.front_proxy()), {"X-Remote-User": "a"}) == 200


async def test_apiservice_ca_injection(start, tmp_path, kube: KubeReviews):
    from kubernetes_asyncio import client

    api_client = client.ApiClient(configuration=client.Configuration(host=kube.url))
    try:
        api = await start(
            "--cert-dir",
            str(tmp_path),
            "--apiservice-ca-injection",
            "v1beta2.custom.metrics.k8s.io,v1beta1.external.metrics.k8s.io",
            kubernetes_mode=True,
            pki_flags=False,
            api_client=api_client,
            auth_source=ConfigMapSource(None),
        )
        assert [p[0] for p in kube.patches] == [
            "v1beta2.custom.metrics.k8s.io",
            "v1beta1.external.metrics.k8s.io",
        ]
        _name, ctype, body = kube.patches[0]
        assert ctype == "application/merge-patch+json"
        assert base64.b64decode(body["spec"]["caBundle"]) == api.runner.ca_bundle
        # the CA is the one every replica shares, kept in a Secret in the server's namespace
        shared = kube.secrets[("keptn-system", "keptn-metrics-serving-ca")]
        assert base64.b64decode(shared["data"]["ca.crt"]) == api.runner.ca_bundle
    finally:
        await api_client.close()
