"""``/api/v1/auth/password/recover`` and ``/password/reset``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import transport
from app.body import read_model
from app.lifecycle_schemas import EmailBody, PasswordResetBody
from app.routes.auth import _client
from app.routes.lifecycle_common import RouteSpec, accepted, flows, secret_of


async def recover(request: Request) -> Response:
    """Mail a password recovery code and link"""
    body = await read_model(request, EmailBody)
    await flows(request).recovery.request(body.email, body.redirect_to)
    return accepted()


async def reset(request: Request) -> Response:
    """Set a new password with the emailed code; ends every other session"""
    via = transport.begin(request)
    body = await read_model(request, PasswordResetBody)
    session = await flows(request).recovery.reset(secret_of(body), body.password, _client(request))
    return via.respond(via.session_json(session.to_json()))


ROUTES: list[RouteSpec] = [
    ("/password/recover", recover, "auth:password_recover", ["POST"]),
    ("/password/reset", reset, "auth:password_reset", ["POST"]),
]
