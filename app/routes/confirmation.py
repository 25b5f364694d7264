"""``/api/v1/auth/email/confirm`` and ``/email/confirm/resend``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import transport
from app.body import read_model
from app.lifecycle_schemas import EmailBody, EmailedSecretBody
from app.routes.auth import _client
from app.routes.lifecycle_common import RouteSpec, accepted, flows, secret_of


async def resend(request: Request) -> Response:
    """Mail the address confirmation again"""
    body = await read_model(request, EmailBody)
    await flows(request).confirmation.resend(body.email, body.redirect_to)
    return accepted()


async def confirm(request: Request) -> Response:
    """Confirm the address with the emailed code or link; signs the user in"""
    via = transport.begin(request)
    body = await read_model(request, EmailedSecretBody)
    session = await flows(request).confirmation.confirm(secret_of(body), _client(request))
    return via.respond(via.session_json(session.to_json()))


ROUTES: list[RouteSpec] = [
    ("/email/confirm", confirm, "auth:email_confirm", ["POST"]),
    ("/email/confirm/resend", resend, "auth:email_confirm_resend", ["POST"]),
]
