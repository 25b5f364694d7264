"""The built-in layers. 401 answers "who are you?", 403 "may you?", 429 "not now"."""

from __future__ import annotations

from dataclasses import dataclass

from app.authz.base import AuthContext
from services import errors


class Bearer:
    """Authentication: an ``Authorization: Bearer`` token must be present."""

    async def check(self, ctx: AuthContext) -> None:
        value = ctx.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.MissingToken(headers={"WWW-Authenticate": 'Bearer realm="api"'})
        ctx.token = token.strip()


class VerifyToken:
    """The token's signature and claims check out locally (JWKS or the HS256 secret)."""

    async def check(self, ctx: AuthContext) -> None:
        if ctx.token is None:
            raise errors.MissingToken()
        try:
            ctx.claims = await ctx.services.verifier.verify(ctx.token)
        except errors.Unauthenticated as exc:
            exc.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
            raise


class SessionAlive:
    """The token's session is alive, its user not banned nor logged out everywhere since
    it was issued (session, not-before and account status in one cached check)."""

    async def check(self, ctx: AuthContext) -> None:
        claims = ctx.require_claims()
        await ctx.services.sessions.check(claims.session_id, claims.sub, claims.iat)


@dataclass(frozen=True)
class RequireRole:
    """``app_metadata.roles`` holds at least one of ``roles``."""

    roles: frozenset[str]

    async def check(self, ctx: AuthContext) -> None:
        if not self.roles.intersection(ctx.require_claims().roles):
            raise errors.InsufficientRole()
