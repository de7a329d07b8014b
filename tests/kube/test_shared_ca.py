"""Replicas share one serving CA through a Secret, so the APIService caBundle trusts them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509

from apiservice.certs import ensure_self_signed
from apiservice.shared_ca import CA_SECRET_NAME, shared_ca
from tests.kube_fixtures import KubeEnv


async def test_replicas_racing_at_start_end_up_with_one_ca(kube: KubeEnv) -> None:
    clients = [await kube.new_client() for _ in range(3)]
    results = await asyncio.gather(*(shared_ca(c, kube.namespace) for c in clients))
    assert len(set(results)) == 1
    secret = await kube.client.get(f"/api/v1/namespaces/{kube.namespace}/secrets/{CA_SECRET_NAME}")
    assert set(secret["data"]) == {"ca.crt", "ca.key"}
    assert await shared_ca(clients[0], kube.namespace) == results[0]  # a restart reuses it


async def test_each_replica_serves_a_certificate_the_shared_ca_verifies(
    kube: KubeEnv, tmp_path: Path
) -> None:
    ca = await shared_ca(kube.client, kube.namespace)
    hosts = ["keptn-metrics.keptn-system.svc"]
    pods = [ensure_self_signed(tmp_path / f"pod{i}", hosts, ca) for i in range(2)]
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    for cert_path, _key, bundle in pods:
        assert bundle == ca[0]
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(ca_cert)
        assert not (cert_path.parent / "ca.key").exists()  # the CA key stays in the Secret
