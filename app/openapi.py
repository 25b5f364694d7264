"""``GET /openapi.json``: the API described from the app's own routes and body models.

The document is built from the live route table, so no route goes undocumented: one without
an entry in ``OPERATIONS`` is described from its docstring and policy, with a generic body.
Request bodies come from the pydantic models in ``app.schemas``, responses from
``app.openapi_schemas``; every failure is ``application/problem+json`` whose ``code`` is
the enum of every ``services.errors`` code. Each operation's security scheme follows its
policy (``app.policy``): a bearer token, service credentials, or none.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from app.openapi_schemas import components, ref
from app.schemas import LoginBody, LogoutBody, RefreshBody, RegisterBody, RolesBody
from app.version import __version__

_REF = "#/components/schemas/{model}"
_BODIES: tuple[type[BaseModel], ...] = (RegisterBody, LoginBody, RefreshBody, LogoutBody, RolesBody)

_PROBLEM_TEXT = {
    400: "Malformed request (not strict JSON, client went away) or a Host not allowed",
    401: "Missing, invalid or expired credentials",
    403: "Authenticated but not allowed",
    404: "No such resource",
    409: "Conflict (the email is taken)",
    413: "Body too large",
    415: "Body is not application/json",
    422: "The body or a query parameter failed validation; `errors` names each field",
    429: "Rate limited or locked out; see Retry-After",
    431: "Too many request headers, or too large (MAX_HEADER_COUNT, MAX_HEADER_BYTES)",
    503: "A dependency is down or saturated; see Retry-After",
    504: "The authentication provider did not answer in time",
}
_BODY_ERRORS = (400, 413, 415, 422)
# 400 invalid_host and 431 come from the edge, before any route.
_ALWAYS = (400, 429, 431, 503, 504)
_ADMIN = (401, 403, 404)

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Supabase access token from login or refresh.",
    },
    "serviceId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Service-ID",
        "description": "Service-to-service: an id of SERVICE_CREDENTIALS.",
    },
    "serviceSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Service-Secret",
        "description": "Service-to-service: that id's secret.",
    },
}


def _query(name: str, maximum: int, default: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string", "maxLength": 1024},
    }


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    ok_status: int = 200
    ok_schema: dict[str, Any] | None = None
    ok_media: str = "application/json"
    body: type[BaseModel] | None = None
    body_required: bool = True
    problems: tuple[int, ...] = ()
    extra_statuses: tuple[int, ...] = ()
    query: tuple[dict[str, Any], ...] = ()
    # Takes X-Session-Transport (app/transport.py).
    transport: bool = False
    headers: tuple[dict[str, Any], ...] = ()
    # A request body documented by name, for a model defined beside its route.
    body_schema: str | None = None


OPERATIONS: dict[str, Operation] = {
    "health:live": Operation(
        "Liveness: answers from the event loop alone", "operations", ok_schema=ref("Live")
    ),
    "health:ready": Operation(
        "Readiness: Redis, Supabase Auth, JWKS, breaker and thread pool",
        "operations",
        ok_schema=ref("Ready"),
        extra_statuses=(503,),
    ),
    "metrics": Operation("Prometheus metrics of this process", "operations", ok_media="text/plain"),
    "openapi": Operation("This document", "operations", ok_schema={"type": "object"}),
    "auth:register": Operation(
        "Create an account",
        "auth",
        ok_status=201,
        ok_schema=ref("Registration"),
        body=RegisterBody,
        problems=(*_BODY_ERRORS, 401, 403, 409),
        transport=True,
    ),
    "auth:login": Operation(
        "Sign in with email and password",
        "auth",
        ok_schema=ref("Session"),
        body=LoginBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:refresh": Operation(
        "Rotate a refresh token",
        "auth",
        ok_schema=ref("Session"),
        body=RefreshBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:logout": Operation(
        "End this session, the others, or all",
        "auth",
        ok_status=204,
        body=LogoutBody,
        body_required=False,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:me": Operation("The caller's identity", "auth", ok_schema=ref("Me"), problems=(401, 403)),
    "auth:sessions": Operation(
        "The caller's live sessions", "auth", ok_schema=ref("Sessions"), problems=(401, 403)
    ),
    "auth:session": Operation(
        "Revoke one of the caller's sessions", "auth", ok_status=204, problems=(401, 403, 404)
    ),
    "users:sessions": Operation(
        "A user's live sessions (the user, or an admin)",
        "users",
        ok_schema=ref("Sessions"),
        problems=(401, 403, 404),
    ),
    "admin:users": Operation(
        "List users, paged",
        "admin",
        ok_schema=ref("UserPage"),
        problems=(*_ADMIN, 422),
        query=(
            _query("page", 1_000_000, 1, "page number, from 1"),
            _query("per_page", 1000, 50, "users per page"),
        ),
    ),
    "admin:user": Operation("One user", "admin", ok_schema=ref("User"), problems=_ADMIN),
    "admin:ban": Operation(
        "Ban a user until lifted; ends every session at once",
        "admin",
        ok_schema=ref("User"),
        problems=_ADMIN,
    ),
    "admin:unban": Operation("Lift a ban", "admin", ok_schema=ref("User"), problems=_ADMIN),
    "admin:roles": Operation(
        "Set a user's roles (app_metadata.roles); removing one ends their sessions",
        "admin",
        ok_schema=ref("User"),
        body=RolesBody,
        problems=(*_BODY_ERRORS, *_ADMIN),
    ),
    "admin:revoke_sessions": Operation(
        "End every session of a user", "admin", ok_schema=ref("Revoked"), problems=_ADMIN
    ),
    "admin:unlock": Operation(
        "Clear a user's login lockout", "admin", ok_status=204, problems=_ADMIN
    ),
    "internal:supabase_events": Operation(
        "From Supabase: a user changed or was deleted (Standard Webhooks signature)",
        "internal",
        ok_schema=ref("EventOutcome"),
        body_schema="EventBody",
        problems=(*_BODY_ERRORS, 401, 404),
        headers=tuple(
            _header(name, "Standard Webhooks: " + text)
            for name, text in (
                ("webhook-id", "the delivery id (applied once)"),
                ("webhook-timestamp", "Unix time of the delivery (at most 5 minutes off)"),
                ("webhook-signature", "v1,<base64 HMAC-SHA256> with SUPABASE_EVENTS_SECRET"),
            )
        ),
    ),
    "internal:user_status": Operation(
        "For other services: is the user banned, and since when are tokens refused",
        "internal",
        ok_schema=ref("UserStatus"),
        problems=(401, 404),
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
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def security_for(name: str) -> list[dict[str, list[str]]]:
    """The security requirement of route ``name``, read from its policy's layers."""
    from app.authz.layers import Bearer, ServiceCredentials
    from app.policy import POLICIES

    layers = POLICIES.get(name, ())
    if any(isinstance(layer, Bearer) for layer in layers):
        return [{"bearer": []}]
    if any(isinstance(layer, ServiceCredentials) for layer in layers):
        return [{"serviceId": [], "serviceSecret": []}]
    return []


