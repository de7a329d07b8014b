"""One redactor for every channel (issue 10, item 2).

Reproduced: a backend that echoes the request (many error pages do) put `Authorization:
Basic ...` into errMsg, Events, logs, 503 bodies and gRPC details; only exact plaintext was
removed (base64, JSON-escaped and URL-encoded forms got through) and an excerpt cut at 300
bytes left a prefix of the secret.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web

from metrics_server.fetch import BackendPool, fetch_once
from metrics_server.logsetup import RedactingFilter
from metrics_server.model import parse_provider, parse_secret
from metrics_server.redact import MASK, REGISTRY, Redactor
from metrics_server.store.base import IndexedStore
from providers import BackendError

USER = "svc-metrics"
PASSWORD = 'p@ss"w/rd&1+x y\\z'
API_KEY = "key-0123456789abcdef"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def forms_of(secret: str) -> list[str]:
    return [
        secret,
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret).lower(),
    ]


def leaked(text: str) -> list[str]:
    """Every credential form still visible in `text` (including an 8-character prefix)."""
    found = []
    for form in [BASIC, *forms_of(PASSWORD), API_KEY]:
        if form in text or form[:8] in text:
            found.append(form)
    return found


# -- the redactor itself ------------------------------------------------------------------------


def test_every_form_is_masked() -> None:
    r = Redactor([USER, PASSWORD, API_KEY])
    for form in [
        BASIC,
        BASIC.rstrip("="),
        *forms_of(PASSWORD),
        API_KEY,
        base64.b64encode(PASSWORD.encode()).decode(),
    ]:
        out = r(f"before {form} after")
        assert form not in out and MASK in out, form


def test_redaction_runs_before_truncation() -> None:
    r = Redactor([PASSWORD, API_KEY])
    text = "x" * 290 + API_KEY + " tail"
    excerpt = r.excerpt(text, 300)
    assert len(excerpt) <= 300 and API_KEY[:8] not in excerpt


def test_a_cut_off_form_is_masked_too() -> None:
    r = Redactor([API_KEY])
    assert r(f"...{API_KEY[:12]}") == f"...{MASK}"


def test_credential_headers_are_masked_without_knowing_the_value() -> None:
    r = Redactor()
    out = r(
        '{"Authorization": "Basic Zm9vOmJhcjEyMw==", "X-Api-Key": "abc123def"}'
        " Authorization: Bearer tok.en.123"
    )
    assert "Zm9vOmJhcjEyMw" not in out and "abc123def" not in out and "tok.en.123" not in out
    assert r("Basic authentication failed") == "Basic authentication failed"  # prose stays


def test_raw_bytes_are_redacted() -> None:
    r = Redactor([PASSWORD])
    assert PASSWORD.encode() not in r.bytes(f"echo {PASSWORD}".encode())
    assert r.bytes(b"\xff\xfe binary 1") == b"\xff\xfe binary 1"


# -- end to end: an echoing backend behind the `http` provider ---------------------------------------


def echo_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        headers = dict(request.headers)
        page = json.dumps({"value": 1, "headers": headers})  # JSON-escaped forms
        page += f" basic={headers.get('Authorization', '')} url={quote(PASSWORD, safe='')}"
        page += f" plus={quote_plus(PASSWORD)}"
        if request.path == "/ok":
            return web.Response(text=json.dumps({"value": 1, "echo": headers, "url": quote(PASSWORD)}))
        return web.Response(status=500, text="x" * 150 + page)  # the credential straddles byte 300

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def shared_provider(url: str) -> tuple[IndexedStore, Any]:
    store = IndexedStore(server_namespace="keptn-system")
    provider = parse_provider(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "shared", "namespace": "keptn-system"},
            "spec": {
                "type": "http",
                "targetServer": url,
                "secretKeyRef": {"name": "creds", "key": "password"},
            },
        }
    )
    store.apply(provider)
    store.apply(
        parse_secret(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": "keptn-system"},
                "stringData": {"user": USER, "password": PASSWORD, "header.X-Api-Key": API_KEY},
            }
        )
    )
    return store, provider


async def test_error_messages_carry_no_credential_in_any_form(aiohttp_server: Any) -> None:
    server = await aiohttp_server(echo_app())
    store, provider = shared_provider(f"http://127.0.0.1:{server.port}")
    pool = BackendPool(store)
    try:
        client, config = await pool.get(provider)
        with pytest.raises(BackendError) as err:
            await fetch_once(client, config, "/fail|value", None)
        assert "HTTP 500" in err.value.message
        assert leaked(err.value.message) == []
        outcome = await fetch_once(client, config, "/ok|value", None)  # becomes status.rawValue
        assert outcome.value == 1
        assert leaked(outcome.raw.decode()) == []
    finally:
        await pool.close()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_logs_of_every_logger_and_level_are_redacted(
    aiohttp_server: Any, log_stream: io.StringIO
) -> None:
    server = await aiohttp_server(echo_app())
    store, provider = shared_provider(f"http://127.0.0.1:{server.port}")
    pool = BackendPool(store)
    try:
        await pool.get(provider)  # a live provider: its redactor is registered
        logging.getLogger("some.sdk").warning("request failed: Authorization: Basic %s (%s)", BASIC, PASSWORD)
        logging.getLogger("metrics_server.x").debug("echo %s", json.dumps({"k": PASSWORD}))
        try:
            raise RuntimeError(f"boom {API_KEY}")
        except RuntimeError:
            logging.getLogger("metrics_server.y").exception("failed")
        logging.getLogger("kubernetes_asyncio.client.rest").debug("response body: %s", "secret-data")
        text = log_stream.getvalue()
        assert "request failed" in text and "boom" in text
        assert leaked(text) == []
        assert "response body" not in text  # the client's body dumps never reach the log
    finally:
        await pool.close()
    assert REGISTRY(PASSWORD) == PASSWORD  # closed providers' credentials are forgotten
