"""Refreshing a session: one rotation of a refresh token shared by every concurrent
refresh of it (two tabs), a replay after the grace window ending the session, and the few
Redis round trips it costs (a mixin of ``services.auth.AuthService``).

Before the upstream call: the rate limit with the rotation's start, one script that
returns the answer a concurrent refresh just shared, else takes the token's lock and reads
its record under it (``session_keys.BEGIN_ROTATION``); then the session's check. After it:
the session marked used with the new token's record (at once), the old token retired,
the lock released. The key layout is in ``services.session_keys``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import structlog

from services import audit, errors, metrics, tallies
from services.breaker import Caller
from services.gateway import AuthSession, SupabaseGateway
from services.redis_client import Gate
from services.refresh_records import RefreshRecord
from services.sessions import SessionStore

log = structlog.get_logger("services.auth")

LogoutScope = Literal["local", "others", "global"]
# This host's clock against Supabase Auth's, read from each fresh token's iat (one-second
# resolution plus latency): beyond this, tokens are on their way to being refused.
CLOCK_SKEW_WARNING_SECONDS = 10.0


@dataclass(frozen=True)
class Client:
    """Who is calling, as far as the session list is concerned."""

    ip: str
    user_agent: str


def session_claims(session: AuthSession) -> tuple[str, str]:
    """The (session id, user id) of a token that just came from Supabase over our own link.

    Only read, not verified: it was not presented by a client, and every later use of it is
    verified. Decoded directly because PyJWT's unverified decode validates the base64
    character by character, which a login pays for nothing."""
    payload = session.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    skew = time.time() - float(claims.get("iat") or time.time())
    metrics.CLOCK_SKEW.labels("supabase_auth").set(skew)
    if abs(skew) > CLOCK_SKEW_WARNING_SECONDS:
        log.warning("clock_skew", skew_s=round(skew, 1), against="supabase_auth_token_iat")
    return str(claims["session_id"]), str(claims["sub"])


class TokenRefresh:
    """The refresh flow of ``AuthService``, which sets these attributes."""

    gateway: SupabaseGateway
    sessions: SessionStore
    refresh_grace: float
    _wait_budget: float

    async def refresh(
        self, refresh_token: str, client: Client, *, limit: Gate | None = None
    ) -> AuthSession:
        """Rotate a refresh token. Concurrent refreshes of one token (two tabs) all get the
        same new pair; a replay after the grace window ends the session. ``limit``: the
        request's rate limit, counted in the first round trip."""
        deadline = time.monotonic() + self._wait_budget
        hold_ms = max(1, int(self._wait_budget * 1000))
        along: tuple[Gate, ...] = (limit,) if limit is not None else ()
        while True:
            holder = secrets.token_hex(16)
            start = await self.sessions.start_rotation(refresh_token, holder, hold_ms, along=along)
            along = ()  # counted once
            if start.shared is not None:
                tallies.count(metrics.AUTH_OUTCOMES, "refresh", "shared")
                return await self._shared_answer(start.shared)
            if start.locked:
                try:
                    return await self._rotate(refresh_token, start.record, client)
                finally:
                    await self._end_rotation(refresh_token, holder)
            if time.monotonic() > deadline:
                raise errors.DeadlineExceeded("A concurrent refresh of this token did not finish.")
            await asyncio.sleep(0.02)

    async def _shared_answer(self, raw: str) -> AuthSession:
        """The pair a concurrent refresh of this token just got, while its session lives:
        the window shares one rotation between tabs, it never revives a signed-out session."""
        session = AuthSession(**json.loads(raw))
        sid, uid = session_claims(session)
        if await self.sessions.get(sid, uid) is None:
            tallies.count(metrics.AUTH_OUTCOMES, "refresh", "revoked")
            raise errors.InvalidRefreshToken()
        return session

    async def _end_rotation(self, refresh_token: str, holder: str) -> None:
        # Redis gone: the lock expires on its own (``hold_ms``), and the answer stands.
        with contextlib.suppress(errors.RedisUnavailable):
            await self.sessions.end_rotation(refresh_token, holder)

    async def _rotate(
        self, refresh_token: str, record: RefreshRecord | None, client: Client
    ) -> AuthSession:
        # ``record`` was read under the lock: a holder before us has finished (its answer
        # would have been shared instead).
        if record is not None and record.used:
            await self.sessions.revoke(record.uid, [record.sid])
            tallies.count(metrics.AUTH_OUTCOMES, "refresh", "reused")
            audit.event(
                "refresh.reuse_detected",
                session_id=record.sid,
                user_id=record.uid,
                ip=client.ip,
            )
            raise errors.RefreshTokenReused()
        if record is not None and await self.sessions.get(record.sid, record.uid) is None:
            tallies.count(metrics.AUTH_OUTCOMES, "refresh", "revoked")
            raise errors.InvalidRefreshToken()
        key = self.sessions.refresh_key(refresh_token)
        try:
            # The account is not known before the answer: the token stands for it.
            session = await self.gateway.refresh(refresh_token, caller=Caller.of(client.ip, key))
        except errors.Unauthenticated:
            tallies.count(metrics.AUTH_OUTCOMES, "refresh", "invalid")
            raise
        sid, uid = session_claims(session)
        # Independent writes in one round trip of latency: the session marked used, and the
        # new token's record (harmless should the session turn out revoked: a refresh with
        # that token then finds the session gone).
        alive, _ = await asyncio.gather(
            self.sessions.touch(sid, uid, ip=client.ip),
            self.sessions.remember_refresh(session.refresh_token, uid, sid),
        )
        if not alive:
            # Revoked here (reuse detection, admin action) while Supabase still had it.
            await self._end_upstream(session.access_token, "local")
            tallies.count(metrics.AUTH_OUTCOMES, "refresh", "revoked")
            raise errors.InvalidRefreshToken()
        # The "used" marker turns a replay into an immediate revocation here; it matters
        # while an access token of this rotation can still be in use (docs/redis.md).
        await self.sessions.retire_refresh(
            refresh_token,
            uid=uid,
            sid=sid,
            answer=json.dumps(session.__dict__),
            grace_ms=int(self.refresh_grace * 1000),
            used_ttl=max(int(self.refresh_grace) + 1, session.expires_in + 60),
        )
        tallies.count(metrics.AUTH_OUTCOMES, "refresh", "ok")
        return session

    async def _end_upstream(self, access_token: str, scope: LogoutScope) -> None:
        try:
            await self.gateway.sign_out(access_token, scope)
        except errors.SessionRevoked:
            pass  # Already gone upstream: the outcome the caller wanted.
        except errors.ServiceUnavailable as exc:
            # Revoked here already; Supabase will drop its copy when the token expires.
            log.warning("upstream_logout_failed", scope=scope, code=exc.code)
        except errors.DeadlineExceeded:
            log.warning("upstream_logout_failed", scope=scope, code="upstream_timeout")
