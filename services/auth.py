"""The auth flows: register, login, refresh, logout, and the user's sessions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from services import audit, errors, metrics, tallies
from services.breaker import Caller
from services.gateway import AuthSession, SupabaseGateway
from services.passwords import PasswordPolicy
from services.redis_call import decide_alone, redis_call
from services.redis_client import Gate, RedisClient
from services.sessions import SessionInfo, SessionStore
from services.timing import LatencyFloor
from services.token_refresh import Client, LogoutScope, TokenRefresh, session_claims
from services.tokens import Claims

__all__ = ["AuthService", "Client", "LoginGuard", "LogoutScope", "NoLoginGuard", "Registration"]

log = structlog.get_logger("services.auth")


class LoginGuard(Protocol):
    """Brute-force protection around password checks (see ``services.lockout``)."""

    async def before_attempt(self, email: str, ip: str, *, along: Sequence[Gate] = ()) -> bool:
        """Refuse a locked-out attempt; else True if ``record_success`` has work to do.
        ``along`` (the request's rate limit) goes out in the same round trip, decided first."""
        ...

    async def record_failure(self, email: str, ip: str) -> None: ...
    async def record_success(self, email: str, ip: str) -> None: ...


class NoLoginGuard:
    async def before_attempt(self, email: str, ip: str, *, along: Sequence[Gate] = ()) -> bool:
        for gate in along:
            await decide_alone("rate_limit", gate)
        return False

    async def record_failure(self, email: str, ip: str) -> None:
        return None

    async def record_success(self, email: str, ip: str) -> None:
        return None


@dataclass(frozen=True)
class Registration:
    user: dict[str, Any]
    session: AuthSession | None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class AuthService(TokenRefresh):
    def __init__(
        self,
        *,
        gateway: SupabaseGateway,
        sessions: SessionStore,
        redis: RedisClient,
        prefix: str,
        policy: PasswordPolicy,
        email_confirm: bool,
        refresh_grace: float,
        session_ttl: int,
        guard: LoginGuard | None = None,
        registration_window: int = 600,
        conceal_existing: bool = False,
        failure_floor_seconds: float = 0.1,
    ) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.redis = redis
        self.prefix = prefix
        self.policy = policy
        self.email_confirm = email_confirm
        self.refresh_grace = refresh_grace
        self.session_ttl = session_ttl
        self.guard: LoginGuard = guard or NoLoginGuard()
        self.registration_window = registration_window
        # REGISTER_CONCEAL_EXISTING: a taken address answers like a fresh registration.
        self.conceal_existing = conceal_existing
        # Failed sign-ins (and, when concealing, taken addresses) take as long as the
        # successful path, so timing does not tell which addresses have accounts.
        self.login_floor = LatencyFloor(initial=failure_floor_seconds)
        self.register_floor = LatencyFloor(initial=failure_floor_seconds)
        # How long a concurrent duplicate waits for the first request's answer.
        self._wait_budget = gateway.config.deadline + 1.0

    # -- register --------------------------------------------------------------------

    async def register(
        self, email: str, password: str, data: dict[str, Any], client: Client
    ) -> Registration:
        self.policy.check(password)
        email = email.strip().lower()
        record_key = f"{self.prefix}reg:{_digest(email)}"
        # One registration per address at a time: a double-click waits for the first.
        lock = self._lock(f"{record_key}:lock")
        if not await redis_call("lock", lock.acquire(blocking_timeout=self._wait_budget)):
            raise errors.DeadlineExceeded(
                "A concurrent registration of this address did not finish."
            )
        started = time.monotonic()
        taken = False
        try:
            try:
                user = await self.gateway.create_user(
                    {
                        "email": email,
                        "password": password,
                        "email_confirm": self.email_confirm,
                        "user_metadata": data,
                    },
                    caller=Caller.of(client.ip, email),
                )
            except errors.EmailExists:
                if not self.conceal_existing:
                    return await self._replayed_registration(record_key, email, password, client)
                taken = True
            else:
                self.register_floor.observe(time.monotonic() - started)
                await redis_call(
                    "register",
                    self.redis.set(record_key, json.dumps(user), ex=self.registration_window),
                )
                tallies.count(metrics.AUTH_OUTCOMES, "register", "ok")
                log.info("user_registered", user_id=user.get("id"))
        finally:
            await self._release(lock)
        if self.conceal_existing:
            # REGISTER_CONCEAL_EXISTING: a taken address gets the answer a fresh one gets,
            # as late as a fresh one would (padded after the lock is released); no tokens,
            # so the client signs in next either way.
            if taken:
                tallies.count(metrics.AUTH_OUTCOMES, "register", "exists")
                await self.register_floor.pad(started)
            return Registration(user={"email": email}, session=None)
        if not self.email_confirm:
            return Registration(user=user, session=None)
        session = await self._open_session(email, password, client)
        return Registration(user=session.user, session=session)

    async def _replayed_registration(
        self, record_key: str, email: str, password: str, client: Client
    ) -> Registration:
        """A retry of a registration that already succeeded gets the same answer; any
        other duplicate is a conflict."""
        raw = await redis_call("register", self.redis.get(record_key))
        if raw is None:
            tallies.count(metrics.AUTH_OUTCOMES, "register", "exists")
            raise errors.EmailExists()
        user = json.loads(raw)
        try:
            session = await self._open_session(email, password, client)
        except errors.EmailNotConfirmed:
            # GoTrue checks the password before confirmation, so this proves the password.
            return Registration(user=user, session=None)
        except errors.InvalidCredentials:
            tallies.count(metrics.AUTH_OUTCOMES, "register", "exists")
            raise errors.EmailExists() from None
        tallies.count(metrics.AUTH_OUTCOMES, "register", "replayed")
        return Registration(user=session.user, session=session)

    # -- login -----------------------------------------------------------------------

    async def login(
        self, email: str, password: str, client: Client, *, limit: Gate | None = None
    ) -> AuthSession:
        """``limit``: the request's rate limit, counted in the lockout check's round trip."""
        email = email.strip().lower()
        try:
            dirty = await self.guard.before_attempt(
                email, client.ip, along=(limit,) if limit is not None else ()
            )
        except errors.LockedOut:
            tallies.count(metrics.AUTH_OUTCOMES, "login", "locked")
            raise
        started = time.monotonic()
        try:
            session = await self.gateway.sign_in(
                email, password, caller=Caller.of(client.ip, email)
            )
        except (errors.InvalidCredentials, errors.UserBanned) as exc:
            # Supabase Auth reports a ban before it checks the password, so "banned" would
            # tell anyone that the address has an account; it stays "invalid credentials".
            tallies.count(metrics.AUTH_OUTCOMES, "login", "invalid")
            audit.event(
                "auth.sign_in_failed",
                reason=exc.code,  # the operator sees the ban the client is not told of
                email_hash=audit.email_hash(email),
                ip=client.ip,
            )
            await self.guard.record_failure(email, client.ip)
            await self.login_floor.pad(started)
            if isinstance(exc, errors.InvalidCredentials):
                raise
            raise errors.InvalidCredentials() from None
        except errors.EmailNotConfirmed as exc:
            # Reported only after a correct password (GoTrue checks it first).
            tallies.count(metrics.AUTH_OUTCOMES, "login", exc.code)
            audit.event(
                "auth.sign_in_failed",
                reason=exc.code,
                email_hash=audit.email_hash(email),
                ip=client.ip,
            )
            raise
        self.login_floor.observe(time.monotonic() - started)
        if dirty:
            # Independent writes: one round trip of latency instead of one each.
            await asyncio.gather(
                self._record_session(session, client),
                self.guard.record_success(email, client.ip),
            )
        else:
            await self._record_session(session, client)
        tallies.count(metrics.AUTH_OUTCOMES, "login", "ok")
        return session

    async def _open_session(self, email: str, password: str, client: Client) -> AuthSession:
        session = await self.gateway.sign_in(email, password, caller=Caller.of(client.ip, email))
        await self._record_session(session, client)
        return session

    async def _record_session(self, session: AuthSession, client: Client) -> None:
        sid, uid = session_claims(session)
        ended = await self.sessions.create(
            sid,
            uid,
            ip=client.ip,
            user_agent=client.user_agent,
            refresh_token=session.refresh_token,
        )
        audit.event("auth.signed_in", user_id=uid, session_id=sid, ip=client.ip)
        if ended:
            audit.event("session.revoked", user_id=uid, session_ids=ended, by="limit")

    async def record_session(self, session: AuthSession, client: Client) -> None:
        """Keep a session another flow opened (a verified code, OAuth, MFA): ``services.flows``."""
        await self._record_session(session, client)

    # -- logout and sessions -----------------------------------------------------------

    async def logout(self, claims: Claims, access_token: str, scope: LogoutScope) -> None:
        # Our own revocation first: from here on every instance refuses the tokens.
        if scope == "local":
            await self.sessions.revoke(claims.sub, [claims.session_id])
        else:
            await self.sessions.revoke_all(
                claims.sub, keep=claims.session_id if scope == "others" else None
            )
        await self._end_upstream(access_token, scope)
        tallies.count(metrics.AUTH_OUTCOMES, "logout", scope)
        audit.event("auth.logout", user_id=claims.sub, session_id=claims.session_id, scope=scope)

    async def list_sessions(self, claims: Claims) -> list[SessionInfo]:
        sessions = await self.sessions.list_for_user(claims.sub)
        return sorted(sessions, key=lambda s: s.created_at, reverse=True)

    async def revoke_session(self, claims: Claims, session_id: str) -> None:
        info = await self.sessions.get(session_id, claims.sub)
        if info is None or info.user_id != claims.sub:
            raise errors.NotFound("No such session.")
        await self.sessions.revoke(claims.sub, [session_id])
        audit.event("session.revoked", user_id=claims.sub, session_ids=[session_id], by="user")

    # -- small Redis helpers ------------------------------------------------------------

    def _lock(self, name: str) -> Lock:
        # Expires on its own should this process die holding it.
        return self.redis.lock(name, timeout=self._wait_budget, sleep=0.02)

    async def _release(self, lock: Lock) -> None:
        try:
            await lock.release()
        except LockError:
            pass  # Expired and possibly taken over: nothing of ours to release.
        except (RedisError, OSError):
            metrics.REDIS_ERRORS.labels("lock").inc()
