"""Shared fixtures: the real Prometheus, TLS material, and metric manifests."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prometheus_server import PrometheusServer, backfill, require_prometheus, run_prometheus, tsdb_copy


@pytest.fixture(scope="session")
def prometheus_tsdb() -> Iterator[Path]:
    require_prometheus()
    root = Path(tempfile.mkdtemp(prefix="prom-data-"))
    backfill(root, time.time())
    yield root / "tsdb"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prometheus(prometheus_tsdb: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus on 127.0.0.1 serving the deterministic series."""
    tsdb = tsdb_copy(prometheus_tsdb)
    with run_prometheus(tsdb) as server:
        yield server
    shutil.rmtree(tsdb, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_ca():  # type: ignore[no-untyped-def]
    import trustme

    return trustme.CA()
