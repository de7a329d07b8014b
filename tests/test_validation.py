"""The checks every manifest parser shares: each error names the object and the field."""

from __future__ import annotations

import pytest

from metrics_server import validation
from metrics_server.validation import ValidationError


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({"kind": "KeptnMetric", "metadata": {"name": "m", "namespace": "apps"}}, "KeptnMetric apps/m"),
        ({"kind": "KeptnMetric", "metadata": {"name": "m"}}, "KeptnMetric default/m"),
        ({"metadata": "not a map"}, "? default/?"),
        ({}, "? default/?"),
    ],
)
def test_object_names_for_messages(doc: dict, name: str) -> None:
    assert validation.describe_object(doc, "default") == name


def test_maps() -> None:
    assert validation.expect_map(None, "o", "spec") == {}
    with pytest.raises(ValidationError) as err:
        validation.expect_map([1], "o", "spec")
    assert (err.value.obj, err.value.field_path, err.value.message) == (
        "o",
        "spec",
        "must be an object, got list",
    )
    with pytest.raises(ValidationError) as err:
        validation.str_map({"a": 1}, "o", "metadata.labels")
    assert err.value.field_path == "metadata.labels.a"


def test_api_versions() -> None:
    assert validation.split_api_version({"apiVersion": "v1"}, "o") == ("", "v1")
    assert (
        validation.check_api_version(
            {"apiVersion": "metrics.keptn.sh/v1beta1"}, "o", "metrics.keptn.sh", ("v1", "v1beta1")
        )
        == "v1beta1"
    )
    with pytest.raises(ValidationError, match="is required"):
        validation.split_api_version({}, "o")
    with pytest.raises(ValidationError) as err:
        validation.check_api_version(
            {"apiVersion": "metrics.keptn.sh/v2"}, "o", "metrics.keptn.sh", ("v1", "v1beta1")
        )
    assert (
        err.value.message
        == "'metrics.keptn.sh/v2' is not served (use one of metrics.keptn.sh/v1, metrics.keptn.sh/v1beta1)"
    )


@pytest.mark.parametrize("name", ["response_time_p95", "my-template", "UPPER"])
def test_a_reference_may_use_any_name_that_stays_one_path_segment(name: str) -> None:
    """Upstream's own AnalysisDefinitions reference `response_time_p95`: still valid."""
    assert validation.reference_name(name, "AnalysisDefinition d/x", "ref.name") == name


@pytest.mark.parametrize("name", ["..", ".", "../../victim/secrets/db", "a%2Fb"])
def test_a_reference_that_escapes_its_path_segment_is_refused(name: str) -> None:
    with pytest.raises(validation.ValidationError, match="is not a valid name"):
        validation.reference_name(name, "AnalysisDefinition d/x", "ref.name")
