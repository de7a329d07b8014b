"""Core v1 Event bodies, built in one place for every writer (status writer, lifecycle controller).

Events are named `<object name>.<unix nanoseconds in hex>`, as client-go's event recorder names
them, so an object's Events sort in the order they were recorded.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metrics_server.state import rfc3339

COMPONENT = "keptn-metrics"
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Event:
    """What to tell `kubectl describe` about an object: type Normal or Warning, a reason, a message."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class ObjectReference:
    """The object an Event is about (core v1 `involvedObject`)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    @classmethod
    def of(cls, doc: Mapping[str, Any], kind: str) -> ObjectReference:
        """The reference to a raw object as the API server returned it."""
        md = doc.get("metadata") or {}
        return cls(
            api_version=str(doc.get("apiVersion") or ""),
            kind=kind,
            namespace=str(md.get("namespace") or "default"),
            name=str(md.get("name") or ""),
            uid=str(md.get("uid") or ""),
            resource_version=str(md.get("resourceVersion") or ""),
        )


def default_instance() -> str:
    """`reportingInstance`: the pod's name (downward API), else the host name (the pod's, in a pod)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def event_body(
    obj: ObjectReference,
    event: Event,
    *,
    now: float,
    instance: str,
    component: str = COMPONENT,
) -> dict[str, Any]:
    """The core v1 Event to POST to `/api/v1/namespaces/{obj.namespace}/events`."""
    stamp = rfc3339(now)
    involved: dict[str, Any] = {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "namespace": obj.namespace,
        "name": obj.name,
    }
    if obj.uid:
        involved["uid"] = obj.uid
    if obj.resource_version:
        involved["resourceVersion"] = obj.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{obj.name}.{time.time_ns():x}", "namespace": obj.namespace},
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message[:MESSAGE_LIMIT],
        "type": event.type,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": instance,
    }


__all__ = ["COMPONENT", "MESSAGE_LIMIT", "Event", "ObjectReference", "default_instance", "event_body"]