def _path_parameter(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name == "user_id":
        schema["format"] = "uuid"
    return {"name": name, "in": "path", "required": True, "schema": schema}


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
    security = security_for(name)
    body_name = op.body.__name__ if op.body is not None else op.body_schema
    if op.problems or security or body_name is not None:
        for status in sorted({*op.problems, *_ALWAYS}):
            responses[str(status)] = _problem_response(status)
    spec: dict[str, Any] = {
        "operationId": name.replace(":", "_") + ("_" + method.lower() if method != "GET" else ""),
        "summary": op.summary,
        "tags": [op.tag],
        "security": security,
        "responses": responses,
    }
    if body_name is not None:
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": ref(body_name)}},
        }
    parameters = [
        _path_parameter(part[1:-1])
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]
    parameters.extend(op.query)
    parameters.extend(op.headers)
    if op.transport:
        parameters.append(_TRANSPORT_PARAMETER)
    if parameters:
        spec["parameters"] = parameters
    return spec


_TRANSPORT_PARAMETER: dict[str, Any] = {
    "name": "X-Session-Transport",
    "in": "header",
    "required": False,
    "description": "`cookie`: the refresh token travels only in an HttpOnly cookie scoped to "
    "the refresh route (when SESSION_TRANSPORT offers it; otherwise 400 "
    "transport_not_allowed). Cookie-mode requests must come from an allowed Origin (403 "
    "csrf_rejected). See docs/frontend.md.",
    "schema": {"type": "string", "enum": ["bearer", "cookie"]},
}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema(ref_template=_REF))
    email = schema.get("properties", {}).get("email")
    if email is not None:
        email["format"] = "email"
    return schema


def _event_body() -> type[BaseModel]:
    from app.routes.events import EventBody

    return EventBody


def _generic(name: str, endpoint: Any) -> Operation:
    """A route without an ``OPERATIONS`` entry: its docstring, JSON success, any problem."""
    doc = (getattr(endpoint, "__doc__", None) or name).strip().splitlines()[0]
    return Operation(
        doc,
        name.split(":", 1)[0],
        ok_schema={"type": "object"},
        problems=(*_BODY_ERRORS, 401, 403, 404, 409),
    )


def _endpoints(routes: list[BaseRoute]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for route in routes:
        if isinstance(route, Mount):
            found.update(_endpoints(list(route.routes)))
        elif isinstance(route, Route):
            found[route.name] = route.endpoint
    return found


def all_operations() -> dict[str, Operation]:
    """Every route's typed description: these, and the account lifecycle's own."""
    from app import openapi_lifecycle  # described apart, beside their routes

    return {**OPERATIONS, **openapi_lifecycle.OPERATIONS}


def build_openapi(routes: list[BaseRoute], *, server_url: str = "/") -> dict[str, Any]:
    operations = all_operations()
    paths: dict[str, dict[str, Any]] = {}
    endpoints = _endpoints(routes)
    for path, name, methods in iter_routes(routes):
        op = operations.get(name) or _generic(name, endpoints.get(name))
        for method in sorted(methods):
            paths.setdefault(path, {})[method.lower()] = _operation(name, op, path, method)
    schemas = components()
    for model in (*_BODIES, _event_body()):
        schema = _body_schema(model)
        # Nested models: their refs already point at components (``_REF``), so they move there.
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    from app import openapi_lifecycle

    schemas.update(openapi_lifecycle.SCHEMAS)
    for lifecycle_model in openapi_lifecycle.MODELS:
        schemas[lifecycle_model.__name__] = _body_schema(lifecycle_model)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "supaguard",
            "version": __version__,
            "description": "Auth backend for Supabase. Errors are application/problem+json "
            "with a stable `code` and the `request_id` of the request.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


async def openapi_endpoint(request: Request) -> Response:
    """The document, with ``servers`` relative to where it is served: the path prefix a
    trusted proxy reported (``X-Forwarded-Prefix``), never the client's ``Host``, so a
    forged ``Host`` cannot point a client generated from it elsewhere."""
    server_url = str(request.scope.get("root_path") or "").rstrip("/") or "/"
    return JSONResponse(build_openapi(list(request.app.routes), server_url=server_url))
