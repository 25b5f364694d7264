"""Rendering every failure as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import math
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services import errors

log = structlog.get_logger("app.problems")

PROBLEM_TYPE_BASE = "https://supaguard.dev/problems/"
_HTTP_ERRORS: dict[int, type[errors.AuthServiceError]] = {
    400: errors.BadRequest,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.ValidationFailed,
    429: errors.TooManyRequests,
    503: errors.ServiceUnavailable,
}


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem_response(
    exc: errors.AuthServiceError, *, request_id: str | None, production: bool
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
        "request_id": request_id,
    }
    if exc.errors:
        body["errors"] = exc.errors
    if exc.debug and not production:
        body["debug"] = exc.debug
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return ProblemResponse(body, status_code=exc.status, headers=headers)


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def _production(request: Request) -> bool:
    settings = getattr(request.app.state, "settings", None)
    return bool(settings is not None and settings.is_production)


async def handle_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.AuthServiceError)
    return problem_response(exc, request_id=_request_id(request), production=_production(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405s, in our envelope."""
    assert isinstance(exc, HTTPException)
    error_class = _HTTP_ERRORS.get(exc.status_code, errors.AuthServiceError)
    mapped = error_class(headers=exc.headers)
    return problem_response(
        mapped, request_id=_request_id(request), production=_production(request)
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The last resort: a bug. Logged with its traceback, answered without one."""
    log.error("unhandled_error", error=type(exc).__name__, path=request.url.path, exc_info=exc)
    mapped = errors.AuthServiceError(debug=f"{type(exc).__name__} in {request.url.path}")
    return problem_response(
        mapped, request_id=_request_id(request), production=_production(request)
    )
