"""The caller's own account: reauthenticate, password, email, profile, deletion."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import transport
from app.authz import auth_context
from app.body import read_model
from app.lifecycle_schemas import (
    DeleteAccountBody,
    EmailChangeBody,
    EmailedSecretBody,
    PasswordChangeBody,
    ProfileBody,
    Reauthentication,
    check_merged_profile,
)
from app.routes.auth import _client
from app.routes.lifecycle_common import RouteSpec, flows, secret_of
from services import errors
from services.account import Proof


def _proof(body: Reauthentication) -> Proof:
    return Proof(current_password=body.current_password, nonce=body.nonce)


async def reauthenticate(request: Request) -> Response:
    """Mail a one-time nonce that proves a fresh sign-in"""
    ctx = auth_context(request)
    assert ctx.token is not None
    await flows(request).account.reauthenticate(ctx.token)
    return JSONResponse({"status": "sent"}, status_code=202)


async def change_password(request: Request) -> Response:
    """Change the password (current password or nonce); ends every other session"""
    body = await read_model(request, PasswordChangeBody)
    ctx = auth_context(request)
    assert ctx.token is not None
    user = await flows(request).account.change_password(
        ctx.require_claims(), ctx.token, body.password, _proof(body), ctx.client_ip
    )
    return JSONResponse({"user": user})


async def change_email(request: Request) -> Response:
    """Start an email change: both addresses get a confirmation"""
    body = await read_model(request, EmailChangeBody)
    ctx = auth_context(request)
    assert ctx.token is not None
    user = await flows(request).account.change_email(
        ctx.token, ctx.require_claims(), body.email, body.redirect_to
    )
    return JSONResponse({"status": "pending", "user": user}, status_code=202)


async def confirm_email_change(request: Request) -> Response:
    """Confirm one half of an email change with its code or link"""
    via = transport.begin(request)
    body = await read_model(request, EmailedSecretBody)
    result = await flows(request).account.confirm_email_change(secret_of(body), _client(request))
    if result.session is None:
        return via.respond({"status": "pending", "session": None})
    return via.respond({"status": "changed", "session": via.session_json(result.session.to_json())})


async def update_profile(request: Request) -> Response:
    """Merge fields into user_metadata"""
    body = await read_model(request, ProfileBody)
    ctx = auth_context(request)
    assert ctx.token is not None
    try:
        check_merged_profile(ctx.require_claims().user_metadata, body.data)
    except ValueError as exc:
        raise errors.ValidationFailed(
            str(exc), errors=[{"field": "data", "message": str(exc), "type": "value_error"}]
        ) from None
    user = await flows(request).account.update_profile(ctx.token, body.data)
    return JSONResponse({"user": user})


async def delete_account(request: Request) -> Response:
    """Delete the account (current password or nonce); ends every session"""
    body = await read_model(request, DeleteAccountBody)
    ctx = auth_context(request)
    assert ctx.token is not None
    await flows(request).account.delete(
        ctx.require_claims(), ctx.token, _proof(body), ctx.client_ip
    )
    return Response(status_code=204)


ROUTES: list[RouteSpec] = [
    ("/reauthenticate", reauthenticate, "auth:reauthenticate", ["POST"]),
    ("/password/change", change_password, "auth:password_change", ["POST"]),
    ("/email/change", change_email, "auth:email_change", ["POST"]),
    ("/email/change/confirm", confirm_email_change, "auth:email_change_confirm", ["POST"]),
    ("/profile", update_profile, "auth:profile", ["PATCH"]),
    ("/account", delete_account, "auth:account_delete", ["DELETE"]),
]
