"""One Event body for every writer: the shape core v1 expects, named so an object's Events sort in order."""

from __future__ import annotations

from metrics_server.kube.events import MESSAGE_LIMIT, Event, ObjectReference, event_body
from metrics_server.state import rfc3339

DOC = {
    "apiVersion": "lifecycle.keptn.sh/v1",
    "kind": "KeptnEvaluation",
    "metadata": {"name": "e", "namespace": "apps", "uid": "u1", "resourceVersion": "42"},
}


def test_the_body_refers_to_the_object_and_says_who_reported() -> None:
    ref = ObjectReference.of(DOC, "KeptnEvaluation")
    body = event_body(ref, Event("Warning", "EvaluationFailed", "no"), now=0.0, instance="pod-1")
    assert body["involvedObject"] == {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluation",
        "namespace": "apps",
        "name": "e",
        "uid": "u1",
        "resourceVersion": "42",
    }
    assert body["metadata"]["namespace"] == "apps" and body["metadata"]["name"].startswith("e.")
    assert (body["type"], body["reason"], body["message"], body["count"]) == (
        "Warning",
        "EvaluationFailed",
        "no",
        1,
    )
    assert body["firstTimestamp"] == body["lastTimestamp"] == rfc3339(0.0)
    assert body["source"] == {"component": "keptn-metrics"} and body["reportingComponent"] == "keptn-metrics"
    assert body["reportingInstance"] == "pod-1"


def test_unknown_identity_fields_are_left_out_and_messages_are_capped() -> None:
    ref = ObjectReference("metrics.keptn.sh/v1", "KeptnMetric", "apps", "m")
    body = event_body(ref, Event("Normal", "R", "x" * 5000), now=0.0, instance="i", component="c")
    assert "uid" not in body["involvedObject"] and "resourceVersion" not in body["involvedObject"]
    assert len(body["message"]) == MESSAGE_LIMIT
    assert body["source"] == {"component": "c"}


def test_an_objects_events_sort_in_the_order_they_were_made() -> None:
    ref = ObjectReference.of(DOC, "KeptnEvaluation")
    names = [
        event_body(ref, Event("Normal", "R", str(i)), now=0.0, instance="i")["metadata"]["name"]
        for i in range(50)
    ]
    assert sorted(names, key=lambda n: int(n.rpartition(".")[2], 16)) == names
