"""Refresh-token records in Redis: the session a current refresh token belongs to, the mark
of a rotated one, and the answer shared with concurrent refreshes during the grace window.

A mixin of ``services.sessions.SessionStore``, over its Redis client, key prefix, session
lifetime and durable writes; the key layout is in ``services.session_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import AsyncScript

from services import session_keys as keys
from services.redis_call import as_text, redis_call
from services.redis_client import Call, Durable, RedisClient


@dataclass(frozen=True)
class RefreshRecord:
    """What Redis knows of a refresh token: its session, and whether it was rotated."""

    uid: str
    sid: str
    used: bool


class RefreshRecords:
    """The refresh-token records of ``SessionStore``, which sets these attributes."""

    redis: RedisClient
    durable: Durable
    prefix: str
    session_ttl: int
    _retire: AsyncScript

    def refresh_key(self, refresh_token: str) -> str:
        return keys.refresh_key(self.prefix, refresh_token)

    async def remember_refresh(self, refresh_token: str, uid: str, sid: str) -> None:
        await redis_call("refresh", self.durable.run(*self._refresh_call(refresh_token, uid, sid)))

    def _refresh_call(self, refresh_token: str, uid: str, sid: str) -> Call:
        """The write of a current refresh token's record: "UID SID" for the session's life."""
        return self.durable.set_call(
            self.refresh_key(refresh_token), f"{uid} {sid}", self.session_ttl
        )

    async def refresh_record(self, refresh_token: str) -> RefreshRecord | None:
        raw = await redis_call("refresh", self.redis.get(self.refresh_key(refresh_token)))
        if raw is None:
            return None
        value = as_text(raw)
        used = value.startswith("!")
        uid, _, sid = value.lstrip("!").partition(" ")
        return RefreshRecord(uid=uid, sid=sid, used=used)

    async def grace_answer(self, refresh_token: str) -> str | None:
        raw = await redis_call("refresh", self.redis.get(self.refresh_key(refresh_token) + ":g"))
        return None if raw is None else as_text(raw)

    async def rotate_refresh(
        self,
        old_token: str,
        new_token: str,
        *,
        uid: str,
        sid: str,
        answer: str,
        grace_ms: int,
        used_ttl: int,
    ) -> None:
        """The new token first (its own slot), then the old one marked used with the answer
        shared during the grace window (the old token's slot): two single-slot steps, so a
        crash between them leaves a known new token and an old one Supabase still refuses."""
        await self.remember_refresh(new_token, uid, sid)
        old = self.refresh_key(old_token)
        await redis_call(
            "refresh",
            self.durable.run(
                self._retire,
                [old, old + ":g"],
                [f"!{uid} {sid}", max(1, min(used_ttl, self.session_ttl)), answer, grace_ms],
            ),
        )
