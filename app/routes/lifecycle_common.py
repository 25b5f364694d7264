"""Helpers the account-lifecycle routers share."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services import errors
from services.flows import EmailedSecret

if TYPE_CHECKING:
    from app.lifecycle_schemas import EmailedSecretBody
    from app.lifecycle_state import Flows

Endpoint = Callable[[Request], Awaitable[Response]]
# (path under /api/v1/auth, endpoint, route name, methods)
RouteSpec = tuple[str, Endpoint, str, list[str]]


def flows(request: Request) -> Flows:
    found: Flows | None = request.app.state.services.flows
    assert found is not None
    return found


def secret_of(body: EmailedSecretBody) -> EmailedSecret:
    return EmailedSecret(email=body.email, code=body.code, token_hash=body.token_hash)


def accepted() -> Response:
    """The answer of every mail-sending route, whatever the address."""
    return JSONResponse(
        {"status": "sent", "detail": "If the address has an account, a mail is on its way."},
        status_code=202,
    )


def factor_id(request: Request) -> str:
    raw = str(request.path_params["factor_id"])
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise errors.NotFound("No such factor.") from None
