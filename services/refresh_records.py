"""Refresh-token records in Redis: the session a current refresh token belongs to, the mark
of a rotated one, and the answer shared with concurrent refreshes during the grace window.

A mixin of ``services.sessions.SessionStore``, over its Redis client, key prefix, session
lifetime and durable writes; the key layout is in ``services.session_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from services import session_keys as keys
from services.redis_call import as_text, gated, redis_call
from services.redis_client import Call, Durable, Gate, RedisClient


@dataclass(frozen=True)
class RefreshRecord:
    """What Redis knows of a refresh token: its session, and whether it was rotated."""

    uid: str
    sid: str
    used: bool


@dataclass(frozen=True)
class RotationStart:
    """How a refresh begins: with the answer a concurrent refresh of the token shared
    (``shared``), or holding the token's rotation lock with its record as read under it
    (``locked``), or neither (another refresh holds the lock: wait for its answer)."""

    locked: bool
    shared: str | None
    record: RefreshRecord | None


def _record(raw: Any) -> RefreshRecord | None:
    if raw is None:
        return None
    value = as_text(raw)
    uid, _, sid = value.lstrip("!").partition(" ")
    return RefreshRecord(uid=uid, sid=sid, used=value.startswith("!"))


class RefreshRecords:
    """The refresh-token records of ``SessionStore``, which sets these attributes."""

    redis: RedisClient
    durable: Durable
    prefix: str
    session_ttl: int
    _retire: AsyncScript
    _begin_rotation: AsyncScript
    _end_rotation: AsyncScript

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
        return _record(raw)

    async def grace_answer(self, refresh_token: str) -> str | None:
        raw = await redis_call("refresh", self.redis.get(self.refresh_key(refresh_token) + ":g"))
        return None if raw is None else as_text(raw)

    async def start_rotation(
        self, refresh_token: str, holder: str, hold_ms: int, *, along: Sequence[Gate] = ()
    ) -> RotationStart:
        """One round trip, with ``along`` (the request's rate limit, decided first): the
        shared answer, else the rotation lock (held by ``holder`` for at most ``hold_ms``)
        and the token's record read under it (``session_keys.BEGIN_ROTATION``)."""
        key = self.refresh_key(refresh_token)
        start: Call = (self._begin_rotation, [key, key + ":g", key + ":lock"], [holder, hold_ms])

        async def refused(reply: Any) -> None:
            if int(reply[0]):
                await self.end_rotation(refresh_token, holder)  # refused: not rotating

        locked, shared, record = await gated("refresh", self.redis, start, along, refused)
        return RotationStart(
            locked=bool(int(locked)),
            shared=None if shared is None else as_text(shared),
            record=_record(record),
        )

    async def end_rotation(self, refresh_token: str, holder: str) -> None:
        """Release the rotation lock if ``holder`` still holds it."""
        lock = self.refresh_key(refresh_token) + ":lock"
        await redis_call("refresh", self._end_rotation(keys=[lock], args=[holder]))

    async def retire_refresh(
        self, old_token: str, *, uid: str, sid: str, answer: str, grace_ms: int, used_ttl: int
    ) -> None:
        """Mark a rotated token used, with the answer shared during the grace window (the
        old token's slot). Called once the new token is remembered (its own slot): two
        single-slot steps, so a crash between them leaves a known new token and an old one
        Supabase still refuses."""
        old = self.refresh_key(old_token)
        await redis_call(
            "refresh",
            self.durable.run(
                self._retire,
                [old, old + ":g"],
                [f"!{uid} {sid}", max(1, min(used_ttl, self.session_ttl)), answer, grace_ms],
            ),
        )
