"""Each authorization layer's allow and deny paths, and a custom layer composed in order."""

from __future__ import annotations

import ipaddress
import time
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.authz import AuthContext, AuthzMiddleware, Layer, auth_context
from app.authz.layers import (
    AccountStatus,
    Bearer,
    IpAllowList,
    NotBefore,
    Owner,
    RequireAal,
    RequireRole,
    RequireScopes,
    ServiceCredentials,
    SessionAlive,
)
from services import errors
from services.sessions import UserState
from services.tokens import Claims

pytestmark = pytest.mark.anyio


def claims(
    *, sub: str = "u1", roles: list[str] | None = None, aal: str = "aal1", iat: int = 1000
) -> Claims:
    raw: dict[str, Any] = {"app_metadata": {"roles": roles or [], "scopes": ["read", "write"]}}
    return Claims(
        sub=sub, session_id="s1", exp=iat + 3600, iat=iat, role="authenticated", aal=aal,
        email="a@example.com", raw=raw,
    )  # fmt: skip


class FakeSessions:
    def __init__(
        self, alive: bool = True, banned: bool = False, not_before: float = 0, aal: str = "aal2"
    ) -> None:
        self.answer = (alive, UserState(not_before=not_before, banned=banned))
        self.lookups = 0
        self.aal = aal

    async def assurance(self, sid: str, uid: str) -> str:
        return self.aal

    def cached(self, sid: str, uid: str) -> tuple[bool, UserState] | None:
        return None

    async def lookup(self, sid: str, uid: str) -> tuple[bool, UserState]:
        self.lookups += 1
        return self.answer


def context(
    *,
    headers: dict[str, str] | None = None,
    client_ip: str = "203.0.113.7",
    path_params: dict[str, str] | None = None,
    token_claims: Claims | None = None,
    sessions: FakeSessions | None = None,
    **settings: Any,
) -> AuthContext:
    defaults: dict[str, Any] = {
        "admin_require_aal2": False,
        "admin_ip_allowlist": [],
        "service_credentials": {},
    }
    services = SimpleNamespace(
        settings=SimpleNamespace(**{**defaults, **settings}),
        sessions=sessions or FakeSessions(),
        credential_guard=None,
        principals=None,
    )
    scope = {
        "type": "http",
        "path_params": path_params or {},
        "headers": Headers(headers or {}).raw,
    }
    return AuthContext(
        scope=scope,
        services=cast(Any, services),
        client_ip=client_ip,
        claims=token_claims,
    )


async def refused(layer: Layer, ctx: AuthContext) -> errors.AuthServiceError:
    with pytest.raises(errors.AuthServiceError) as caught:
        await layer.check(ctx)
    return caught.value


async def test_bearer_takes_the_token_and_refuses_other_schemes() -> None:
    """Bearer keeps the token; a missing or Basic header is 401 missing_token."""
    ctx = context(headers={"Authorization": "Bearer abc.def.ghi"})
    await Bearer().check(ctx)
    assert ctx.token == "abc.def.ghi"
    error = await refused(Bearer(), context(headers={"Authorization": "Basic eDp5"}))
    assert (error.status, error.code) == (401, "missing_token")


async def test_session_layers_share_one_lookup_and_refuse_each_state() -> None:
    """Account, session and not-before layers: one store lookup, each refusing its own case."""
    sessions = FakeSessions()
    ctx = context(token_claims=claims(iat=1000), sessions=sessions)
    for layer in (AccountStatus(), SessionAlive(), NotBefore()):
        await layer.check(ctx)
    assert sessions.lookups == 1

    banned = context(token_claims=claims(), sessions=FakeSessions(banned=True))
    assert (await refused(AccountStatus(), banned)).code == "user_banned"
    gone = context(token_claims=claims(), sessions=FakeSessions(alive=False))
    assert (await refused(SessionAlive(), gone)).code == "session_revoked"
    stale = context(token_claims=claims(iat=1000), sessions=FakeSessions(not_before=1001))
    error = await refused(NotBefore(), stale)
    assert (error.status, error.code) == (401, "session_revoked")


async def test_require_role() -> None:
    """An admin passes RequireRole(admin); a plain user gets 403 insufficient_role."""
    layer = RequireRole(frozenset({"admin"}))
    await layer.check(context(token_claims=claims(roles=["admin"])))
    error = await refused(layer, context(token_claims=claims(roles=["editor"])))
    assert (error.status, error.code) == (403, "insufficient_role")


async def test_require_scopes() -> None:
    """Held scopes pass; a missing one is 403 insufficient_scope naming it."""
    await RequireScopes(frozenset({"read"})).check(context(token_claims=claims()))
    error = await refused(
        RequireScopes(frozenset({"read", "admin"})), context(token_claims=claims())
    )
    assert (error.status, error.code) == (403, "insufficient_scope")
    assert "admin" in error.detail


