"""Kubernetes ``Status`` responses the gateway itself produces."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
}


def status_body(code: int, message: str, reason: str = "", **details: Any) -> bytes:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return json.dumps(body).encode()


def status_response(code: int, message: str, reason: str = "", **details: Any) -> web.Response:
    return web.Response(
        status=code,
        body=status_body(code, message, reason, **details),
        headers={"Content-Type": "application/json"},
    )


def unauthorized() -> web.Response:
    # kubectl prints "error: You must be logged in to the server (Unauthorized)".
    return status_response(401, "Unauthorized")
