"""``/api/v1/auth/oauth/{provider}/authorize`` and ``/oauth/callback``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import transport
from app.body import read_model
from app.lifecycle_schemas import OAuthCallbackBody
from app.routes.auth import _client
from app.routes.lifecycle_common import RouteSpec, flows
from services import errors


async def authorize(request: Request) -> Response:
    """The provider sign-in URL to send the browser to, and the flow_id to keep"""
    redirect_to = request.query_params.get("redirect_to") or None
    if redirect_to is not None and len(redirect_to) > 2048:
        raise errors.ValidationFailed("redirect_to is too long.")
    found = await flows(request).oauth.authorize(request.path_params["provider"], redirect_to)
    return JSONResponse(
        {"url": found.url, "flow_id": found.flow_id, "expires_in": found.expires_in}
    )


async def callback(request: Request) -> Response:
    """Exchange the code the provider redirect brought back for a session"""
    via = transport.begin(request)
    body = await read_model(request, OAuthCallbackBody)
    session = await flows(request).oauth.callback(body.flow_id, body.code, _client(request))
    return via.respond(via.session_json(session.to_json()))


ROUTES: list[RouteSpec] = [
    ("/oauth/{provider}/authorize", authorize, "auth:oauth_authorize", ["GET"]),
    ("/oauth/callback", callback, "auth:oauth_callback", ["POST"]),
]
