"""The built-in layers. 401 answers "who are you?", 403 "may you?", 429 "not now".

Each layer is one small class with ``async def check(ctx)``; ``app.policy`` composes them.
Layers that depend on configuration read it from ``ctx.services.settings`` at request time,
so one policy table serves every app instance.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.authz.base import AuthContext
from services import audit, errors
from services.ratelimit import PendingHit
from services.redis_call import decide_alone
from services.sessions import UserState

_AAL_RANK = {"aal1": 1, "aal2": 2, "aal3": 3}
_STATE = "session_state"
RESPONSE_HEADERS = "response_headers"
PENDING_LIMIT = "pending_limit"  # AuthContext.extra: a rate limit the endpoint sends


class Bearer:
    """Authentication: an ``Authorization: Bearer`` token must be present."""

    async def check(self, ctx: AuthContext) -> None:
        value = ctx.header(b"authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.MissingToken(headers={"WWW-Authenticate": 'Bearer realm="api"'})
        ctx.token = token.strip()


class VerifyToken:
    """The token's signature and claims check out locally (JWKS or the HS256 secret)."""

    async def check(self, ctx: AuthContext) -> None:
        if ctx.token is None:
            raise errors.MissingToken()
        verifier = ctx.services.verifier
        try:
            ctx.claims = verifier.cached(ctx.token) or await verifier.verify(ctx.token)
        except errors.Unauthenticated as exc:
            exc.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
            raise


def _known_state(ctx: AuthContext) -> tuple[bool, UserState] | None:
    """The session state if this request or the session cache already knows it: the layers
    below share one lookup per request, and a cached one costs no await."""
    found: tuple[bool, UserState] | None = ctx.extra.get(_STATE)
    if found is None:
        claims = ctx.require_claims()
        found = ctx.services.sessions.cached(claims.session_id, claims.sub)
        if found is not None:
            ctx.extra[_STATE] = found
    return found


async def _session_state(ctx: AuthContext) -> tuple[bool, UserState]:
    """The session-store lookup, when ``_known_state`` had no answer."""
    claims = ctx.require_claims()
    found = await ctx.services.sessions.lookup(claims.session_id, claims.sub)
    ctx.extra[_STATE] = found
    return found


class AccountStatus:
    """The account is not banned. A login lockout deliberately does not end sessions:
    anyone can trigger one, so it only gates password attempts."""

    async def check(self, ctx: AuthContext) -> None:
        _, state = _known_state(ctx) or await _session_state(ctx)
        if state.banned:
            raise errors.UserBanned()


class SessionAlive:
    """The token's session has not been logged out or revoked."""

    async def check(self, ctx: AuthContext) -> None:
        alive, _ = _known_state(ctx) or await _session_state(ctx)
        if not alive:
            raise errors.SessionRevoked()


class NotBefore:
    """The token was issued after the user's last "log out everywhere" or password change."""

    async def check(self, ctx: AuthContext) -> None:
        _, state = _known_state(ctx) or await _session_state(ctx)
        if ctx.require_claims().iat < state.not_before:
            raise errors.SessionRevoked("The session was ended on every device.")


@dataclass(frozen=True)
class RequireRole:
    """``app_metadata.roles`` holds at least one of ``roles``."""

    roles: frozenset[str]

    async def check(self, ctx: AuthContext) -> None:
        if not self.roles.intersection(ctx.require_claims().roles):
            raise errors.InsufficientRole()


@dataclass(frozen=True)
class RequireScopes:
    """The token grants every one of ``scopes`` (``app_metadata.scopes`` or ``scope``)."""

    scopes: frozenset[str]

    async def check(self, ctx: AuthContext) -> None:
        if not self.scopes.issubset(ctx.require_claims().scopes):
            missing = " ".join(sorted(self.scopes.difference(ctx.require_claims().scopes)))
            raise errors.InsufficientScope(f"Your token lacks the scope(s): {missing}.")


@dataclass(frozen=True)
class Owner:
    """The path parameter ``param`` is the caller's own user id, unless the caller holds
    ``admin_role``."""

    param: str = "user_id"
    admin_role: str = "admin"

    async def check(self, ctx: AuthContext) -> None:
        claims = ctx.require_claims()
        if str(ctx.path_params.get(self.param, "")).lower() == claims.sub.lower():
            return
        if self.admin_role not in claims.roles:
            raise errors.NotOwner()
        # Access to someone else's data on the strength of a role: ask Supabase too.
        await SupabaseRecheck(frozenset({self.admin_role})).check(ctx)


@dataclass(frozen=True)
class RequireAal:
    """The session reached ``level`` (e.g. ``aal2``: MFA). With ``setting``, enforced only
    while that boolean setting is on (``ADMIN_REQUIRE_AAL2``)."""

    level: str = "aal2"
    setting: str | None = None

    async def check(self, ctx: AuthContext) -> None:
        if self.setting is not None and not getattr(ctx.services.settings, self.setting):
            return
        claims = ctx.require_claims()
        have = _AAL_RANK.get(claims.aal, 0)
        if have < _AAL_RANK[self.level]:
            raise errors.InsufficientAssurance()
        # The token says aal2; the session must still be aal2 here too: an unenrolled factor
        # lowers it at once on every instance, though the token lives until it expires.
        recorded = await ctx.services.sessions.assurance(claims.session_id, claims.sub)
        if _AAL_RANK.get(recorded, 0) < _AAL_RANK[self.level]:
            raise errors.InsufficientAssurance(
                "This session's multi-factor authentication no longer holds; sign in again."
            )


