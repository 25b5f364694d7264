"""Assurance levels (MFA) recorded per session: ``aal1`` unless an MFA verification through
this service raised the session, and back to ``aal1`` once the factor that raised it is gone.

A mixin of ``services.sessions.SessionStore``: the level lives in the user's hash next to
the session (``services.session_keys``), is written durably and evicts the session's cached
answers like every other session write.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from redis.commands.core import AsyncScript

from services import session_keys as keys
from services.redis_call import as_text, redis_call
from services.redis_client import Durable, RedisClient


class SessionAssurance:
    """The assurance levels of ``SessionStore``, which sets these attributes."""

    redis: RedisClient
    durable: Durable
    prefix: str
    channel: str
    _set_assurance: AsyncScript

    if TYPE_CHECKING:

        def _evict(self, item: str) -> None: ...

    async def set_assurance(self, sid: str, uid: str, aal: str, factor_id: str | None) -> bool:
        """Record that the session reached ``aal`` (through ``factor_id``); False if the
        session is gone."""
        value = "" if aal == "aal1" else f"{aal}|{factor_id or ''}"
        done = await redis_call(
            "session_aal",
            self.durable.run(
                self._set_assurance,
                [keys.user_key(self.prefix, uid)],
                [sid, value, self.channel],
            ),
        )
        self._evict(f"s:{sid}")
        return bool(done)

    async def assurance(self, sid: str, uid: str) -> str:
        """The level this service recorded for the session: ``aal1`` unless an MFA
        verification through this service raised it (and no unenrolment lowered it)."""
        raw = await redis_call(
            "session_aal",
            self.redis.hget(keys.user_key(self.prefix, uid), keys.ASSURANCE + sid),
        )
        return as_text(raw).partition("|")[0] if raw else "aal1"

    async def assurances(self, uid: str) -> dict[str, tuple[str, str]]:
        """session id -> (aal, factor id) for every live session of the user: one read."""
        raw = await redis_call("session_aal", self.redis.hgetall(keys.user_key(self.prefix, uid)))
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        now = time.time()
        found: dict[str, tuple[str, str]] = {}
        for sid, value in fields.items():
            if sid.startswith("!") or keys.parse_session(value)[0] <= now:
                continue
            aal, _, factor = fields.get(keys.ASSURANCE + sid, "aal1|").partition("|")
            found[sid] = (aal or "aal1", factor)
        return found

    async def lower_assurance(self, uid: str, factor_id: str) -> list[str]:
        """Sessions raised to aal2 by ``factor_id`` fall back to aal1 (the factor is gone)."""
        lowered = [
            sid
            for sid, (aal, factor) in (await self.assurances(uid)).items()
            if aal != "aal1" and factor == factor_id
        ]
        for sid in lowered:
            await self.set_assurance(sid, uid, "aal1", None)
        return lowered
