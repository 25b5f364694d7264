"""Request bodies: bounded reads and Go-like typed field access (wrong type → 400 bad_json)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from localauth.errors import ApiError

__all__ = ["MAX_BODY_BYTES", "Body", "read_body"]

MAX_BODY_BYTES = 1024 * 1024

_JSON_KIND = {
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _bad_json(detail: str) -> ApiError:
    return ApiError(400, "bad_json", f"Could not parse request body as JSON: {detail}")


def _too_large() -> ApiError:
    return ApiError(413, "request_too_large", "Request body too large")


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON (and Go's encoding/json) does not.
    raise _NotJson(f"invalid character {name[0]!r} looking for beginning of value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


async def read_body(request: Request, *, allow_empty: bool = False) -> Body:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return Body({})
        raise _bad_json("unexpected end of JSON input")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NotJson as exc:
        raise _bad_json(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise _bad_json(f"invalid character in JSON input: {exc}") from None
    if not isinstance(data, dict):
        kind = _JSON_KIND.get(type(data), "null") if data is not None else None
        if kind is None:
            return Body({})  # Go unmarshals `null` into a struct as a no-op.
        raise _bad_json(f"json: cannot unmarshal {kind} into Go value of type api.Params")
    return Body(data)


class Body:
    """A decoded JSON object; null and absent fields are the same, as with Go structs."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __contains__(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _typed(self, name: str, kinds: tuple[type, ...], go_type: str) -> Any:
        value = self.data.get(name)
        if value is None:
            return None
        # bool is an int subclass in Python, but not in JSON.
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return value
        kind = _JSON_KIND.get(type(value), "value")
        raise _bad_json(
            f"json: cannot unmarshal {kind} into Go struct field .{name} of type {go_type}"
        )

    def text(self, name: str) -> str | None:
        value: str | None = self._typed(name, (str,), "string")
        return value

    def flag(self, name: str) -> bool | None:
        value: bool | None = self._typed(name, (bool,), "bool")
        return value

    def mapping(self, name: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._typed(name, (dict,), "map[string]interface {}")
        return value
