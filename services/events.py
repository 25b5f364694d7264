"""Supabase-side changes, applied at once: sessions end, cached trust is dropped.

A change made in Supabase directly (dashboard, SQL, another service) is otherwise seen
only when the user's access token expires. A database trigger on ``auth.users`` (see
``docs/supabase-events.md``) posts a signed event; this applies it:

========================  =================================================================
change                    effect here
========================  =================================================================
``password``, ``email``   every session ends, and every token issued until now is refused
``roles_removed``         the same (roles live in tokens until they expire)
``banned``                the same, and the account is marked banned on every instance
``unbanned``              the ban mark is lifted
``roles_added``           nothing to end; cached trust is dropped so it is seen at once
``user.deleted``          every session ends, every token is refused
========================  =================================================================

Each delivery id is applied once (a replay inside the signature tolerance is answered
``duplicate``), and every change drops the user's cached state on every instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from services.principals import PrincipalCache
from services.redis_call import redis_call
from services.redis_client import RedisClient
from services.sessions import SessionStore

log = structlog.get_logger("services.events")

ENDING_CHANGES = frozenset({"password", "email", "roles_removed", "banned"})
# Longer than the signature tolerance on both sides (5 minutes each way).
_SEEN_SECONDS = 15 * 60


@dataclass(frozen=True)
class Outcome:
    status: str  # "applied", "duplicate"
    sessions_ended: int = 0


class SupabaseEvents:
    def __init__(
        self,
        *,
        redis: RedisClient,
        prefix: str,
        sessions: SessionStore,
        principals: PrincipalCache | None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.sessions = sessions
        self.principals = principals

    async def first_delivery(self, delivery_id: str) -> bool:
        key = f"{self.prefix}wh:{delivery_id[:128]}"
        fresh = await redis_call("events", self.redis.set(key, 1, nx=True, ex=_SEEN_SECONDS))
        return bool(fresh)

    async def user_changed(self, delivery_id: str, user_id: str, changes: Iterable[str]) -> Outcome:
        if not await self.first_delivery(delivery_id):
            return Outcome("duplicate")
        wanted = set(changes)
        ended = 0
        if "banned" in wanted:
            # First, so no instance trusts the user while the sessions are being ended.
            await self.sessions.set_banned(user_id, True)
        elif "unbanned" in wanted:
            await self.sessions.set_banned(user_id, False)
        if wanted & ENDING_CHANGES:
            ended = len(await self.sessions.revoke_all(user_id))
        self._forget(user_id)
        log.info("supabase_user_changed", user_id=user_id, changes=sorted(wanted), ended=ended)
        return Outcome("applied", ended)

    async def user_deleted(self, delivery_id: str, user_id: str) -> Outcome:
        if not await self.first_delivery(delivery_id):
            return Outcome("duplicate")
        ended = len(await self.sessions.revoke_all(user_id))
        self._forget(user_id)
        log.info("supabase_user_deleted", user_id=user_id, ended=ended)
        return Outcome("applied", ended)

    def _forget(self, user_id: str) -> None:
        # This instance at once; the others through the session store's invalidation.
        if self.principals is not None:
            self.principals.forget(user_id)
