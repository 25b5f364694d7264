"""``/api/v1/auth``: register, login, refresh, logout, me, sessions."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import transport
from app.authz import AuthContext, auth_context
from app.authz.layers import count_alone, limit_counted, pending_limit
from app.body import read_model
from app.params import path_uuid
from app.schemas import LoginBody, LogoutBody, RegisterBody
from services import errors
from services.auth import Client


def _client(request: Request) -> Client:
    return Client(
        ip=request.client.host if request.client else "",
        user_agent=request.headers.get("user-agent", ""),
    )


async def register(request: Request) -> Response:
    via = transport.begin(request)
    body = await read_model(request, RegisterBody)
    result = await request.app.state.services.auth.register(
        body.email, body.password, body.data, _client(request)
    )
    session = via.session_json(result.session.to_json()) if result.session else None
    flows = request.app.state.services.flows
    if result.session is None and flows is not None:
        # REGISTER_EMAIL_CONFIRM=false: the user confirms through /email/confirm.
        await flows.confirmation.after_registration(body.email)
    return via.respond({"user": result.user, "session": session}, status_code=201)


async def login(request: Request) -> Response:
    ctx = auth_context(request)
    limit = pending_limit(ctx)  # sent with the lockout check: one round trip for both
    try:
        via = transport.begin(request)
        body = await read_model(request, LoginBody)
    except errors.AuthServiceError:
        await count_alone(ctx, limit)
        raise
    session = await ctx.services.auth.login(
        body.email, body.password, _client(request), limit=limit
    )
    limit_counted(ctx, limit)
    return via.respond(via.session_json(session.to_json()))


async def refresh(request: Request) -> Response:
    ctx = auth_context(request)
    limit = pending_limit(ctx)  # sent with the rotation's first step: one round trip
    try:
        via = transport.begin(request)
        token = await via.refresh_token()
    except errors.AuthServiceError:
        await count_alone(ctx, limit)
        raise
    try:
        session = await ctx.services.auth.refresh(token, _client(request), limit=limit)
    except errors.AuthServiceError as exc:
        # The cookie's token is dead (malformed, unknown, revoked, reused): drop it with the
        # answer. A limit or an outage (429, 5xx) says nothing about the token: keep it.
        if 400 <= exc.status < 500 and exc.status != 429:
            exc.headers.update(via.clearing_headers())
        raise
    limit_counted(ctx, limit)
    return via.respond(via.session_json(session.to_json()))


async def logout(request: Request) -> Response:
    via = transport.begin(request)
    body = await read_model(request, LogoutBody, optional=True)
    ctx = auth_context(request)
    assert ctx.token is not None
    await ctx.services.auth.logout(ctx.require_claims(), ctx.token, body.scope)
    if body.scope != "others":
        via.clear()
    return via.respond(None, status_code=204)


def me_body(ctx: AuthContext) -> bytes:
    """Who the token's user is: the encoded ``/me`` answer, computed once per token."""
    claims = ctx.require_claims()
    body: bytes | None = claims.memo.get("me")
    if body is None:
        body = _compact_json(
            {
                "id": claims.sub,
                "email": claims.email,
                "roles": claims.roles,
                "app_metadata": claims.app_metadata,
                "user_metadata": claims.user_metadata,
                "session_id": claims.session_id,
                "aal": claims.aal,
            }
        )
        claims.memo["me"] = body
    return body


def _compact_json(content: object) -> bytes:
    """The bytes ``JSONResponse`` would send."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


async def list_sessions(request: Request) -> Response:
    ctx = auth_context(request)
    claims = ctx.require_claims()
    sessions = await ctx.services.auth.list_sessions(claims)
    return JSONResponse({"sessions": [s.to_json(current_id=claims.session_id) for s in sessions]})


async def delete_session(request: Request) -> Response:
    ctx = auth_context(request)
    session_id = path_uuid(request.path_params, "session_id", what="session")
    await ctx.services.auth.revoke_session(ctx.require_claims(), session_id)
    return Response(status_code=204)
