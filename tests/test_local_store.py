"""The local store: a folder of manifests, reloaded on change; bad files never stop the rest."""

from __future__ import annotations

import os
import time
from pathlib import Path

from metrics_server.model import KeptnMetric, ObjectKey
from metrics_server.store.base import EventType, StoreEvent
from metrics_server.store.local import LocalStore

PROVIDER = """\
apiVersion: metrics.keptn.sh/v1
kind: KeptnMetricsProvider
metadata: {name: prom, namespace: apps}
spec: {type: prometheus, targetServer: "http://127.0.0.1:9090", secretKeyRef: {name: creds, key: password}}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: apps}
data: {user: a2VwdG4=}
stringData: {password: hunter2}
"""

METRIC = """\
apiVersion: metrics.keptn.sh/v1
kind: KeptnMetric
metadata: {name: %s, namespace: apps}
spec: {provider: {name: prom}, query: "sum(up)", fetchIntervalSeconds: 10}
"""


def touch_later(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5  # ensure a different mtime even on coarse filesystems
    os.utime(path, (stamp, stamp))


async def test_multi_document_files_dispatch_on_kind(tmp_path: Path) -> None:
    (tmp_path / "provider.yaml").write_text(PROVIDER)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "m.yml").write_text(METRIC % "a" + "---\n" + METRIC % "b")
    store = LocalStore(tmp_path)
    await store.start()
    assert {m.meta.name for m in store.list_metrics()} == {"a", "b"}
    assert store.get_provider(ObjectKey("apps", "prom")) is not None
    secret = await store.get_secret(ObjectKey("apps", "creds"))
    assert secret is not None and secret.data == {"user": b"keptn", "password": b"hunter2"}
    await store.stop()


async def test_bad_documents_and_files_are_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(METRIC % "good")
    (tmp_path / "broken.yaml").write_text("kind: [unclosed")
    (tmp_path / "invalid.yaml").write_text(METRIC % "fine" + "---\n" + (METRIC % "bad").replace("10}", "0}"))
    store = LocalStore(tmp_path)
    await store.start()
    assert {m.meta.name for m in store.list_metrics()} == {"good", "fine"}
    problems = {Path(p).name: [x.message for x in v] for p, v in store.problems.items()}
    assert "broken.yaml" in problems
    assert any("spec.fetchIntervalSeconds" in m for m in problems["invalid.yaml"])
    await store.stop()


async def test_malformed_kinds_and_lists_never_stop_the_store(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(METRIC % "good")
    (tmp_path / "odd.yaml").write_text("kind: 5\n---\nkind: KeptnMetricList\nitems: 7\n---\n- a list\n")
    store = LocalStore(tmp_path)
    await store.start()
    assert {m.meta.name for m in store.list_metrics()} == {"good"}
    messages = [x.message for x in store.problems[str(tmp_path / "odd.yaml")]]
    assert len(messages) == 3
    assert "kind" in messages[0] and "items: must be a list" in messages[1] and "mapping" in messages[2]
    await store.stop()


async def test_changes_on_disk_become_events(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(METRIC % "a")
    store = LocalStore(tmp_path)
    events: list[StoreEvent] = []
    store.subscribe(events.append)
    await store.start()
    touch_later(path, METRIC % "a" + "---\n" + (METRIC % "b").replace("sum(up)", "max(up)"))
    assert store.reload()
    touch_later(path, METRIC % "b")
    assert store.reload()
    kinds = [(e.type, e.obj.meta.name) for e in events if isinstance(e.obj, KeptnMetric)]
    assert kinds == [
        (EventType.ADDED, "a"),
        (EventType.ADDED, "b"),
        (EventType.DELETED, "a"),
        (EventType.MODIFIED, "b"),
    ]
    assert not store.reload()  # nothing changed, nothing emitted
    await store.stop()


async def test_a_file_that_breaks_keeps_its_previous_objects(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(METRIC % "a")
    store = LocalStore(tmp_path)
    await store.start()
    touch_later(path, "kind: [broken")
    store.reload()
    assert [m.meta.name for m in store.list_metrics()] == ["a"]
    assert str(path) in store.problems
    await store.stop()
