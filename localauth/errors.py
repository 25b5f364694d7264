"""GoTrue's error type and its two wire envelopes."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "API_VERSION_HEADER",
    "ApiError",
    "error_response",
    "plain_not_found",
    "unexpected_failure",
]

API_VERSION_HEADER = "X-Supabase-Api-Version"
_API_VERSION_2024 = "2024-01-01"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        weak_password_reasons: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.weak_password_reasons = weak_password_reasons


def unexpected_failure(message: str = "") -> ApiError:
    return ApiError(
        500,
        "unexpected_failure",
        message or "Unexpected failure, please check server logs for more information",
    )


def _wants_2024(request: Request) -> bool:
    # Any well-formed date on or after 2024-01-01 selects the newer envelope.
    version = request.headers.get(API_VERSION_HEADER, "").strip()
    if len(version) != 10 or version[4] != "-" or version[7] != "-":
        return False
    return version >= _API_VERSION_2024 and version[:4].isdigit()


def error_response(request: Request, err: ApiError) -> Response:
    headers: dict[str, str] = {}
    body: dict[str, Any]
    if _wants_2024(request):
        headers[API_VERSION_HEADER] = _API_VERSION_2024
        body = {"code": err.error_code, "message": err.message}
        if err.weak_password_reasons is not None:
            body["weak_password"] = {"reasons": err.weak_password_reasons}
        else:
            headers["x-sb-error-code"] = err.error_code
    else:
        headers["x-sb-error-code"] = err.error_code
        body = {"code": err.status, "error_code": err.error_code, "msg": err.message}
        if err.status >= 500:
            body["error_id"] = str(uuid.uuid4())
        if err.weak_password_reasons is not None:
            body["weak_password"] = {"reasons": err.weak_password_reasons}
    return Response(
        json.dumps(body),
        status_code=err.status,
        headers=headers,
        media_type="application/json",
    )


def plain_not_found() -> Response:
    return Response("404 page not found\n", status_code=404, media_type="text/plain")
