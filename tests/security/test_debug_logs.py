"""`--log-level debug` never writes Secrets or callers' bearer tokens (issue 10, item 4: the
Kubernetes client logs response bodies; a TokenReview's body contains the token)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest

from apiservice.auth import KubeReviewClient
from metrics_server import logsetup
from metrics_server.kube.store import KubernetesStore
from metrics_server.model import ObjectKey
from tests.kube_fixtures import KubeEnv
from tests.kube_standin import KubeStandin

SECRET_VALUE = "db-password-f00ba4-do-not-log"
CALLER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.caller-token-0123456789"


@pytest.fixture
def debug_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:  # capsys first: stderr is captured
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in logsetup.QUIET_LOGGERS}
    logsetup.configure("json", "debug")
    try:
        yield
    finally:
        root.handlers[:], root.level = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.kube
async def test_debug_log_carries_no_secret_and_no_token(
    kube: KubeEnv, standin_only: KubeStandin, debug_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"dsn": base64.b64encode(SECRET_VALUE.encode()).decode()},
        }
    )
    store = KubernetesStore(
        await kube.new_client(), namespaces=[kube.namespace], server_namespace=kube.namespace
    )
    await store.start()
    try:
        secret = await store.get_secret(ObjectKey(kube.namespace, "creds"))
        assert secret is not None and secret.text("dsn") == SECRET_VALUE
    finally:
        await store.stop()
    standin_only.token_reviewer = lambda token: (
        {"username": "alice", "groups": []} if token == CALLER_TOKEN else None
    )
    reviews = KubeReviewClient((await kube.new_client()).api)
    user = await reviews.review_token(CALLER_TOKEN)
    assert user is not None and user.name == "alice"
    logging.getLogger("metrics_server.test").debug("debug logging is on")
    err = capsys.readouterr().err
    assert "debug logging is on" in err  # the capture works and debug records are written
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    for leaked in (SECRET_VALUE, encoded, CALLER_TOKEN):
        assert leaked not in err
