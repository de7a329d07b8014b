"""One serving CA for every replica, kept in a Secret in the server's namespace.

With self-signed certificates each replica would otherwise make its own CA, and the
APIService's single `caBundle` could trust only one of them: the aggregator would then fail
TLS to every other replica. The first replica creates the Secret; the others read it (a
creation race ends in 409 AlreadyExists, after which everyone reads the winner's CA).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from apiservice.certs import generate_ca

log = logging.getLogger(__name__)

CA_SECRET_NAME = "keptn-metrics-serving-ca"
CERT_KEY = "ca.crt"
KEY_KEY = "ca.key"


def _decode(secret: dict[str, Any]) -> tuple[bytes, bytes] | None:
    data = secret.get("data") or {}
    try:
        cert, key = base64.b64decode(data[CERT_KEY]), base64.b64decode(data[KEY_KEY])
    except (KeyError, ValueError, TypeError):
        return None
    return (cert, key) if cert and key else None


async def shared_ca(client: Any, namespace: str, name: str = CA_SECRET_NAME) -> tuple[bytes, bytes]:
    """(CA certificate PEM, CA key PEM) from Secret `namespace/name`, creating it once.

    `client` is a metrics_server.kube.client.KubeClient (get / create_object raising ApiException).
    """
    from metrics_server.kube.client import ApiException, resource_path

    path = resource_path("", "v1", "secrets", namespace)
    try:
        existing = _decode(await client.get(resource_path("", "v1", "secrets", namespace, name)))
        if existing is not None:
            return existing
        raise RuntimeError(f"Secret {namespace}/{name} exists but holds no {CERT_KEY}/{KEY_KEY}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    cert, key = generate_ca()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "keptn-metrics"},
        },
        "type": "Opaque",
        "data": {CERT_KEY: base64.b64encode(cert).decode(), KEY_KEY: base64.b64encode(key).decode()},
    }
    try:
        await client.create_object(path, body)
        log.info("created the shared serving CA in Secret %s/%s", namespace, name)
        return cert, key
    except ApiException as exc:
        if exc.status != 409:
            raise
    winner = _decode(await client.get(f"{path}/{name}"))  # another replica was first
    if winner is None:
        raise RuntimeError(f"Secret {namespace}/{name} holds no {CERT_KEY}/{KEY_KEY}")
    return winner
