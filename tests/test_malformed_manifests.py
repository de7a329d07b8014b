"""Malformed manifest documents: each is reported (file, document index, field) and skipped.

Whatever shape a document has, the loader never raises: the other documents of the file and
of the folder load, later changes are applied, `serve` starts and `validate` prints one line
per problem and exits 1 (never a traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_server.controller.model import load_lifecycle
from metrics_server.model import ObjectKey
from metrics_server.store.local import LocalStore, load_file
from tests.serve_process import popen_serve, write_local_example

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
apiVersion: metrics.keptn.sh/v1
kind: KeptnMetric
metadata: {name: good, namespace: apps}
spec: {provider: {name: prom}, query: "sum(up)", fetchIntervalSeconds: 10}
"""

METRIC = "apiVersion: metrics.keptn.sh/v1\nkind: KeptnMetric\n"

# (document text, the field the report must name)
MALFORMED: list[tuple[str, str]] = [
    ("kind: 5", "kind"),
    ("kind: [KeptnMetric]", "kind"),
    ("kind: {a: b}", "kind"),
    (METRIC + "metadata: just-a-string", "metadata"),
    (METRIC + "metadata: [a, b]", "metadata"),
    (METRIC + "metadata: 7", "metadata"),
    ("kind: List\nitems: 5", "items"),
    ("kind: List\nitems: just-a-string", "items"),
    ("kind: List\nitems: {a: b}", "items"),
    ("kind: List\nitems: [5]", "(root)"),
    ("kind: KeptnMetricList\nitems: [{kind: 5}]", "kind"),
    ("- a list\n- at the top", "mapping"),
    ("42", "mapping"),
    ("just a string", "mapping"),
    ("apiVersion: 5\nkind: KeptnMetric", "apiVersion"),
    ("apiVersion: [v1]\nkind: Secret\nmetadata: {name: s}", "apiVersion"),
    (METRIC + "metadata: {name: [m]}", "metadata.name"),
    (METRIC + "metadata: {name: m, namespace: 5}", "metadata.namespace"),
    (METRIC + "metadata: {name: m, labels: [a]}", "metadata.labels"),
    (METRIC + "metadata: {name: m}\nspec: 5", "spec"),
    (METRIC + "metadata: {name: m}\nspec: {provider: p}", "spec.provider"),
    (
        METRIC + "metadata: {name: m}\nspec: {provider: {name: p}, query: q, fetchIntervalSeconds: x}",
        "spec.fetchIntervalSeconds",
    ),
    (
        METRIC
        + "metadata: {name: m}\nspec: {provider: {name: p}, query: q, fetchIntervalSeconds: 1000000000000}",
        "spec.fetchIntervalSeconds",
    ),
    (
        METRIC
        + "metadata: {name: m}\nspec: {provider: {name: p}, query: q, fetchIntervalSeconds: 5, range: 5}",
        "spec.range",
    ),
    (
        METRIC + "metadata: {name: m}\nspec: {provider: {name: p}, query: q, fetchIntervalSeconds: 5, "
        "range: {interval: 100000h}}",
        "spec.range.interval",
    ),
    (
        METRIC + "metadata: {name: m}\nspec: {provider: {name: p}, query: q, fetchIntervalSeconds: 5, "
        "range: {interval: 5m, step: 9000h, aggregation: max}}",
        "spec.range.step",
    ),
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: [a]", "data"),
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: [1]}", "stringData.k"),
    ("apiVersion: metrics.keptn.sh/v1\nkind: KeptnMetricsProvider\nmetadata: {name: p}\nspec: [1]", "spec"),
]


