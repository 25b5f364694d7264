"""``GET /openapi.json``: the API described from the app's own routes and body models.

The document is built from the live route table, so no route goes undocumented: one without
an entry in ``OPERATIONS`` is described from its docstring and policy, with a generic body.
Request bodies come from the pydantic models in ``app.schemas``; every failure is described
as ``application/problem+json``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from app.schemas import LoginBody, LogoutBody, RefreshBody, RegisterBody

_REF = "#/components/schemas/{model}"

SESSION: dict[str, Any] = {
    "type": "object",
    "required": [
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
        "user",
    ],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "const": "bearer"},
        "expires_in": {"type": "integer"},
        "expires_at": {"type": "integer"},
        "refresh_token": {"type": "string"},
        "user": {"$ref": "#/components/schemas/User"},
    },
}
USER: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
}
PROBLEM: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable, `debug` appears outside "
    "production only.",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "errors": {"type": "array", "items": {"type": "object"}},
        "debug": {"type": "string"},
    },
}
CHECK: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "state", "latency_ms"],
    "properties": {
        "ok": {"type": "boolean"},
        "state": {"type": "string"},
        "latency_ms": {"type": "number"},
    },
}
READY: dict[str, Any] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "degraded", "not_ready"]},
        "checks": {
            "type": "object",
            "required": ["redis", "supabase_auth", "jwks", "breaker", "thread_pool"],
            "additionalProperties": {"$ref": "#/components/schemas/Check"},
        },
    },
}
ME: dict[str, Any] = {
    "type": "object",
    "required": ["id", "session_id", "roles", "aal"],
    "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "app_metadata": {"type": "object"},
        "user_metadata": {"type": "object"},
        "session_id": {"type": "string"},
        "aal": {"type": ["string", "null"]},
    },
}
SESSIONS: dict[str, Any] = {
    "type": "object",
    "required": ["sessions"],
    "properties": {
        "sessions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "created_at", "last_seen_at", "current"],
                "properties": {
                    "id": {"type": "string"},
                    "created_at": {"type": "string"},
                    "last_seen_at": {"type": "string"},
                    "ip": {"type": "string"},
                    "user_agent": {"type": "string"},
                    "current": {"type": "boolean"},
                },
            },
        }
    },
}
REGISTRATION: dict[str, Any] = {
    "type": "object",
    "required": ["user", "session"],
    "properties": {
        "user": {"$ref": "#/components/schemas/User"},
        "session": {"oneOf": [{"$ref": "#/components/schemas/Session"}, {"type": "null"}]},
    },
}

_PROBLEM_TEXT = {
    400: "Malformed request (bad JSON, client went away)",
    401: "Missing, invalid or expired credentials",
    403: "Authenticated but not allowed",
    404: "No such resource",
    409: "Conflict (the email is taken)",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Body failed validation; `errors` names each field",
    429: "Rate limited or locked out; see Retry-After",
    503: "A dependency is down or saturated; see Retry-After",
    504: "The authentication provider did not answer in time",
}
_BODY_ERRORS = (400, 413, 415, 422)
_ALWAYS = (429, 503, 504)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    ok_status: int = 200
    ok_schema: dict[str, Any] | None = None
    ok_media: str = "application/json"
    body: type[BaseModel] | None = None
    body_required: bool = True
    secured: bool = False
    problems: tuple[int, ...] = ()
    extra_statuses: tuple[int, ...] = ()


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


OPERATIONS: dict[str, Operation] = {
    "health:live": Operation("Liveness: answers from the event loop alone", "operations"),
    "health:ready": Operation(
        "Readiness: Redis, Supabase Auth, JWKS, breaker and thread pool",
        "operations",
        ok_schema=_ref("Ready"),
        extra_statuses=(503,),
    ),
    "metrics": Operation("Prometheus metrics of this process", "operations", ok_media="text/plain"),
    "openapi": Operation("This document", "operations"),
    "auth:register": Operation(
        "Create an account",
        "auth",
        ok_status=201,
        ok_schema=_ref("Registration"),
        body=RegisterBody,
        problems=(*_BODY_ERRORS, 401, 409),
    ),
    "auth:login": Operation(
        "Sign in with email and password",
        "auth",
        ok_schema=_ref("Session"),
        body=LoginBody,
        problems=(*_BODY_ERRORS, 401, 403),
    ),
    "auth:refresh": Operation(
        "Rotate a refresh token",
        "auth",
        ok_schema=_ref("Session"),
        body=RefreshBody,
        problems=(*_BODY_ERRORS, 401),
    ),
    "auth:logout": Operation(
        "End this session, the others, or all",
        "auth",
        ok_status=204,
        body=LogoutBody,
        body_required=False,
        secured=True,
        problems=(*_BODY_ERRORS, 401, 403),
    ),
    "auth:me": Operation(
        "The caller's identity", "auth", ok_schema=_ref("Me"), secured=True, problems=(401, 403)
    ),
    "auth:sessions": Operation(
        "The caller's live sessions",
        "auth",
        ok_schema=_ref("Sessions"),
        secured=True,
        problems=(401, 403),
    ),
    "auth:session": Operation(
        "Revoke one of the caller's sessions",
        "auth",
        ok_status=204,
        secured=True,
        problems=(401, 403, 404),
    ),
}


def iter_routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str, set[str]]]:
    """(full path template, route name, methods) for every endpoint, mounts flattened."""
    found: list[tuple[str, str, set[str]]] = []
    for route in routes:
        if isinstance(route, Mount):
            found.extend(iter_routes(list(route.routes), prefix + route.path))
        elif isinstance(route, Route):
            methods = set(route.methods or ()) - {"HEAD"}
            found.append((prefix + route.path, route.name, methods))
    return found


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _PROBLEM_TEXT[status],
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _operation(name: str, op: Operation, path: str, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": "Success"}
    if op.ok_status != 204:
        ok["content"] = {op.ok_media: {"schema": op.ok_schema or {}}}
    responses[str(op.ok_status)] = ok
    for status in op.extra_statuses:
        responses[str(status)] = {
            "description": "Not ready; the body names the failing checks",
            "content": {op.ok_media: {"schema": op.ok_schema or {}}},
        }
    if op.problems or op.secured or op.body is not None:
        for status in sorted({*op.problems, *_ALWAYS}):
            responses[str(status)] = _problem_response(status)
    spec: dict[str, Any] = {
        "operationId": name.replace(":", "_") + ("_" + method.lower() if method != "GET" else ""),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body.__name__)}},
        }
    if op.secured:
        spec["security"] = [{"bearer": []}]
    parameters = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]
    if parameters:
        spec["parameters"] = parameters
    return spec


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema(ref_template=_REF))
    email = schema.get("properties", {}).get("email")
    if email is not None:
        email["format"] = "email"
    return schema


def _generic(name: str, endpoint: Any) -> Operation:
    """A route without an ``OPERATIONS`` entry: its docstring, JSON success, any problem."""
    doc = (getattr(endpoint, "__doc__", None) or name).strip().splitlines()[0]
    return Operation(
        doc,
        name.split(":", 1)[0],
        ok_schema={"type": "object"},
        secured=bool(_policy_layers(name)),
        problems=(*_BODY_ERRORS, 401, 403, 404, 409),
    )


def _policy_layers(name: str) -> tuple[Any, ...]:
    from app.policy import POLICIES

    return tuple(POLICIES.get(name, ()))


def _endpoints(routes: list[BaseRoute]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for route in routes:
        if isinstance(route, Mount):
            found.update(_endpoints(list(route.routes)))
        elif isinstance(route, Route):
            found[route.name] = route.endpoint
    return found


def build_openapi(routes: list[BaseRoute], *, server_url: str = "/") -> dict[str, Any]:
    from app import openapi_lifecycle  # the account-lifecycle routes, described apart

    operations = {**OPERATIONS, **openapi_lifecycle.OPERATIONS}
    paths: dict[str, dict[str, Any]] = {}
    endpoints = _endpoints(routes)
    for path, name, methods in iter_routes(routes):
        op = operations.get(name) or _generic(name, endpoints.get(name))
        for method in sorted(methods):
            paths.setdefault(path, {})[method.lower()] = _operation(name, op, path, method)
    schemas: dict[str, Any] = {
        "Problem": PROBLEM,
        "Session": SESSION,
        "User": USER,
        "Registration": REGISTRATION,
        "Me": ME,
        "Sessions": SESSIONS,
        "Ready": READY,
        "Check": CHECK,
    }
    for model in (RegisterBody, LoginBody, RefreshBody, LogoutBody):
        schemas[model.__name__] = _body_schema(model)
    schemas.update(openapi_lifecycle.SCHEMAS)
    for lifecycle_model in openapi_lifecycle.MODELS:
        schemas[lifecycle_model.__name__] = _body_schema(lifecycle_model)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "supaguard",
            "version": "1",
            "description": "Auth backend for Supabase. Errors are application/problem+json "
            "with a stable `code` and the `request_id` of the request.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi_endpoint(request: Request) -> Response:
    """The document, with ``servers`` as the client sees this service (prefix and scheme
    from a trusted proxy included)."""
    server_url = str(request.base_url).rstrip("/") or "/"
    return JSONResponse(build_openapi(list(request.app.routes), server_url=server_url))
