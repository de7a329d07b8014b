"""Aggregated discovery: `GET /apis` as an `apidiscovery.k8s.io` `APIGroupDiscoveryList`.

Since Kubernetes 1.30 kube-aggregator asks every aggregated API server for this document
first (pkg/apiserver/handler_discovery.go in kubernetes/kube-aggregator) and only falls
back to `/apis/<group>/<version>` when the answer's Content-Type is not the v2 document.
What we answer follows k8s.io/apiserver (pkg/endpoints/discovery/aggregated):

- wrapper.go / negotiation.go: the document is served only when a JSON clause of `Accept`
  carries `g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList` (or `v=v2beta1`); every other
  Accept gets the plain `APIGroupList`;
- handler.go / etag.go: `Content-Type: application/json;g=apidiscovery.k8s.io;v=<v>;as=APIGroupDiscoveryList`,
  `ETag` = the quoted upper-case hex SHA-512 of the v2 JSON (the same for v2 and v2beta1),
  `Vary: Accept`, `Cache-Control: public`, and `304 Not Modified` when `If-None-Match` equals
  the quoted ETag exactly;
- genericapiserver.go (installAPIResources): every served version is `freshness: Current`;
  groups are sorted by name at equal priority, versions newest first;
- installer.go `ConvertGroupVersionIntoToDiscovery`: the resources are the version's
  APIResourceList converted the same way, so `<resource>/<metric>` entries become
  subresources of `<resource>`; kube-aggregator's fallback converts with the same function,
  so the cluster's merged document is the same whichever path it took.

k8s.io/apiserver 1.33+ refuses v2beta1 by default (feature AggregatedDiscoveryRemoveBetaType);
we still serve it, as servers built on earlier releases do, because kube-aggregator up to
1.36 lists it in its Accept header after v2 and older clients ask for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from apiservice.negotiation import negotiate_conversion

GROUP = "apidiscovery.k8s.io"
KIND = "APIGroupDiscoveryList"
VERSIONS = ("v2", "v2beta1")
_ALLOWED = frozenset((GROUP, v, KIND) for v in VERSIONS)


def requested_version(accept: str) -> str | None:
    """ "v2" or "v2beta1" when `accept` asks for the aggregated document, else None."""
    conversion = negotiate_conversion(accept, _ALLOWED)
    return conversion[1] if conversion else None


def content_type(version: str) -> str:
    """responsewriters.generateMediaTypeWithGVK: the media type plus g, v and as."""
    return f"application/json;g={GROUP};v={version};as={KIND}"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def convert_resources(api_resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """An APIResourceList's `resources` as APIResourceDiscovery entries (the Go field order and
    omitempty rules of k8s.io/api apidiscovery/v2), `a/b` becoming subresource `b` of `a`."""
    resources = list(api_resources)
    out: list[dict[str, Any]] = []
    parents: dict[str, dict[str, Any]] = {}
    for r in resources:
        if "/" in r["name"]:
            continue
        entry: dict[str, Any] = {
            "resource": r["name"],
            "responseKind": _gvk(r.get("group", ""), r.get("version", ""), r.get("kind", "")),
            "scope": "Namespaced" if r.get("namespaced") else "Cluster",
            "singularResource": r.get("singularName", ""),
            "verbs": r.get("verbs"),
        }
        if r.get("shortNames"):
            entry["shortNames"] = r["shortNames"]
        if r.get("categories"):
            entry["categories"] = r["categories"]
        out.append(entry)
        parents[r["name"]] = entry
    for r in resources:
        parent_name, slash, sub = r["name"].partition("/")
        if not slash:
            continue
        scope = "Namespaced" if r.get("namespaced") else "Cluster"
        parent = parents.get(parent_name)
        if parent is None:  # a subresource without its parent: an empty parent, as Go creates it
            parent = {"resource": parent_name, "responseKind": _gvk("", "", ""), "scope": scope,
                      "singularResource": "", "verbs": None}  # fmt: skip
            out.append(parent)
            parents[parent_name] = parent
        kind = r.get("kind", "")
        parent.setdefault("subresources", []).append(
            {
                "subresource": sub,
                "responseKind": _gvk(r.get("group", ""), r.get("version", ""), kind)
                if kind
                else _gvk("", "", ""),
                "verbs": r.get("verbs"),
            }
        )
    return out


@dataclass(frozen=True)
class Document:
    """The aggregated document, encoded once for each version, with its ETag (quoted)."""

    etag: str
    bodies: dict[str, bytes]


def build(groups: Sequence[tuple[str, Sequence[tuple[str, list[dict[str, Any]]]]]]) -> Document:
    """`groups` is [(group, [(version, APIResourceList resources)])], versions in order of preference."""
    items = [
        {
            "metadata": {"name": name, "creationTimestamp": None},
            "versions": [
                {"version": v, "resources": convert_resources(res), "freshness": "Current"}
                for v, res in versions
            ],
        }
        for name, versions in sorted(groups, key=lambda g: g[0])
    ]
    etag = '"' + hashlib.sha512(orjson.dumps({"metadata": {}, "items": items})).hexdigest().upper() + '"'
    bodies = {
        v: orjson.dumps({"kind": KIND, "apiVersion": f"{GROUP}/{v}", "metadata": {}, "items": items})
        for v in VERSIONS
    }
    return Document(etag, bodies)


def respond(doc: Document, version: str, if_none_match: str) -> web.Response:
    """ServeHTTPWithETag: cache headers always, 304 on an exact If-None-Match, else the body."""
    headers = {"ETag": doc.etag, "Vary": "Accept", "Cache-Control": "public"}
    if if_none_match == doc.etag:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = content_type(version)
    return web.Response(body=doc.bodies[version], headers=headers)
