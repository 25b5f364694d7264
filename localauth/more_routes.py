"""HTTP handlers for the email flows, /verify, MFA, OAuth client admin, SSO, identity
linking and the local mailbox. Registered by ``routes.routes()``; the services live on
``app.state.extras`` (built by ``build_extras``).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from localauth import fake_oauth
from localauth.core import Core
from localauth.email_flows import EmailFlows
from localauth.errors import ApiError
from localauth.mailbox import Mailbox
from localauth.mfa import Mfa
from localauth.oauth_admin import OAuthClients
from localauth.oidc import authorize_refusal
from localauth.params import read_body
from localauth.routes import Context, Handler, endpoint
from localauth.verify import Verifier

__all__ = ["Extras", "build_extras", "extra_table", "mailbox_routes"]


@dataclass(frozen=True)
class Extras:
    flows: EmailFlows
    verifier: Verifier
    mfa: Mfa
    oauth: OAuthClients
    mailbox: Mailbox


def build_extras(core: Core) -> Extras:
    flows = EmailFlows(core)
    return Extras(
        flows=flows,
        verifier=Verifier(flows),
        mfa=Mfa(core),
        oauth=OAuthClients(core),
        mailbox=flows.mailbox,
    )


def _parts(request: Request) -> tuple[Context, Extras]:
    return request.app.state.ctx, request.app.state.extras


def _aud(request: Request, ctx: Context) -> str:
    return request.headers.get("x-jwt-aud") or ctx.settings.jwt_aud


def _auth(request: Request) -> str | None:
    return request.headers.get("authorization")


def _redirect_to(request: Request) -> str:
    return request.query_params.get("redirect_to", "")


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


# -- email flows ---------------------------------------------------------------------------


@endpoint
async def otp(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    return JSONResponse(
        await ctx.run(ex.flows.otp, body, _aud(request, ctx), _redirect_to(request))
    )


@endpoint
async def recover(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    return JSONResponse(
        await ctx.run(ex.flows.recover, body, _aud(request, ctx), _redirect_to(request))
    )


@endpoint
async def resend(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    return JSONResponse(
        await ctx.run(ex.flows.resend, body, _aud(request, ctx), _redirect_to(request))
    )


@endpoint
async def reauthenticate(request: Request) -> Response:
    ctx, ex = _parts(request)
    return JSONResponse(await ctx.run(ex.flows.reauthenticate, _auth(request)))


@endpoint
async def invite(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    return JSONResponse(
        await ctx.run(
            ex.flows.invite, _auth(request), body, _aud(request, ctx), _redirect_to(request)
        )
    )


@endpoint
async def verify(request: Request) -> Response:
    ctx, ex = _parts(request)
    if request.method == "GET":
        target = await ctx.run(ex.verifier.verify_get, dict(request.query_params))
        return RedirectResponse(target, status_code=303)
    body = await read_body(request)
    return JSONResponse(await ctx.run(ex.verifier.verify_post, body, _aud(request, ctx)))


@endpoint
async def sso(request: Request) -> Response:
    await read_body(request)
    raise ApiError(404, "saml_provider_disabled", "SAML 2.0 is disabled")


@endpoint
async def identities(request: Request) -> Response:
    ctx, _ = _parts(request)

    def check() -> None:
        with ctx.core.db.read() as conn:
            ctx.core.authenticate(conn, _auth(request))

    await ctx.run(check)
    raise ApiError(404, "manual_linking_disabled", "Manual linking is disabled")


@endpoint
async def authorize(request: Request) -> Response:
    ctx, _ = _parts(request)
    provider = request.query_params.get("provider", "")
    if provider == fake_oauth.PROVIDER and ctx.settings.external_fake_enabled:
        return await fake_oauth.authorize(request, ctx)
    raise authorize_refusal(provider)


# -- MFA -----------------------------------------------------------------------------------


@endpoint
async def enroll(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    return JSONResponse(await ctx.run(ex.mfa.enroll, _auth(request), body))


@endpoint
async def challenge(request: Request) -> Response:
    body = await read_body(request, allow_empty=True)
    ctx, ex = _parts(request)
    fid = request.path_params["factor_id"]
    return JSONResponse(await ctx.run(ex.mfa.challenge, _auth(request), fid, body, _ip(request)))


@endpoint
async def verify_factor(request: Request) -> Response:
    body = await read_body(request)
    ctx, ex = _parts(request)
    fid = request.path_params["factor_id"]
    return JSONResponse(await ctx.run(ex.mfa.verify, _auth(request), fid, body, _ip(request)))


@endpoint
async def unenroll(request: Request) -> Response:
    ctx, ex = _parts(request)
    fid = request.path_params["factor_id"]
    return JSONResponse(await ctx.run(ex.mfa.unenroll, _auth(request), fid))


@endpoint
async def admin_factors(request: Request) -> Response:
    ctx, ex = _parts(request)
    uid = request.path_params["user_id"]
    return JSONResponse(await ctx.run(ex.mfa.admin_list, _auth(request), uid))


@endpoint
async def admin_delete_factor(request: Request) -> Response:
    ctx, ex = _parts(request)
    uid, fid = request.path_params["user_id"], request.path_params["factor_id"]
    return JSONResponse(await ctx.run(ex.mfa.admin_delete, _auth(request), uid, fid))


# -- OAuth 2.1 server clients --------------------------------------------------------------


@endpoint
async def oauth_clients(request: Request) -> Response:
    ctx, ex = _parts(request)
    if request.method == "GET":
        clients = await ctx.run(ex.oauth.list, _auth(request))
        return JSONResponse({"clients": clients})
    body = await read_body(request)
    return JSONResponse(await ctx.run(ex.oauth.create, _auth(request), body), status_code=201)


@endpoint
async def oauth_client(request: Request) -> Response:
    ctx, ex = _parts(request)
    cid = request.path_params["client_id"]
    if request.method == "GET":
        return JSONResponse(await ctx.run(ex.oauth.get, _auth(request), cid))
    if request.method == "DELETE":
        await ctx.run(ex.oauth.delete, _auth(request), cid)
        return Response(status_code=204)
    body = await read_body(request)
    return JSONResponse(await ctx.run(ex.oauth.update, _auth(request), cid, body))


@endpoint
async def oauth_regenerate(request: Request) -> Response:
    ctx, ex = _parts(request)
    cid = request.path_params["client_id"]
    return JSONResponse(await ctx.run(ex.oauth.regenerate_secret, _auth(request), cid))


# -- the mailbox ---------------------------------------------------------------------------


def _mail_id(request: Request) -> int:
    raw = request.path_params["mail_id"]
    if not raw.isdigit():
        raise ApiError(404, "not_found", "No such message")
    return int(raw)


@endpoint
async def mailbox_messages(request: Request) -> Response:
    ctx, ex = _parts(request)
    to = request.query_params.get("to") or None

    def run() -> Response:
        if request.method == "GET":
            with ctx.core.db.read() as conn:
                return JSONResponse({"messages": ex.mailbox.list(conn, to)})
        with ctx.core.db.write() as conn:
            return JSONResponse({"deleted": ex.mailbox.delete(conn, to=to)})

    return await ctx.run(run)


@endpoint
async def mailbox_message(request: Request) -> Response:
    ctx, ex = _parts(request)
    mail_id = _mail_id(request)

    def run() -> Response:
        if request.method == "GET":
            with ctx.core.db.read() as conn:
                mail = ex.mailbox.get(conn, mail_id)
        else:
            with ctx.core.db.write() as conn:
                mail = ex.mailbox.get(conn, mail_id)
                ex.mailbox.delete(conn, mail_id=mail_id)
        if mail is None:
            raise ApiError(404, "not_found", "No such message")
        return JSONResponse(mail)

    return await ctx.run(run)


def extra_table() -> list[tuple[str, Handler, list[str]]]:
    return [
        ("/otp", otp, ["POST"]),
        ("/magiclink", otp, ["POST"]),
        ("/recover", recover, ["POST"]),
        ("/resend", resend, ["POST"]),
        ("/reauthenticate", reauthenticate, ["GET"]),
        ("/invite", invite, ["POST"]),
        ("/verify", verify, ["GET", "POST"]),
        ("/sso", sso, ["POST"]),
        ("/authorize", authorize, ["GET"]),
        ("/fake-oauth/consent", fake_oauth.consent, ["GET", "POST"]),
        ("/user/identities/authorize", identities, ["GET"]),
        ("/user/identities/{identity_id}", identities, ["DELETE"]),
        ("/factors", enroll, ["POST"]),
        ("/factors/{factor_id}/challenge", challenge, ["POST"]),
        ("/factors/{factor_id}/verify", verify_factor, ["POST"]),
        ("/factors/{factor_id}", unenroll, ["DELETE"]),
        ("/admin/users/{user_id}/factors", admin_factors, ["GET"]),
        ("/admin/users/{user_id}/factors/{factor_id}", admin_delete_factor, ["DELETE"]),
        ("/admin/oauth/clients", oauth_clients, ["GET", "POST"]),
        ("/admin/oauth/clients/{client_id}", oauth_client, ["GET", "PUT", "DELETE"]),
        ("/admin/oauth/clients/{client_id}/regenerate_secret", oauth_regenerate, ["POST"]),
    ]


def mailbox_routes() -> list[BaseRoute]:
    return [
        Route("/mailbox/messages", mailbox_messages, methods=["GET", "DELETE"]),
        Route("/mailbox/messages/{mail_id}", mailbox_message, methods=["GET", "DELETE"]),
    ]
