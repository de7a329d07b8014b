"""The OpenAPI endpoints: `/openapi/v2`, the `/openapi/v3` root and one v3 document per
served group-version.

`/openapi/v2` is served as kube-openapi's pkg/handler does it: JSON when `Accept` allows it
(else 406), `ETag` = quoted upper-case hex SHA-512, `Vary: Accept`, 304 on `If-None-Match`;
kube-aggregator (pkg/controllers/openapi/aggregator/downloader.go) downloads it as
`system:aggregator` with no groups, `Accept: application/json`, and its last ETag.

The v3 documents are built from the Swagger 2.0 document of apiservice/openapi.py (one
source for both), with the serving rules of k8s.io/kube-openapi pkg/handler3/handler.go:

- root: `{"paths": {"apis/<g>/<v>": {"serverRelativeURL": "/openapi/v3/apis/<g>/<v>?hash=<ETag>"}}}`,
  `ETag` = quoted upper-case hex SHA-512 of the root JSON, served with `http.ServeContent`;
- `/openapi/v3/apis/<g>/<v>`: JSON whenever a clause of `Accept` allows it (empty means `*/*`),
  otherwise 406 (we do not encode the protobuf form); `Vary: Accept`; `ETag` = the document's
  hash; with `?hash=` equal to it `Cache-Control: public, immutable` and an `Expires` a year
  ahead, with a different hash a 301 to the current URL;
- `If-None-Match` / `If-Modified-Since` give 304 (apiservice/conditional.py).

kube-aggregator (pkg/controllers/openapiv3) downloads only the root, as `system:aggregator`
with no groups, every minute; it proxies `/openapi/v3/apis/<g>/<v>` to us when a client asks
the cluster for it, as that client. A group-version we do not serve is a 404 Status (handler3
would answer an empty 200).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from apiservice import openapi
from apiservice.conditional import http_date, serve_content
from apiservice.negotiation import accepts_json
from apiservice.status import status_response

ROOT = "/openapi/v3"


def _etag_of(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


def server_relative_url(key: str, etag: str) -> str:
    """handler3.constructServerRelativeURL."""
    return f"{ROOT}/{key}?{urlencode({'hash': etag})}"


def _v3_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/definitions/", "#/components/schemas/") if k == "$ref" else _v3_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_v3_refs(v) for v in node]
    return node


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def _parameter(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p["name"], "in": p["in"]}
    if p.get("description"):
        out["description"] = p["description"]
    if p.get("required"):
        out["required"] = True
    out["schema"] = {"type": p.get("type", "string"), "uniqueItems": True}
    return out


def _operation(op: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, resp in op["responses"].items():
        r: dict[str, Any] = {"description": resp["description"]}
        if "schema" in resp:
            r["content"] = {
                m: {"schema": _v3_refs(resp["schema"])} for m in op.get("produces", ["application/json"])
            }
        responses[code] = r
    return {
        "tags": op.get("tags", []),
        "description": op.get("description", ""),
        "operationId": op["operationId"],
        "responses": responses,
    }


def documents(swagger: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """One OpenAPI 3.0 document per group-version of the v2 document's paths, with only the
    schemas its paths reach (as kube-openapi's builder3 emits per group-version)."""
    swagger = swagger if swagger is not None else openapi.document()
    definitions: dict[str, Any] = swagger["definitions"]
    by_gv: dict[str, dict[str, Any]] = {}
    for path, item in swagger["paths"].items():
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "apis":
            continue
        key = "/".join(parts[:3])
        v3_item: dict[str, Any] = {}
        for method, op in item.items():
            if method == "parameters":
                v3_item["parameters"] = [_parameter(p) for p in op]
            else:
                v3_item[method] = _operation(op)
        by_gv.setdefault(key, {})[path] = v3_item
    docs: dict[str, dict[str, Any]] = {}
    for key, paths in sorted(by_gv.items()):
        reached: set[str] = set()
        _refs(paths, reached)
        pending = list(reached)
        while pending:  # the transitive closure of references
            found: set[str] = set()
            _refs(definitions[pending.pop()], found)
            pending.extend(found - reached)
            reached |= found
        docs[key] = {
            "openapi": "3.0.0",
            "info": copy.deepcopy(swagger["info"]),
            "paths": paths,
            "components": {
                "schemas": {name: _v3_refs(definitions[name]) for name in sorted(reached)},
                "securitySchemes": {
                    "BearerToken": {
                        "type": "apiKey",
                        "description": "Bearer Token authentication",
                        "name": "authorization",
                        "in": "header",
                    }
                },
            },
            "security": [{"BearerToken": []}],
        }
    return docs


@dataclass(frozen=True)
class _Encoded:
    body: bytes
    etag: str  # unquoted hash, as in `?hash=`


class OpenApiV3:
    """The encoded root and group-version documents (built once: they never change at runtime)."""

    def __init__(self, docs: dict[str, dict[str, Any]] | None = None, *, now: float | None = None) -> None:
        self.last_modified = time.time() if now is None else now
        self.documents: dict[str, _Encoded] = {}
        for key, doc in (docs if docs is not None else documents()).items():
            body = orjson.dumps(doc)
            self.documents[key] = _Encoded(body, _etag_of(body))
        root = {
            "paths": {
                k: {"serverRelativeURL": server_relative_url(k, e.etag)} for k, e in self.documents.items()
            }
        }
        body = orjson.dumps(root, option=orjson.OPT_SORT_KEYS)
        self.root = _Encoded(body, _etag_of(body))

    def serve_root(self, request: web.Request) -> web.Response:
        return serve_content(
            request,
            self.root.body,
            etag=f'"{self.root.etag}"',
            last_modified=self.last_modified,
            content_type="application/json",
        )

    def serve_group_version(self, key: str, request: web.Request) -> web.Response:
        doc = self.documents.get(key)
        if doc is None:
            return status_response(404, f"no OpenAPI v3 document for {key!r}; see {ROOT}")
        if not accepts_json(request.headers.get("Accept", "")):
            return status_response(406, "only application/json is served for OpenAPI v3 documents")
        headers = {"Vary": "Accept"}
        wanted = request.query.get("hash", "")
        if wanted:
            if wanted != doc.etag:
                location = server_relative_url(key, doc.etag)
                return web.Response(
                    status=301,
                    headers={"Location": location, "Vary": "Accept", "ETag": f'"{doc.etag}"'},
                    content_type="text/html",
                    text=f'<a href="{location}">Moved Permanently</a>.\n',
                )
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = http_date(time.time() + 365 * 86400)
        return serve_content(
            request,
            doc.body,
            etag=f'"{doc.etag}"',
            last_modified=self.last_modified,
            content_type="application/json",
            headers=headers,
        )


class OpenApiV2:
    """The Swagger 2.0 document, encoded once."""

    def __init__(self, doc: dict[str, Any] | None = None, *, now: float | None = None) -> None:
        self.last_modified = time.time() if now is None else now
        self.body = orjson.dumps(doc if doc is not None else openapi.document())
        self.etag = f'"{_etag_of(self.body)}"'

    def serve(self, request: web.Request) -> web.Response:
        if not accepts_json(request.headers.get("Accept", "")):
            return status_response(406, "only application/json is served for /openapi/v2")
        return serve_content(
            request,
            self.body,
            etag=self.etag,
            last_modified=self.last_modified,
            content_type="application/json",
            headers={"Vary": "Accept"},
        )
