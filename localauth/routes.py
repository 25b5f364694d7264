"""HTTP handlers. Thin: parse the request, run the blocking flow in a worker thread, render."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localauth.admin_api import AdminApi
from localauth.config import Settings
from localauth.core import Core
from localauth.errors import ApiError, error_response, unexpected_failure
from localauth.keys import KeyRing
from localauth.oidc import id_token_refusal
from localauth.params import read_body
from localauth.tokens import jwks
from localauth.user_api import UserApi

__all__ = ["VERSION", "Context", "Handler", "endpoint", "routes"]

VERSION = "v2.196.0-localauth"
logger = logging.getLogger("localauth")

P = ParamSpec("P")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Context:
    settings: Settings
    keyring: KeyRing
    core: Core
    users: UserApi
    admin: AdminApi
    limiter: anyio.CapacityLimiter

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.limiter
        )


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _aud(request: Request) -> str:
    return request.headers.get("x-jwt-aud") or _ctx(request).settings.jwt_aud


def _auth(request: Request) -> str | None:
    return request.headers.get("authorization")


def endpoint(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as err:
            return error_response(request, err)
        except Exception:
            logger.exception("unexpected failure on %s %s", request.method, request.url.path)
            return error_response(request, unexpected_failure())

    return wrapper


@endpoint
async def signup(request: Request) -> Response:
    body = await read_body(request)
    ctx = _ctx(request)
    redirect_to = request.query_params.get("redirect_to", "")
    return JSONResponse(await ctx.run(ctx.users.signup, body, _aud(request), redirect_to))


@endpoint
async def token(request: Request) -> Response:
    grant = request.query_params.get("grant_type", "")
    ctx = _ctx(request)
    if grant == "password":
        body = await read_body(request)
        return JSONResponse(await ctx.run(ctx.users.password_grant, body, _aud(request)))
    if grant == "refresh_token":
        body = await read_body(request)
        return JSONResponse(await ctx.run(ctx.users.refresh_grant, body))
    if grant == "pkce":
        body = await read_body(request)
        return JSONResponse(await ctx.run(ctx.users.verifier.pkce_grant, body))
    if grant == "id_token":
        raise id_token_refusal(await read_body(request))
    raise ApiError(400, "invalid_credentials", "unsupported_grant_type")


@endpoint
async def get_user(request: Request) -> Response:
    ctx = _ctx(request)
    return JSONResponse(await ctx.run(ctx.users.get_user, _auth(request), _aud(request)))


@endpoint
async def put_user(request: Request) -> Response:
    body = await read_body(request)
    ctx = _ctx(request)
    redirect_to = request.query_params.get("redirect_to", "")
    return JSONResponse(await ctx.run(ctx.users.update_user, _auth(request), body, redirect_to))


@endpoint
async def logout(request: Request) -> Response:
    ctx = _ctx(request)
    scope = request.query_params.get("scope", "")
    await ctx.run(ctx.users.logout, _auth(request), scope)
    return Response(status_code=204)


@endpoint
async def admin_create_user(request: Request) -> Response:
    body = await read_body(request)
    ctx = _ctx(request)
    return JSONResponse(await ctx.run(ctx.admin.create_user, _auth(request), body, _aud(request)))


@endpoint
async def admin_list_users(request: Request) -> Response:
    ctx = _ctx(request)
    q = request.query_params
    users, total, page, per_page = await ctx.run(
        ctx.admin.list_users,
        _auth(request),
        _aud(request),
        q.get("page", ""),
        q.get("per_page", ""),
        q.get("filter", ""),
    )
    last = max((total + per_page - 1) // per_page, 1)
    links = []
    if page < last:
        links.append(f'</admin/users?page={page + 1}&per_page={per_page}>; rel="next"')
    links.append(f'</admin/users?page={last}&per_page={per_page}>; rel="last"')
    headers = {"X-Total-Count": str(total), "Link": ", ".join(links)}
    return JSONResponse({"users": users, "aud": _aud(request)}, headers=headers)


@endpoint
async def admin_get_user(request: Request) -> Response:
    ctx = _ctx(request)
    uid = request.path_params["user_id"]
    return JSONResponse(await ctx.run(ctx.admin.get_user, _auth(request), uid))


@endpoint
async def admin_put_user(request: Request) -> Response:
    body = await read_body(request)
    ctx = _ctx(request)
    uid = request.path_params["user_id"]
    return JSONResponse(await ctx.run(ctx.admin.update_user, _auth(request), uid, body))


@endpoint
async def admin_delete_user(request: Request) -> Response:
    body = await read_body(request, allow_empty=True)
    ctx = _ctx(request)
    uid = request.path_params["user_id"]
    await ctx.run(ctx.admin.delete_user, _auth(request), uid, body)
    return JSONResponse({})


@endpoint
async def admin_generate_link(request: Request) -> Response:
    body = await read_body(request)
    ctx = _ctx(request)
    redirect = request.query_params.get("redirect_to", "")
    return JSONResponse(
        await ctx.run(ctx.admin.generate_link, _auth(request), body, _aud(request), redirect)
    )


@endpoint
async def health(request: Request) -> Response:
    return JSONResponse(
        {
            "version": VERSION,
            "name": "GoTrue",
            "description": "GoTrue is a user registration and authentication API",
        }
    )


_EXTERNAL_PROVIDERS = (
    "apple",
    "azure",
    "bitbucket",
    "discord",
    "facebook",
    "snapchat",
    "figma",
    "fly",
    "github",
    "gitlab",
    "google",
    "keycloak",
    "kakao",
    "linkedin",
    "linkedin_oidc",
    "notion",
    "spotify",
    "slack",
    "slack_oidc",
    "workos",
    "twitch",
    "twitter",
    "zoom",
)


@endpoint
async def settings(request: Request) -> Response:
    s = _ctx(request).settings
    external: dict[str, bool] = {"anonymous_users": s.external_anonymous_users_enabled}
    external.update(dict.fromkeys(_EXTERNAL_PROVIDERS, False))
    external.update({"email": s.external_email_enabled, "phone": s.external_phone_enabled})
    return JSONResponse(
        {
            "external": external,
            "disable_signup": s.disable_signup,
            "mailer_autoconfirm": s.mailer_autoconfirm,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
            "saml_private_key_next_configured": False,
            "passkeys_enabled": False,
        }
    )


@endpoint
async def jwks_json(request: Request) -> Response:
    ctx = _ctx(request)
    return JSONResponse(
        jwks(ctx.settings, ctx.keyring.current),
        headers={"Cache-Control": "public, max-age=600"},
    )


def routes(extra: Sequence[tuple[str, Handler, list[str]]] = ()) -> list[BaseRoute]:
    table: list[tuple[str, Handler, list[str]]] = [
        ("/signup", signup, ["POST"]),
        ("/token", token, ["POST"]),
        ("/user", get_user, ["GET"]),
        ("/user", put_user, ["PUT"]),
        ("/logout", logout, ["POST"]),
        ("/admin/users", admin_create_user, ["POST"]),
        ("/admin/users", admin_list_users, ["GET"]),
        ("/admin/users/{user_id}", admin_get_user, ["GET"]),
        ("/admin/users/{user_id}", admin_put_user, ["PUT"]),
        ("/admin/users/{user_id}", admin_delete_user, ["DELETE"]),
        ("/admin/generate_link", admin_generate_link, ["POST"]),
        ("/health", health, ["GET"]),
        ("/settings", settings, ["GET"]),
        ("/.well-known/jwks.json", jwks_json, ["GET"]),
        *extra,
    ]
    out: list[BaseRoute] = []
    for prefix in ("", "/auth/v1"):
        for path, handler, methods in table:
            out.append(Route(prefix + path, handler, methods=methods))
    return out
