"""Resource model: upstream Keptn manifests parse unchanged; upstream's rules are clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from metrics_server.durations import DurationError, format_duration, parse_duration
from metrics_server.model import ValidationError, parse_metric, parse_provider, parse_resource, parse_secret


def metric_doc(version: str = "v1", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"provider": {"name": "prom"}, "query": "sum(up)", "fetchIntervalSeconds": 10}
    base.update(spec)
    return {
        "apiVersion": f"metrics.keptn.sh/{version}",
        "kind": "KeptnMetric",
        "metadata": {"name": "podtato", "namespace": "apps"},
        "spec": base,
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("300ms", 0.3),
        ("0", 0),
        ("2h45m10s", 9910),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "m", "1d", "5 m", "", "1h-5m", "abc"])
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration_like_go() -> None:
    assert (
        format_duration(5400) == "1h30m0s" and format_duration(300) == "5m0s" and format_duration(0) == "0s"
    )


def test_upstream_v1_metric_with_range_parses_with_defaults() -> None:
    m = parse_metric(metric_doc(range={"step": "1m", "aggregation": "p95", "storedResults": 5}))
    assert m.range is not None
    assert (m.range.interval, m.range.step, m.range.aggregation, m.range.stored_results) == (
        "5m",
        "1m",
        "p95",
        5,
    )
    assert m.key.namespace == "apps" and m.provider_name == "prom"


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3", "v1alpha2", "v1alpha1"])
def test_every_served_version_parses(version: str) -> None:
    assert parse_metric(metric_doc(version)).fetch_interval_seconds == 10


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"range": {"step": "1m"}}, "spec.range", "together"),
        ({"range": {"aggregation": "max"}}, "spec.range", "together"),
        ({"range": {"interval": "5 minutes"}}, "spec.range.interval", "Go duration"),
        ({"range": {"step": "1m", "aggregation": "p50"}}, "spec.range.aggregation", "must be one of"),
        ({"range": {"storedResults": 256}}, "spec.range.storedResults", "255"),
        ({"fetchIntervalSeconds": "10"}, "spec.fetchIntervalSeconds", "integer"),
        ({"fetchIntervalSeconds": 0}, "spec.fetchIntervalSeconds", "at least 1"),
        ({"query": ""}, "spec.query", "required"),
        ({"provider": {}}, "spec.provider.name", "required"),
    ],
)
def test_invalid_metrics_name_object_and_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric(metric_doc(**spec))
    assert info.value.field_path == field
    assert words in info.value.message
    assert str(info.value).startswith("KeptnMetric apps/podtato: ")


def test_range_is_rejected_in_versions_without_it() -> None:
    with pytest.raises(ValidationError, match="not available in metrics.keptn.sh/v1alpha2"):
        parse_metric(metric_doc("v1alpha2", range={"interval": "5m"}))


def test_unknown_api_version_is_rejected() -> None:
    doc = metric_doc()
    doc["apiVersion"] = "metrics.keptn.sh/v2"
    with pytest.raises(ValidationError, match="is not served"):
        parse_metric(doc)


def test_provider_fields_and_types() -> None:
    p = parse_provider(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "dt", "namespace": "keptn"},
            "spec": {
                "type": "dynatrace",
                "targetServer": "https://x.live.dynatrace.com",
                "secretKeyRef": {"name": "dt-token", "key": "DT_TOKEN"},
            },
        }
    )
    assert p.type == "dynatrace" and p.secret_key_ref is not None and p.secret_key_ref.key == "DT_TOKEN"
    assert p.insecure_skip_tls_verify is False
    with pytest.raises(ValidationError, match="spec.type: 'graphite' is not a known provider type"):
        parse_provider(
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetricsProvider",
                "metadata": {"name": "x"},
                "spec": {"type": "graphite", "targetServer": "http://x"},
            }
        )
    with pytest.raises(ValidationError, match="spec.targetServer: is required"):
        parse_provider(
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetricsProvider",
                "metadata": {"name": "x"},
                "spec": {"type": "prometheus"},
            }
        )


def test_secret_data_and_string_data() -> None:
    s = parse_secret(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"user": "a2VwdG4=", "password": "b2xk"},
            "stringData": {"password": "new"},
        }
    )
    assert s.data == {"user": b"keptn", "password": b"new"}
    with pytest.raises(ValidationError, match="data.user: is not valid base64"):
        parse_secret(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"user": "%%%"}}
        )


def test_invalid_names_and_unknown_kinds() -> None:
    doc = metric_doc()
    doc["metadata"]["name"] = "Not_Valid"
    with pytest.raises(ValidationError, match="metadata.name"):
        parse_metric(doc)
    assert parse_resource({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}) is None


def test_durations_have_documented_maxima_in_model_and_crd() -> None:
    """fetchIntervalSeconds and range durations are bounded, with the same numbers in the CRD."""
    import importlib.util
    from pathlib import Path

    from metrics_server import model

    path = Path(__file__).resolve().parent.parent / "deploy" / "crdgen.py"
    spec = importlib.util.spec_from_file_location("crdgen_bounds", path)
    assert spec is not None and spec.loader is not None
    crdgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crdgen)
    assert crdgen.MAX_FETCH_INTERVAL_SECONDS == model.MAX_FETCH_INTERVAL_SECONDS
    assert crdgen.MAX_RANGE_TEXT == model.MAX_RANGE_TEXT
    assert model.parse_duration(model.MAX_RANGE_TEXT) == model.MAX_RANGE_SECONDS
    schema = crdgen.keptn_metric_schema(with_range=True)["properties"]["spec"]["properties"]
    assert schema["fetchIntervalSeconds"]["maximum"] == model.MAX_FETCH_INTERVAL_SECONDS
    rules = " ".join(r["rule"] for r in schema["range"]["x-kubernetes-validations"])
    assert f"duration(self.interval) <= duration('{model.MAX_RANGE_TEXT}')" in rules
    assert f"duration(self.step) <= duration('{model.MAX_RANGE_TEXT}')" in rules


def test_fetch_interval_and_range_accept_the_maximum_and_reject_beyond() -> None:
    from metrics_server.model import MAX_FETCH_INTERVAL_SECONDS

    parse_metric(metric_doc(fetchIntervalSeconds=MAX_FETCH_INTERVAL_SECONDS))
    parse_metric(metric_doc(range={"interval": "8784h", "step": "1h", "aggregation": "max"}))
    for spec, field in (
        ({"fetchIntervalSeconds": MAX_FETCH_INTERVAL_SECONDS + 1}, "spec.fetchIntervalSeconds"),
        ({"range": {"interval": "8785h"}}, "spec.range.interval"),
        ({"range": {"interval": "5m", "step": "9000h", "aggregation": "max"}}, "spec.range.step"),
    ):
        with pytest.raises(ValidationError) as err:
            parse_metric(metric_doc(**spec))
        assert err.value.field_path == field
