"""Reading JSON request bodies into validated models, with every failure a clear 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from app import strictjson
from services import errors

M = TypeVar("M", bound=BaseModel)


async def read_model(request: Request, model: type[M], *, optional: bool = False) -> M:
    """Parse the body as ``model``; an absent body is allowed only when ``optional``."""
    body = await read_limited(request)
    if not body.strip():
        if optional:
            return model()
        raise errors.ValidationFailed("A JSON body is required.")
    require_json(request)
    return parse_model(body, model)


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise errors.UnsupportedMediaType()


def parse_model(body: bytes, model: type[M]) -> M:
    """``body`` as strict JSON (``app.strictjson``), validated as ``model``."""
    try:
        data: Any = strictjson.loads(body)
    except strictjson.StrictJsonError as exc:
        raise errors.MalformedJson(str(exc)) from None
    if not isinstance(data, dict):
        raise errors.ValidationFailed(
            errors=[{"field": "body", "message": "must be a JSON object", "type": "dict_type"}]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.ValidationFailed(errors=_field_errors(exc)) from None


async def read_limited(request: Request) -> bytes:
    """The raw body, at most ``MAX_BODY_BYTES`` (413 beyond)."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (
        not declared.isascii() or not declared.isdigit() or len(declared) > 18
    ):
        raise errors.BadRequest("The Content-Length header is not a number.")
    if declared is not None and int(declared) > limit:
        raise errors.PayloadTooLarge(f"The request body may be at most {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"The request body may be at most {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise errors.BadRequest("The client went away while sending the body.") from None
    return b"".join(chunks)


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