@dataclass(frozen=True)
class IpAllowList:
    """The client address lies in one of the networks of the list setting ``setting``;
    an empty list allows every address."""

    setting: str = "admin_ip_allowlist"

    async def check(self, ctx: AuthContext) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = getattr(
            ctx.services.settings, self.setting
        )
        if not networks:
            return
        try:
            address = ipaddress.ip_address(ctx.client_ip)
        except ValueError:
            raise errors.IpNotAllowed() from None
        if not any(address in network for network in networks):
            raise errors.IpNotAllowed()


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class ServiceCredentials:
    """Service-to-service: ``X-Service-ID`` and ``X-Service-Secret`` match a pair of
    ``SERVICE_CREDENTIALS``. The secret is compared in constant time, and an unknown id
    costs the same comparison, so timing tells nothing about which ids exist. Failures are
    counted per source address before the comparison (``services.credentials``): a source
    that keeps guessing is refused even once it guesses right."""

    async def check(self, ctx: AuthContext) -> None:
        guard = ctx.services.credential_guard
        if guard is not None:
            await guard.before("service", ctx.client_ip)
        service_id = ctx.headers.get("x-service-id", "")
        offered = ctx.headers.get("x-service-secret", "")
        expected = ctx.services.settings.service_credentials.get(service_id)
        wanted = expected.get_secret_value() if expected is not None else ""
        # Digests first: compare_digest is constant-time only for equal lengths.
        same = hmac.compare_digest(_digest(offered), _digest(wanted))
        if not same or expected is None or not offered:
            audit.event(
                "service_credential.failed",
                service_id=audit.clip(service_id),
                ip=ctx.client_ip,
                reason="missing"
                if not offered
                else "unknown_service"
                if expected is None
                else "wrong_secret",
            )
            if guard is not None:
                await guard.failed("service", ctx.client_ip)
            raise errors.ServiceCredentialsInvalid()
        if guard is not None:
            await guard.succeeded("service", ctx.client_ip)
        ctx.service_id = service_id


class SupabaseRecheck:
    """Privileged routes: the caller is, according to Supabase now (not only the token),
    still a user, not banned, and still holds one of ``roles`` (``services.principals``:
    cached for ``ADMIN_REVERIFY_SECONDS``)."""

    def __init__(self, roles: frozenset[str]) -> None:
        self.roles = roles

    async def check(self, ctx: AuthContext) -> None:
        principals = ctx.services.principals
        if principals is None:
            return
        principal = await principals.get(ctx.require_claims().sub)
        if principal.banned:
            raise errors.UserBanned()
        if not self.roles.intersection(principal.roles):
            raise errors.InsufficientRole("Your role was removed.")


@dataclass(frozen=True)
class RateLimit:
    """Counts the request against rule ``rule`` (``RATE_LIMITS``) per client IP, per
    account (the token's user; after verification), or per calling service.

    ``with_endpoint``: the endpoint counts it, in the same Redis round trip as its own
    first check (the login's lockout check), so the request pays one round trip for both;
    the layer only names the hit (``pending_limit``). Such an endpoint must hand it on
    (a test of its 429 proves it does)."""

    rule: str
    per: Literal["ip", "account", "service"] = "ip"
    with_endpoint: bool = False

    async def check(self, ctx: AuthContext) -> None:
        limiter = ctx.services.rate_limiter
        if limiter is None:
            return
        if self.per == "account":
            subject = "account:" + ctx.require_claims().sub
        elif self.per == "service":
            subject = "service:" + (ctx.service_id or ctx.client_ip)
        else:
            subject = "ip:" + ctx.client_ip
        if self.with_endpoint:
            ctx.extra[PENDING_LIMIT] = limiter.pending(self.rule, subject)
            return
        decision = await limiter.hit(self.rule, subject)
        ctx.scope.setdefault("state", {})[RESPONSE_HEADERS] = decision.headers()


def pending_limit(ctx: AuthContext) -> PendingHit | None:
    """The hit a ``RateLimit(with_endpoint=True)`` left for the endpoint to send."""
    pending: PendingHit | None = ctx.extra.get(PENDING_LIMIT)
    return pending


def limit_counted(ctx: AuthContext, pending: PendingHit | None) -> None:
    """The endpoint sent ``pending`` and it was allowed: its headers go on the response."""
    if pending is not None and pending.decision is not None:
        ctx.scope.setdefault("state", {})[RESPONSE_HEADERS] = pending.decision.headers()


async def count_alone(ctx: AuthContext, pending: PendingHit | None) -> None:
    """The endpoint refused the request before its own check (an unreadable body): the
    hit is still counted, on its own, and a 429 comes before the endpoint's refusal, as it
    would from the layer."""
    if pending is not None and pending.decision is None:
        await decide_alone("rate_limit", pending)
        limit_counted(ctx, pending)


class ResponseHeaders:
    """Adds the headers layers left in ``scope["state"]`` (the ``RateLimit-*`` trio) to a
    successful response; refusals carry theirs on the error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = scope.get("state", {}).get(RESPONSE_HEADERS, {})
                if extra:
                    headers = list(message.get("headers", []))
                    headers.extend((k.lower().encode(), v.encode()) for k, v in extra.items())
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