def touch_later(path: Path, text: str, seconds: float = 5) -> None:
    path.write_text(text)
    stamp = time.time() + seconds  # a different mtime even on coarse filesystems
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize(("document", "field"), MALFORMED, ids=[d for d, _ in MALFORMED])
def test_each_malformed_document_is_reported_with_file_index_and_field(
    tmp_path: Path, document: str, field: str
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(GOOD + "---\n" + document + "\n")
    objects, problems = load_file(path)
    assert [o.meta.name for o in objects] == ["good"]
    assert len(problems) == 1
    assert problems[0].path.startswith(f"{path} (document 2")
    assert field in problems[0].message
    assert "\n" not in problems[0].message


@pytest.mark.parametrize(("document", "field"), MALFORMED[:10], ids=[d for d, _ in MALFORMED[:10]])
async def test_a_malformed_document_does_not_stop_later_reloads(
    tmp_path: Path, document: str, field: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(document + "\n")
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    store = LocalStore(tmp_path)
    await store.start()
    try:
        assert [m.meta.name for m in store.list_metrics()] == ["good"]
        assert str(bad) in store.problems
        touch_later(good, GOOD.replace("name: good", "name: changed"))
        assert await store.reload_async()
        assert store.get_metric(ObjectKey("apps", "changed")) is not None
        assert store.get_metric(ObjectKey("apps", "good")) is None
        touch_later(bad, GOOD.replace("name: good", "name: fixed"), seconds=10)
        assert await store.reload_async()
        assert store.get_metric(ObjectKey("apps", "fixed")) is not None
        assert str(bad) not in store.problems
    finally:
        await store.stop()


def test_lifecycle_loader_survives_the_same_documents(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text("\n---\n".join(d for d, _ in MALFORMED) + "\n")
    manifests = load_lifecycle([path])
    assert not any("cannot be parsed" in p for p in manifests.problems)


def test_a_manifest_above_the_size_cap_is_reported_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD + "# " + "x" * 4096 + "\n")
    with pytest.raises(OSError, match="--max-manifest-bytes"):
        load_file(path, max_bytes=1024)
    assert load_file(path, max_bytes=0)[0]  # 0: no limit


async def test_the_store_keeps_the_previous_objects_of_a_file_grown_past_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    store = LocalStore(tmp_path, max_manifest_bytes=1024)
    await store.start()
    try:
        touch_later(path, GOOD + "# " + "x" * 4096 + "\n")
        assert await store.reload_async()
        assert [m.meta.name for m in store.list_metrics()] == ["good"]
        assert "--max-manifest-bytes" in store.problems[str(path)][0].message
    finally:
        await store.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrics_server", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD + "---\n" + "\n---\n".join(d for d, _ in MALFORMED[:12]) + "\n")
    (tmp_path / "b.yaml").write_text("kind: [unclosed\n")
    out = run_cli("validate", str(tmp_path))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == "13 problem(s) found"  # 12 documents + 1 unreadable file
    assert all(line.startswith("error: ") for line in lines[:-1])
    assert sum("a.yaml (document" in line for line in lines) == 12
    assert sum("b.yaml" in line for line in lines) == 1


def test_validate_reports_a_file_above_the_cap(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(GOOD + "# " + "x" * 2048 + "\n")
    out = run_cli("validate", "--max-manifest-bytes", "1000", str(tmp_path))
    assert out.returncode == 1 and "--max-manifest-bytes" in out.stderr and "Traceback" not in out.stderr


def test_validate_bounds_the_length_of_quoted_values(tmp_path: Path) -> None:
    name = "a" * 10_000
    (tmp_path / "long.yaml").write_text(GOOD.replace("name: good", f"name: {name}"))
    out = run_cli("validate", str(tmp_path))
    assert out.returncode == 1
    assert max(len(line) for line in out.stderr.splitlines()) < 1000


# -- property-based: arbitrary YAML-shaped documents never break the loader ------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KINDS = ["KeptnMetric", "KeptnMetricsProvider", "Secret", "List", "KeptnMetricList", "Analysis"]
FIELDS = ["metadata", "spec", "items", "data", "stringData", "status"]
documents = st.one_of(
    values,
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(KINDS) | values,
            "apiVersion": st.sampled_from(["metrics.keptn.sh/v1", "v1"]),
        },
        optional={f: values for f in FIELDS},
    ),
    st.fixed_dictionaries(
        {
            "apiVersion": st.just("metrics.keptn.sh/v1"),
            "kind": st.just("KeptnMetric"),
            "metadata": st.fixed_dictionaries({"name": st.just("m")}, optional={"namespace": values}),
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "provider": values,
                    "query": values,
                    "fetchIntervalSeconds": values,
                    "range": st.fixed_dictionaries(
                        {}, optional={k: values for k in ("interval", "step", "aggregation", "storedResults")}
                    ),
                },
            ),
        }
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(documents, min_size=1, max_size=4))
def test_any_document_is_loaded_or_reported_never_raised(tmp_path: Path, docs: list[Any]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(GOOD + "---\n" + yaml.safe_dump_all(docs))
    objects, problems = load_file(path)
    assert "good" in [o.meta.name for o in objects]
    assert all("cannot be parsed" not in p.message for p in problems), problems
    assert all(p.path.startswith(f"{path} (document ") for p in problems)
    manifests = load_lifecycle([path])
    assert all("cannot be parsed" not in p for p in manifests.problems), manifests.problems


def test_serve_starts_and_serves_with_a_malformed_document_present(tmp_path: Path) -> None:
    import json
    import urllib.request

    from tests.prometheus_server import free_port

    port = free_port()
    write_local_example(tmp_path, port, "\n---\nkind: 5\n---\nkind: List\nitems: 5\n")
    (tmp_path / "other.yaml").write_text(METRIC + "metadata: just-a-string\n")
    proc = popen_serve(
        "--manifests",
        str(tmp_path),
        "--metrics-port",
        str(port),
        "--secure-port",
        "0",
    )
    try:
        deadline = time.monotonic() + 20
        body: dict[str, Any] = {}
        while time.monotonic() < deadline and "value" not in body:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/metrics/default/resident-memory", timeout=2
                ) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.2)
        assert float(body["value"]) > 0
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "metrics.yaml (document 6)" in output and "other.yaml (document 1)" in output


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "- " * 100_000 + "x",
        "".join(" " * i + f"k{i}:\n" for i in range(200)) + "v",
    ],
    ids=["flow", "block-sequence", "block-mapping"],
)
async def test_deeply_nested_documents_are_refused_without_crashing(tmp_path: Path, text: str) -> None:
    """libyaml's composer recurses in C: 100,000 levels of `[` used to kill the whole process."""
    (tmp_path / "deep.yaml").write_text(text)
    (tmp_path / "good.yaml").write_text(GOOD)
    store = LocalStore(tmp_path)
    await store.start()
    try:
        assert [m.meta.name for m in store.list_metrics()] == ["good"]
        assert "nested deeper than" in store.problems[str(tmp_path / "deep.yaml")][0].message
    finally:
        await store.stop()
