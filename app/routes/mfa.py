"""``/api/v1/auth/mfa/factors``: TOTP enrolment, challenge, verification, unenrolment."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import transport
from app.authz import auth_context
from app.body import read_model
from app.lifecycle_schemas import MfaEnrollBody, MfaVerifyBody
from app.routes.lifecycle_common import RouteSpec, factor_id, flows


async def factors(request: Request) -> Response:
    """The caller's factors"""
    ctx = auth_context(request)
    assert ctx.token is not None
    return JSONResponse({"factors": await flows(request).mfa.factors(ctx.token)})


async def enroll(request: Request) -> Response:
    """Enrol a TOTP factor: its secret, otpauth URI and QR code"""
    ctx = auth_context(request)
    assert ctx.token is not None
    body = await read_model(request, MfaEnrollBody, optional=True)
    factor = await flows(request).mfa.enroll(ctx.token, body.friendly_name, body.issuer)
    return JSONResponse(factor, status_code=201)


async def challenge(request: Request) -> Response:
    """Start a challenge of a factor"""
    ctx = auth_context(request)
    assert ctx.token is not None
    found = await flows(request).mfa.challenge(ctx.token, factor_id(request))
    return JSONResponse(found, status_code=201)


async def verify(request: Request) -> Response:
    """Answer a challenge with the authenticator code; the session becomes aal2"""
    via = transport.begin(request)
    body = await read_model(request, MfaVerifyBody)
    ctx = auth_context(request)
    assert ctx.token is not None
    session = await flows(request).mfa.verify(
        ctx.require_claims(),
        ctx.token,
        factor_id(request),
        body.challenge_id,
        body.code,
        ctx.client_ip,
    )
    return via.respond(via.session_json(session.to_json()))


async def unenroll(request: Request) -> Response:
    """Remove a factor (a verified one needs aal2)"""
    ctx = auth_context(request)
    assert ctx.token is not None
    await flows(request).mfa.unenroll(ctx.require_claims(), ctx.token, factor_id(request))
    return Response(status_code=204)


ROUTES: list[RouteSpec] = [
    ("/mfa/factors", factors, "auth:mfa_factors", ["GET"]),
    ("/mfa/factors", enroll, "auth:mfa_enroll", ["POST"]),
    ("/mfa/factors/{factor_id}/challenge", challenge, "auth:mfa_challenge", ["POST"]),
    ("/mfa/factors/{factor_id}/verify", verify, "auth:mfa_verify", ["POST"]),
    ("/mfa/factors/{factor_id}", unenroll, "auth:mfa_unenroll", ["DELETE"]),
]
