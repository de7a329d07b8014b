"""Requests aiohttp's parser rejects are a 400 and at most a rate-limited one-line warning."""

from __future__ import annotations

import logging
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadStatusLine, LineTooLong

from metrics_server.client_errors import ClientErrorLogger
from metrics_server.excerpt import excerpt
from tests.prometheus_server import free_port
from tests.serve_process import popen_serve, write_local_example

ROOT = Path(__file__).resolve().parent.parent

MALFORMED_REQUESTS = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS on the plain port
    b"G\x00T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"v" * 20000 + b"\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
]


def test_excerpt_bounds_and_flattens_client_input() -> None:
    assert excerpt("short") == "short"
    long = excerpt("x" * 10_000, 100)
    assert long.startswith("x" * 100) and long.endswith("...(+9900 chars)")
    assert "\n" not in excerpt("a\nb\r\x1b[31m") and "\\n" in excerpt("a\nb")
    assert excerpt(5) == "5"


def test_parser_rejections_are_one_warning_per_interval_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    logger = ClientErrorLogger(logging.getLogger("test.server"), interval=10, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, "test.server")
    for i in range(50):
        try:
            raise LineTooLong("Status line is too long: " + "a" * 8000, "8190")
        except LineTooLong:
            logger.exception("Error handling request from %s", f"10.0.0.{i}")
    now[0] += 11
    logger.log(
        logging.ERROR, "Error handling request from %s", "10.0.0.99", exc_info=BadStatusLine("x" * 500)
    )
    records = [r for r in caplog.records if r.name == "test.server"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert all(r.exc_info is None for r in records)
    assert all(len(r.getMessage()) < 400 for r in records)
    assert "49 more since the last report" in records[1].getMessage()


def test_other_server_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = ClientErrorLogger(logging.getLogger("test.server2"))
    try:
        raise RuntimeError("a bug of ours")
    except RuntimeError:
        logger.exception("Unhandled exception")
    (record,) = [r for r in caplog.records if r.name == "test.server2"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


def send_raw(port: int, data: bytes, *, tls: bool = False) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    with sock:
        try:
            sock.sendall(data)
            return sock.recv(200)
        except OSError:
            return b""


def test_serve_answers_malformed_requests_with_400_and_a_bounded_log(tmp_path: Path) -> None:
    port, secure = free_port(), free_port()
    write_local_example(tmp_path, port, name="m.yaml")
    proc = popen_serve(
        "--manifests",
        str(tmp_path),
        "--metrics-port",
        str(port),
        "--secure-port",
        str(secure),
        "--cert-dir",
        str(tmp_path / "certs"),
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        statuses = []
        for _ in range(30):
            for data in MALFORMED_REQUESTS:
                statuses.append(send_raw(port, data)[:12])
                statuses.append(send_raw(secure, data, tls=True)[:12])
        assert {s[9:12] for s in statuses} == {b"400"}, set(statuses)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert "Traceback" not in output
    lines = output.splitlines()
    assert max(len(line) for line in lines) < 1000
    rejected = [line for line in lines if "malformed request" in line]
    assert 1 <= len(rejected) <= 4, rejected  # one per server and 10 s, not one per request
