"""What every account-lifecycle flow shares: its dependencies, the guard around a guessed
secret, per-address mail limits and the "same answer whether or not the address exists" rule.

The flow families live in their own modules (``recovery``, ``confirmation``, ``account``,
``otp``, ``oauth``, ``mfa``); each takes a ``FlowDeps``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from services import errors
from services.auth import AuthService, Client
from services.gateway import AuthSession, SupabaseGateway
from services.lockout import LoginLockout
from services.passwords import PasswordPolicy
from services.ratelimit import RateLimiter
from services.sessions import SessionStore
from services.token_refresh import session_claims

T = TypeVar("T")
log = structlog.get_logger("services.flows")

# Upstream answers that may differ between addresses (no account, banned, already confirmed,
# mailed too recently): a mail-sending request swallows them so every address gets the same
# 202. The body was validated before, so a 4xx here is about the account, not the request.
# An outage (5xx, timeout) is still reported: it is the same for every address.
_REVEALING = (
    errors.UpstreamRateLimited,
    errors.NotFound,
    errors.Forbidden,
    errors.Conflict,
    errors.ValidationFailed,
)


@dataclass(frozen=True)
class FlowDeps:
    gateway: SupabaseGateway
    sessions: SessionStore
    auth: AuthService
    policy: PasswordPolicy
    limiter: RateLimiter | None = None
    # Wrong emailed codes, nonces and MFA codes (keys apart from the login counters).
    codes: LoginLockout | None = None
    # The login lockout: a current password checked here is the same secret as at login.
    passwords: LoginLockout | None = None


class SecretGuard:
    """Lockout around one guess of a secret: refused while locked; a wrong guess counts;
    a right one clears the count (``services.lockout`` semantics, per subject and address)."""

    def __init__(
        self,
        lockout: LoginLockout | None,
        wrong: tuple[type[errors.AuthServiceError], ...],
        detail: str = "Too many wrong codes; try again later.",
    ) -> None:
        self.lockout = lockout
        self.wrong = wrong
        self.detail = detail

    async def attempt(self, subject: str, ip: str, guess: Callable[[], Awaitable[T]]) -> T:
        if self.lockout is None:
            return await guess()
        try:
            dirty = await self.lockout.before_attempt(subject, ip)
        except errors.LockedOut as exc:
            raise errors.CodeLockedOut(self.detail, retry_after=exc.retry_after) from None
        try:
            result = await guess()
        except self.wrong:
            await self.lockout.record_failure(subject, ip)
            raise
        if dirty:
            await self.lockout.record_success(subject, ip)
        return result


def code_guard(deps: FlowDeps) -> SecretGuard:
    return SecretGuard(deps.codes, (errors.InvalidCode,))


async def limit_address(deps: FlowDeps, rule: str, email: str) -> None:
    """Count a mail to ``email`` against ``rule``: one address cannot be flooded from many
    client addresses. Says nothing about whether the address has an account."""
    if deps.limiter is not None:
        await deps.limiter.hit(rule, "email:" + email)


async def without_revealing(flow: str, send: Awaitable[None]) -> None:
    """Run a mail-sending call; answers that differ between known and unknown addresses are
    logged and dropped."""
    try:
        await send
    except _REVEALING as exc:
        # Supabase's project-wide mail limit hides behind the same answer: say so loudly.
        level = log.warning if isinstance(exc, errors.UpstreamRateLimited) else log.info
        level("mail_not_sent", flow=flow, reason=exc.code)


async def open_session(deps: FlowDeps, session: AuthSession, client: Client) -> AuthSession:
    """Keep a session a flow opened in Redis, as a login does."""
    await deps.auth.record_session(session, client)
    return session


async def end_upstream(deps: FlowDeps, access_token: str, scope: str = "local") -> None:
    """Best effort: end a session upstream we do not hand out (a password probe)."""
    try:
        await deps.gateway.sign_out(access_token, scope)
    except errors.AuthServiceError as exc:
        log.warning("upstream_logout_failed", scope=scope, code=exc.code)


def normalise(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class EmailedSecret:
    """What a user brings back from a mail: the code with its address, or the link's token
    hash (unguessable, so only rate limited)."""

    email: str | None = None
    code: str | None = None
    token_hash: str | None = None

    def params(self, kind: str) -> dict[str, str]:
        if self.token_hash:
            return {"token_hash": self.token_hash, "type": kind}
        assert self.email is not None
        assert self.code is not None
        return {"email": normalise(self.email), "token": self.code, "type": kind}


async def verify_emailed(
    deps: FlowDeps, secret: EmailedSecret, kind: str, ip: str
) -> AuthSession | None:
    """Check an emailed code (under the code lockout, per address) or token hash."""
    params = secret.params(kind)
    if secret.token_hash:
        return await deps.gateway.verify_otp(params)
    return await code_guard(deps).attempt(
        "code:" + params["email"], ip, lambda: deps.gateway.verify_otp(params)
    )


def require_session(session: AuthSession | None) -> AuthSession:
    if session is None:
        raise errors.InvalidCode()
    return session


def session_ids(session: AuthSession) -> tuple[str, str]:
    """(session id, user id) of a session that just came from Supabase."""
    return session_claims(session)
