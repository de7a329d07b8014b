"""providers/registry.py is the one list of provider types: everything else agrees with it."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from metrics_server import cli
from metrics_server.aggregation import AGGREGATIONS, AGGREGATORS
from metrics_server.model import ValidationError, parse_metric, parse_provider
from providers import Backend, BackendConfig, BackendError, create_backend
from providers.registry import (
    BACKENDS,
    BY_NAME,
    HTTP_TLS_KEYS,
    OUR_TYPES,
    SECRET_KEY_REF,
    TYPE_NAMES,
    UPSTREAM_TYPES,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
# What upstream Keptn's KeptnMetricsProvider CRD lists (metrics-operator, v1): ours must keep it.
UPSTREAM_KEPTN_TYPES = ("prometheus", "thanos", "cortex", "dynatrace", "dql", "datadog", "elastic")
# A targetServer each backend accepts (most take a URL; the cloud ones name a region or project).
TARGETS = {"cloudwatch": "us-east-1", "google": "my-project"}
SECRET_READ = re.compile(r"""secret(?:_text|\.get)\(\s*["']([^"']+)["']""")


def _crd_versions(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((CRDS / name).read_text(encoding="utf-8"))
    versions: list[dict[str, Any]] = doc["spec"]["versions"]
    assert versions
    return versions


def _choices(parser: argparse.ArgumentParser, command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    assert action.choices is not None
    return tuple(action.choices)


def _provider_doc(ptype: str) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"type": ptype, "targetServer": "http://127.0.0.1:9"},
    }


def test_the_table_has_each_type_once_upstream_first() -> None:
    assert len(BY_NAME) == len(BACKENDS)
    assert UPSTREAM_TYPES == UPSTREAM_KEPTN_TYPES
    assert TYPE_NAMES == UPSTREAM_TYPES + OUR_TYPES
    assert set(TYPE_NAMES) == set(BY_NAME)


def test_the_committed_crd_enum_is_the_registry() -> None:
    for version in _crd_versions("metrics.keptn.sh_keptnmetricsproviders.yaml"):
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        assert tuple(spec["type"]["enum"]) == TYPE_NAMES, version["name"]
        for name in TYPE_NAMES:
            assert name in spec["type"]["description"]


def test_the_committed_crd_aggregations_are_the_evaluators() -> None:
    assert set(AGGREGATIONS) == set(AGGREGATORS)
    ranged = [
        v
        for v in _crd_versions("metrics.keptn.sh_keptnmetrics.yaml")
        if v["name"] not in ("v1alpha1", "v1alpha2")
    ]
    assert ranged
    for version in ranged:
        rng = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["range"]
        assert tuple(rng["properties"]["aggregation"]["enum"]) == AGGREGATIONS, version["name"]


def test_the_cli_offers_exactly_the_registry() -> None:
    parser = cli.build_parser()
    assert _choices(parser, "query", "--provider-type") == TYPE_NAMES
    assert _choices(parser, "query", "--aggregation") == AGGREGATIONS


@pytest.mark.parametrize("ptype", TYPE_NAMES)
def test_the_model_accepts_every_registered_type(ptype: str) -> None:
    assert parse_provider(_provider_doc(ptype)).type == ptype


def test_the_model_rejects_an_unregistered_type_naming_the_registered_ones() -> None:
    with pytest.raises(ValidationError) as err:
        parse_provider(_provider_doc("graphite"))
    assert err.value.field_path == "spec.type"
    assert ", ".join(TYPE_NAMES) in err.value.message


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_the_model_accepts_every_aggregation(aggregation: str) -> None:
    doc = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {
            "provider": {"name": "p"},
            "query": "up",
            "fetchIntervalSeconds": 5,
            "range": {"interval": "5m", "step": "1m", "aggregation": aggregation},
        },
    }
    rng = parse_metric(doc).range
    assert rng is not None and rng.aggregation == aggregation


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_registered_module_builds_its_provider(backend: Any) -> None:
    target = TARGETS.get(backend.name, "http://127.0.0.1:9")
    provider = create_backend(BackendConfig(type=backend.name, target_server=target))
    assert isinstance(provider, Backend)
    assert type(provider).__module__ == backend.module


def test_an_unknown_type_is_a_provider_error() -> None:
    with pytest.raises(BackendError, match="unknown provider type 'graphite'"):
        create_backend(BackendConfig(type="graphite", target_server="http://127.0.0.1:9"))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_the_listed_secret_keys_are_the_keys_the_module_reads(backend: Any) -> None:
    """Both ways: every listed key is read by the module, every literal key it reads is listed."""
    source = Path(importlib.import_module(backend.module).__file__ or "").read_text(encoding="utf-8")
    shared = (ROOT / "providers" / "httpclient.py").read_text(encoding="utf-8")
    uses_httpclient = re.search(r"\b(HTTPBackend|new_session|ssl_context)\b", source) is not None
    read = set(SECRET_READ.findall(source)) | (set(SECRET_READ.findall(shared)) if uses_httpclient else set())
    listed = set(backend.secret_keys)
    if uses_httpclient:
        assert set(HTTP_TLS_KEYS) <= listed
    literal = {k for k in listed if k != SECRET_KEY_REF and "<" not in k}
    assert read <= listed, f"{backend.name} reads unlisted Secret keys {sorted(read - listed)}"
    for key in literal:
        assert f'"{key}"' in source or (uses_httpclient and key in HTTP_TLS_KEYS), key
    if SECRET_KEY_REF in listed:
        assert "secret_key" in source
    if "header.<Name>" in listed:
        assert '"header."' in source


def test_no_provider_class_carries_a_type_list() -> None:
    for backend in BACKENDS:
        module = importlib.import_module(backend.module)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Backend):
                assert "types" not in vars(value), f"{value.__name__}.types: the registry owns types"


def test_the_readme_table_lists_exactly_the_registered_types() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Providers", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = [name for cell in first_cells for name in re.findall(r"`([a-z]+)`", cell)]
    assert sorted(documented) == sorted(TYPE_NAMES)
