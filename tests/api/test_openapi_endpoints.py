"""/openapi/v2, /openapi/v3 and /openapi/v3/apis/<g>/<v>, served the way k8s.io/kube-openapi's
handler (v2) and handler3 (v3) serve them: hashes, ETags, cache headers, conditional GETs."""

from __future__ import annotations

import hashlib
from email.utils import parsedate_to_datetime

import pytest

GVS = [
    "apis/custom.metrics.k8s.io/v1beta1",
    "apis/custom.metrics.k8s.io/v1beta2",
    "apis/external.metrics.k8s.io/v1beta1",
]
PROTOBUF_V3 = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf"


def _sha512(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


@pytest.fixture
async def api(start):
    return await start()


async def test_v3_root_lists_each_group_version_with_the_hash_of_its_document(api):
    status, root, resp = await api.get("/openapi/v3")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.headers["ETag"] == f'"{_sha512(resp._body)}"'
    assert sorted(root) == ["paths"] and sorted(root["paths"]) == GVS
    for key, entry in root["paths"].items():
        url = entry["serverRelativeURL"]
        path, _, query = url.partition("?")
        assert path == f"/openapi/v3/{key}" and query.startswith("hash=")
        status, _, gv = await api.get(url)
        assert status == 200
        assert query == f"hash={_sha512(gv._body)}" and gv.headers["ETag"] == f'"{_sha512(gv._body)}"'


@pytest.mark.parametrize("key", GVS)
async def test_each_v3_document_is_openapi_3_with_its_own_paths_and_resolvable_refs(api, key):
    status, doc, resp = await api.get(f"/openapi/v3/{key}")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Vary"] == "Accept" and "Cache-Control" not in resp.headers  # no hash: not immutable
    assert doc["openapi"] == "3.0.0" and doc["paths"]
    assert all(p.startswith(f"/{key}/") for p in doc["paths"])
    refs: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert node["$ref"].startswith("#/components/schemas/")
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs and refs <= set(doc["components"]["schemas"])
    group, version = key.split("/")[1:]
    gvks = [s.get("x-kubernetes-group-version-kind") for s in doc["components"]["schemas"].values()]
    kind = "ExternalMetricValueList" if group.startswith("external") else "MetricValueList"
    assert [{"group": group, "version": version, "kind": kind}] in gvks
    for item in doc["paths"].values():
        op = item["get"]
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert all("schema" in p and p["in"] in ("path", "query") for p in item["parameters"])


async def test_v3_hash_query_makes_the_document_immutable_or_redirects(api):
    _, root, _ = await api.get("/openapi/v3")
    url = root["paths"][GVS[1]]["serverRelativeURL"]
    status, _, resp = await api.get(url)
    assert status == 200 and resp.headers["Cache-Control"] == "public, immutable"
    expires = parsedate_to_datetime(resp.headers["Expires"])
    last_modified = parsedate_to_datetime(resp.headers["Last-Modified"])
    assert (expires - last_modified).days >= 364
    status, _, moved = await api.get(f"/openapi/v3/{GVS[1]}?hash=0BSOLETE", allow_redirects=False)
    assert status == 301 and moved.headers["Location"] == url


async def test_v3_conditional_get(api):
    _, _, resp = await api.get(f"/openapi/v3/{GVS[0]}")
    etag = resp.headers["ETag"]
    for header in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}, {"If-None-Match": "*"}):
        status, _, again = await api.get(f"/openapi/v3/{GVS[0]}", headers=header)
        assert status == 304 and again._body == b"" and again.headers["ETag"] == etag
    status, _, _ = await api.get(
        f"/openapi/v3/{GVS[0]}", headers={"If-Modified-Since": resp.headers["Last-Modified"]}
    )
    assert status == 304
    assert (await api.get(f"/openapi/v3/{GVS[0]}", headers={"If-None-Match": '"other"'}))[0] == 200
    _, _, root = await api.get("/openapi/v3")
    assert (await api.get("/openapi/v3", headers={"If-None-Match": root.headers["ETag"]}))[0] == 304


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("*/*", 200),
        ("application/*", 200),
        (f"{PROTOBUF_V3}, application/json", 200),  # protobuf is not encoded here: JSON next
        (PROTOBUF_V3, 406),
        ("text/html", 406),
    ],
)
async def test_v3_document_accept(api, accept, status):
    headers = {"Accept": accept} if accept else {}
    got, data, _ = await api.get(f"/openapi/v3/{GVS[2]}", headers=headers, skip_auto_headers=["Accept"])
    assert got == status
    if status == 406:
        assert data["kind"] == "Status" and data["reason"] == "NotAcceptable"


async def test_v3_unknown_group_version_is_a_not_found_status(api):
    status, data, _ = await api.get("/openapi/v3/apis/apps/v1")
    assert status == 404 and data["kind"] == "Status"


async def test_v2_etag_and_conditional_get_as_the_aggregator_downloads_it(api):
    headers = {"Accept": "application/json"}
    status, doc, resp = await api.get("/openapi/v2", headers=headers)
    assert status == 200 and doc["swagger"] == "2.0"
    assert resp.headers["ETag"] == f'"{_sha512(resp._body)}"' and resp.headers["Vary"] == "Accept"
    status, _, again = await api.get(
        "/openapi/v2", headers={**headers, "If-None-Match": resp.headers["ETag"]}
    )
    assert status == 304 and again._body == b""
    status, data, _ = await api.get(
        "/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
    )
    assert status == 406 and data["reason"] == "NotAcceptable"
