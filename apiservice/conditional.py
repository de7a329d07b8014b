"""Conditional GETs as Go's `http.ServeContent` answers them (net/http fs.go), which is what
kube-openapi's OpenAPI handlers use: `Last-Modified`, `Accept-Ranges`, and `304 Not Modified`
for a matching `If-None-Match` (weak comparison, `*`, lists) or, without it, an
`If-Modified-Since` not older than the document. Range requests get the whole document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web


def http_date(ts: float) -> str:
    """RFC 7231 IMF-fixdate (Go's http.TimeFormat)."""
    return format_datetime(datetime.fromtimestamp(int(ts), UTC), usegmt=True)


def _etag_matches(header: str, etag: str) -> bool:
    """checkIfNoneMatch: any listed entity tag equals ours, weakly (a `W/` prefix is ignored)."""
    ours = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == ours:
            return True
    return False


def not_modified(headers: Mapping[str, str], etag: str, last_modified: float) -> bool:
    inm = headers.get("If-None-Match", "")
    if inm:
        return _etag_matches(inm, etag)
    ims = headers.get("If-Modified-Since", "")
    if ims:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return int(last_modified) <= since
    return False


def serve_content(
    request: web.Request,
    body: bytes,
    *,
    etag: str,
    last_modified: float,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """`body` with `ETag` (already quoted) and the given headers, or 304 when the client has it."""
    out = {"ETag": etag, **(headers or {})}
    if not_modified(request.headers, etag, last_modified):
        return web.Response(status=304, headers=out)  # no Content-Type, no Last-Modified (Go drops them)
    out.update(
        {"Content-Type": content_type, "Last-Modified": http_date(last_modified), "Accept-Ranges": "bytes"}
    )
    return web.Response(body=body, headers=out)