async def test_owner_or_admin() -> None:
    """The owner and an admin pass; anyone else gets 403 not_owner."""
    layer = Owner("user_id")
    await layer.check(context(token_claims=claims(sub="u1"), path_params={"user_id": "u1"}))
    admin = claims(sub="boss", roles=["admin"])
    await layer.check(context(token_claims=admin, path_params={"user_id": "u1"}))
    error = await refused(
        layer, context(token_claims=claims(sub="u2"), path_params={"user_id": "u1"})
    )
    assert (error.status, error.code) == (403, "not_owner")


async def test_require_aal_always_and_by_setting() -> None:
    """aal2 passes; aal1 gets 403 insufficient_aal, unless the gating setting is off."""
    await RequireAal("aal2").check(context(token_claims=claims(aal="aal2")))
    error = await refused(RequireAal("aal2"), context(token_claims=claims(aal="aal1")))
    assert (error.status, error.code) == (403, "insufficient_aal")
    gated = RequireAal("aal2", setting="admin_require_aal2")
    await gated.check(context(token_claims=claims(aal="aal1"), admin_require_aal2=False))
    ctx = context(token_claims=claims(aal="aal1"), admin_require_aal2=True)
    assert (await refused(gated, ctx)).code == "insufficient_aal"


async def test_require_aal_refuses_an_aal2_token_whose_session_was_lowered() -> None:
    """A token still claiming aal2 is refused once its session was lowered (factor removed)."""
    lowered = context(token_claims=claims(aal="aal2"), sessions=FakeSessions(aal="aal1"))
    error = await refused(RequireAal("aal2"), lowered)
    assert (error.status, error.code) == (403, "insufficient_aal")


async def test_ip_allow_list() -> None:
    """Inside a listed network passes, outside (or unparseable) is 403; an empty list allows."""
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    layer = IpAllowList("admin_ip_allowlist")
    await layer.check(context(client_ip="10.1.2.3", admin_ip_allowlist=nets))
    await layer.check(context(client_ip="2001:db8::1", admin_ip_allowlist=nets))
    await layer.check(context(client_ip="198.51.100.1"))
    for ip in ("198.51.100.1", "not-an-ip"):
        error = await refused(layer, context(client_ip=ip, admin_ip_allowlist=nets))
        assert (error.status, error.code) == (403, "ip_not_allowed")


async def test_service_credentials() -> None:
    """The right id and secret pass and name the service; anything else is 401."""
    creds = {"billing": SecretStr("s3cret-value"), "mail": SecretStr("other")}
    good = context(
        headers={"X-Service-ID": "billing", "X-Service-Secret": "s3cret-value"},
        service_credentials=creds,
    )
    await ServiceCredentials().check(good)
    assert good.service_id == "billing"
    for headers in (
        {"X-Service-ID": "billing", "X-Service-Secret": "other"},
        {"X-Service-ID": "nobody", "X-Service-Secret": "s3cret-value"},
        {"X-Service-ID": "billing"},
        {},
    ):
        ctx = context(headers=headers, service_credentials=creds)
        error = await refused(ServiceCredentials(), ctx)
        assert (error.status, error.code) == (401, "invalid_service_credentials")
        assert ctx.service_id is None


async def test_custom_layer_runs_in_policy_order() -> None:
    """A new layer is a few lines; the middleware runs a policy's layers in order and stops
    at the first refusal."""
    calls: list[str] = []

    class Record:
        def __init__(self, name: str, *, refuse: bool = False) -> None:
            self.name, self.refuse = name, refuse

        async def check(self, ctx: AuthContext) -> None:
            calls.append(self.name)
            ctx.extra.setdefault("seen", []).append(self.name)
            if self.refuse:
                raise errors.Forbidden("closed on Sundays")

    async def endpoint(request: Request) -> Response:
        return JSONResponse({"seen": auth_context(request).extra["seen"]})

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.AuthServiceError)
        return JSONResponse({"code": exc.code}, status_code=exc.status)

    def route(path: str, *layers: Layer) -> Route:
        return Route(path, endpoint, middleware=[Middleware(AuthzMiddleware, layers=layers)])

    app = Starlette(
        routes=[
            route("/open", Record("first"), Record("second"), Record("third")),
            route("/shut", Record("first"), Record("gate", refuse=True), Record("never")),
        ],
        exception_handlers={errors.AuthServiceError: on_error},
    )
    app.state.services = SimpleNamespace()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        opened = await client.get("/open")
        assert opened.json() == {"seen": ["first", "second", "third"]}
        calls.clear()
        shut = await client.get("/shut")
    assert (shut.status_code, shut.json()["code"]) == (403, "forbidden")
    assert calls == ["first", "gate"]


def test_claims_scopes_and_roles_ignore_junk() -> None:
    """Roles and scopes read only strings, from app_metadata or a space-separated scope."""
    raw = {"app_metadata": {"roles": ["admin", 7, None]}, "scope": "read write"}
    token = Claims("u", "s", int(time.time()) + 60, 0, "authenticated", "aal1", "", raw)
    assert token.roles == ["admin"]
    assert token.scopes == ["read", "write"]
