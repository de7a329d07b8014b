"""Kubernetes `Status` error objects and JSON responses (always `application/json`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json"

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """Raised anywhere in a handler; turned into a Status response."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "InternalError")


def status_body(code: int, message: str, reason: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or REASONS.get(code, "InternalError"),
            "code": code,
        }
    )


def status_response(code: int, message: str, reason: str | None = None) -> web.Response:
    # No Retry-After header, on purpose: client-go would retry up to ten times.
    return web.Response(status=code, body=status_body(code, message, reason), content_type=JSON_CONTENT_TYPE)


def error_response(err: ApiError) -> web.Response:
    return status_response(err.code, err.message, err.reason)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON_CONTENT_TYPE)


def bytes_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON_CONTENT_TYPE)
