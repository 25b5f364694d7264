"""``/api/v1/auth/otp`` and ``/otp/verify``: passwordless sign-in."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import transport
from app.body import read_model
from app.lifecycle_schemas import EmailBody, EmailedSecretBody
from app.routes.auth import _client
from app.routes.lifecycle_common import RouteSpec, accepted, flows, secret_of


async def send(request: Request) -> Response:
    """Mail a sign-in code and magic link to an existing account"""
    body = await read_model(request, EmailBody)
    await flows(request).otp.send(body.email, body.redirect_to)
    return accepted()


async def verify(request: Request) -> Response:
    """Sign in with the emailed code or the magic link's token hash"""
    via = transport.begin(request)
    body = await read_model(request, EmailedSecretBody)
    session = await flows(request).otp.verify(secret_of(body), _client(request))
    return via.respond(via.session_json(session.to_json()))


ROUTES: list[RouteSpec] = [
    ("/otp", send, "auth:otp", ["POST"]),
    ("/otp/verify", verify, "auth:otp_verify", ["POST"]),
]
