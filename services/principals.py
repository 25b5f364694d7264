"""What Supabase says about a user now, for privileged routes (a short in-process cache).

An access token carries the roles and ban state of the moment it was issued, up to an hour
ago. Privileged routes ask Supabase again (admin ``get_user`` through the gateway) at most
once per ``ttl`` seconds per user, so an admin deleted, banned or demoted in Supabase loses
access within ``ttl`` even if no event reaches this service; a Supabase-side change event
(``services.events``) or any "this user changed" invalidation forgets the entry at once.

Admin routes are rate limited per account, so a user costs at most a few upstream calls a
minute; an upstream failure is not cached
and fails closed (the gateway's 503/504): a privileged route never answers on stale trust.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services import errors
from services.gateway import SupabaseGateway


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]
    banned: bool


def principal_of(user: dict[str, Any]) -> Principal:
    app_metadata = user.get("app_metadata")
    roles = app_metadata.get("roles") if isinstance(app_metadata, dict) else None
    names = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else None
    return Principal(
        user_id=str(user.get("id", "")),
        roles=names or frozenset(),
        banned=_banned(user.get("banned_until")),
    )


def _banned(until: Any) -> bool:
    if not isinstance(until, str) or not until:
        return False
    try:
        moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        return True  # Unreadable: fail closed.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment > datetime.now(UTC)


class PrincipalCache:
    def __init__(self, gateway: SupabaseGateway, *, ttl: float, size: int = 1024) -> None:
        self.gateway = gateway
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, tuple[float, Principal]] = {}

    async def get(self, user_id: str) -> Principal:
        """The user as Supabase has them now (within ``ttl``); ``SessionRevoked`` if the
        user no longer exists."""
        entry = self._entries.get(user_id)
        if entry is not None and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        principal = await self._fetch(user_id)
        if self.ttl > 0:
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[user_id] = (time.monotonic(), principal)
        return principal

    async def _fetch(self, user_id: str) -> Principal:
        try:
            user = await self.gateway.get_user(user_id)
        except errors.NotFound:
            raise errors.SessionRevoked("The account no longer exists.") from None
        return principal_of(user)

    def forget(self, user_id: str | None = None) -> None:
        """Drop one user's entry, or every entry."""
        if user_id is None:
            self._entries.clear()
        else:
            self._entries.pop(user_id, None)
