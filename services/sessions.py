"""Sessions, revocation and per-user state in Redis.

The key layout and the scripts are in ``services.session_keys`` (one hash per user, in one
hash slot, so it runs unchanged on a Redis Cluster). A session is alive exactly while its
field exists and has not expired, so a lost Redis fails closed. Every instance keeps a small
in-process cache of these answers (``services.invalidation``) so an authenticated request
costs no Redis round trip; every write publishes an invalidation from inside its script,
each instance evicts on receipt, and the cache is trusted only while the invalidation path
is proven end to end. Otherwise every check reads Redis, and a Redis outage answers 503,
never a stale "yes".

``SessionStore`` also holds the refresh-token records (``services.refresh_records``) and
the sessions' assurance levels (``services.session_assurance``), each a mixin of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services import metrics
from services import session_keys as keys
from services.invalidation import InvalidationCache
from services.invalidation import UserState as UserState  # re-exported: app.authz uses it
from services.redis_call import as_text, redis_call
from services.redis_client import Call, Durable, RedisClient
from services.refresh_records import RefreshRecords
from services.session_assurance import SessionAssurance
from services.tallies import Tally

_SESSION_HIT = Tally(metrics.TOKEN_CACHE.labels("session_hit"))
_SESSION_MISS = Tally(metrics.TOKEN_CACHE.labels("session_miss"))


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user_id: str
    created_at: float
    last_seen_at: float
    ip: str
    user_agent: str
    expires: float = 0.0

    def to_json(self, *, current_id: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "last_seen_at": _iso(self.last_seen_at),
            "ip": self.ip,
            "user_agent": self.user_agent,
            "current": self.id == current_id,
        }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class SessionStore(RefreshRecords, SessionAssurance, InvalidationCache):
    """Redis-backed sessions with an invalidation-coherent local cache."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        session_ttl: int,
        sessions_per_user: int = 100,
        cache_size: int = 50_000,
        stale_after: float = 3.0,
        ping_interval: float = 1.0,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 250,
    ) -> None:
        super().__init__(
            redis,
            channel=f"{prefix}invalidate",
            cache_size=cache_size,
            stale_after=stale_after,
            ping_interval=ping_interval,
        )
        self.prefix = prefix
        self.session_ttl = session_ttl
        self.sessions_per_user = sessions_per_user
        self.durable = Durable(redis, replica_acks=replica_acks, timeout_ms=replica_ack_timeout_ms)
        self._create = redis.register_script(keys.CREATE)
        self._touch = redis.register_script(keys.TOUCH)
        self._revoke = redis.register_script(keys.REVOKE)
        self._set_field = redis.register_script(keys.SET_USER_FIELD)
        self._retire = redis.register_script(keys.RETIRE)
        self._begin_rotation = redis.register_script(keys.BEGIN_ROTATION)
        self._end_rotation = redis.register_script(keys.END_ROTATION)
        self._set_assurance = redis.register_script(keys.SET_ASSURANCE)

    # -- the hot path ----------------------------------------------------------------

    def cached(self, sid: str, uid: str) -> tuple[bool, UserState] | None:
        """``lookup``'s answer from the cache while it is trusted, without awaiting (the
        hot path's probe); None when only Redis can tell."""
        if self.cache_trusted:
            owner = self._alive.get(sid)
            state = self._users.get(uid)
            if owner is not None and state is not None:
                _SESSION_HIT.n += 1
                return owner == uid, state
        return None

    async def lookup(self, sid: str, uid: str) -> tuple[bool, UserState]:
        """Whether the session is alive **and belongs to** ``uid``, and the user's state:
        from the cache while it is trusted, else from Redis (``RedisUnavailable`` if Redis
        is down). A token naming another user's session is refused as not alive."""
        found = self.cached(sid, uid)
        if found is not None:
            return found
        _SESSION_MISS.n += 1
        generation = self._generation
        # One key, one command: one round trip on every topology.
        value, nbf, banned = await redis_call(
            "session_check",
            self.redis.hmget(keys.user_key(self.prefix, uid), [sid, keys.NOT_BEFORE, keys.BANNED]),
        )
        alive = value is not None and keys.parse_session(as_text(value))[0] > time.time()
        state = UserState(not_before=float(nbf or 0), banned=banned is not None)
        if generation == self._generation and self.cache_trusted:
            # Cached by session id with its owner ("" once gone), so a hit for another
            # user's id still answers "not yours".
            self._alive.put(sid, uid if alive else "")
            self._users.put(uid, state)
        return alive, state

    # -- writes ----------------------------------------------------------------------

    async def create(
        self, sid: str, uid: str, *, ip: str, user_agent: str, refresh_token: str | None = None
    ) -> list[str]:
        """Record a new session (and its refresh token, in the same round trip, when given);
        returns the ids of the user's least recently used sessions it ended to keep them
        within ``sessions_per_user`` (usually none)."""
        calls: list[Call] = [
            (
                self._create,
                [keys.user_key(self.prefix, uid)],
                [
                    self.session_ttl,
                    _clean(ip),
                    _clean(user_agent[:256]),
                    sid,
                    self.channel,
                    self.sessions_per_user,
                ],
            )
        ]
        if refresh_token is not None:
            calls.append(self._refresh_call(refresh_token, uid, sid))
        ended = (await redis_call("session_create", self.durable.run_all(calls)))[0]
        self._evict(f"s:{sid}")
        evicted = [as_text(item) for item in ended or ()]
        for old in evicted:
            self._evict(f"s:{old}")
        return evicted

    async def touch(self, sid: str, uid: str, *, ip: str | None = None) -> bool:
        """Mark a session used (on refresh) and extend its life; False if it is gone."""
        found = await redis_call(
            "session_touch",
            self._touch(
                keys=[keys.user_key(self.prefix, uid)],
                args=[self.session_ttl, _clean(ip or ""), sid],
            ),
        )
        return bool(found)

    async def get(self, sid: str, uid: str) -> SessionInfo | None:
        raw = await redis_call("session_get", self.redis.hget(keys.user_key(self.prefix, uid), sid))
        info = None if raw is None else _session_info(sid, uid, as_text(raw))
        return info if info is not None and info.expires > time.time() else None

    async def list_for_user(self, uid: str) -> list[SessionInfo]:
        raw = await redis_call("session_list", self.redis.hgetall(keys.user_key(self.prefix, uid)))
        now = time.time()
        found = []
        for field, value in raw.items():
            sid = as_text(field)
            if not sid.startswith("!"):
                info = _session_info(sid, uid, as_text(value))
                if info.expires > now:
                    found.append(info)
        return found

    async def revoke(self, uid: str, sids: Iterable[str]) -> None:
        ids = list(sids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            await redis_call(
                "session_revoke",
                self.durable.run(
                    self._revoke, [keys.user_key(self.prefix, uid)], [self.channel, *chunk]
                ),
            )
            # Read-your-writes here at once; other instances evict on the message.
            for sid in chunk:
                self._evict(f"s:{sid}")

    async def revoke_all(self, uid: str, *, keep: str | None = None) -> list[str]:
        """End every session of a user (but ``keep``); without ``keep``, also refuse every
        token issued until now, including ones this service never saw."""
        sessions = await self.list_for_user(uid)
        doomed = [s.id for s in sessions if s.id != keep]
        await self.revoke(uid, doomed)
        if keep is None:
            await self.set_not_before(uid, time.time())
        return doomed

    async def set_not_before(self, uid: str, when: float) -> None:
        # Token iat has one-second resolution; round up so a token from this very second
        # is refused too.
        await self._write_user("user_not_before", uid, keys.NOT_BEFORE, str(int(when) + 1))

    async def set_banned(self, uid: str, banned: bool) -> None:
        await self._write_user("user_ban", uid, keys.BANNED, "1" if banned else "")

    async def _write_user(self, operation: str, uid: str, field: str, value: str) -> None:
        args = [field, value, self.session_ttl, self.channel, f"u:{uid}"]
        key = keys.user_key(self.prefix, uid)
        await redis_call(operation, self.durable.run(self._set_field, [key], args))
        self._evict(f"u:{uid}")

    async def user_state(self, uid: str) -> UserState:
        nbf, banned = await redis_call(
            "user_state",
            self.redis.hmget(keys.user_key(self.prefix, uid), [keys.NOT_BEFORE, keys.BANNED]),
        )
        return UserState(not_before=float(nbf or 0), banned=banned is not None)


def _session_info(sid: str, uid: str, value: str) -> SessionInfo:
    expires, created, last, ip, agent = keys.parse_session(value)
    return SessionInfo(
        id=sid,
        user_id=uid,
        created_at=float(created),
        last_seen_at=float(last),
        ip=ip,
        user_agent=agent,
        expires=float(expires),
    )


def _clean(value: str) -> str:
    """Fields are "|"-separated; the user agent is last, but an IP never holds one."""
    return value.replace("|", "/")
