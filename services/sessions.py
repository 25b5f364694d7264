"""Sessions, revocation and per-user state in Redis.

Keys (all under the configured prefix ``p``):

    p s:{sid}          hash: user_id, created_at, last_seen_at, ip, user_agent   (TTL: session)
    p u:{uid}:s        sorted set of the user's session ids by creation time      (TTL: session)
    p u:{uid}:nbf      "not before": tokens issued earlier are refused           (TTL: session)
    p u:{uid}:ban      present while the account is banned in this service
    p invalidate       pub/sub channel: "s:{sid}", "u:{uid}" or "*"

A session is alive exactly while its hash exists, so a lost Redis fails closed. Every
instance keeps a small in-process cache of these answers so an authenticated request costs
no Redis round trip; a writer publishes on ``invalidate`` after every change, and each
instance evicts on receipt. The cache is trusted only while the subscription is provably
alive (a message or a PONG within ``stale_after`` seconds); otherwise every check reads
Redis, and a Redis outage answers 503, never a stale "yes".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from services import errors, metrics

log = structlog.get_logger("services.sessions")
_SESSION_HIT = metrics.TOKEN_CACHE.labels("session_hit")
_SESSION_MISS = metrics.TOKEN_CACHE.labels("session_miss")
T = TypeVar("T")


async def redis_call(operation: str, awaitable: Awaitable[T]) -> T:
    """Await a Redis command, turning any Redis failure into a 503."""
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.labels(operation).inc()
        log.warning("redis_unavailable", operation=operation, error=type(exc).__name__)
        raise errors.RedisUnavailable(
            retry_after=1,
            debug=f"Redis failed during {operation}: {type(exc).__name__}; check REDIS_URL",
        ) from exc


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user_id: str
    created_at: float
    last_seen_at: float
    ip: str
    user_agent: str

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


@dataclass(frozen=True)
class UserState:
    not_before: float
    banned: bool


class _Lru(OrderedDict[str, T]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: T) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class SessionStore:
    """Redis-backed sessions with an invalidation-coherent local cache."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        session_ttl: int,
        cache_size: int = 50_000,
        stale_after: float = 3.0,
        ping_interval: float = 1.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.session_ttl = session_ttl
        self.channel = f"{prefix}invalidate"
        self._stale_after = stale_after
        self._ping_interval = ping_interval
        self._alive: _Lru[bool] = _Lru(cache_size)
        self._users: _Lru[UserState] = _Lru(cache_size)
        self._generation = 0
        self._subscribed = False
        self._last_heard = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    # -- keys ------------------------------------------------------------------------

    def _session_key(self, sid: str) -> str:
        return f"{self.prefix}s:{sid}"

    def _index_key(self, uid: str) -> str:
        return f"{self.prefix}u:{uid}:s"

    def _nbf_key(self, uid: str) -> str:
        return f"{self.prefix}u:{uid}:nbf"

    def _ban_key(self, uid: str) -> str:
        return f"{self.prefix}u:{uid}:ban"

    # -- the invalidation listener ---------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._listener = asyncio.create_task(self._listen(), name="session-invalidation")

    async def stop(self) -> None:
        task, self._listener = self._listener, None
        if task is None:
            return
        # redis-py's get_message(timeout=...) can swallow a cancellation, so the loop
        # also checks this flag; the wait is bounded either way.
        self._closing = True
        task.cancel()
        await asyncio.wait({task}, timeout=self._ping_interval * 2)
        self._distrust()

    @property
    def cache_trusted(self) -> bool:
        return self._subscribed and time.monotonic() - self._last_heard < self._stale_after

    async def _listen(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                async with self._subscription() as pubsub:
                    backoff = 0.05
                    await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Any failure: stop trusting the cache, then retry.
                if self._subscribed:
                    log.warning("redis_subscription_lost", error=type(exc).__name__)
                self._distrust()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[aioredis.client.PubSub]:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            yield pubsub
        finally:
            self._distrust()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _pump(self, pubsub: aioredis.client.PubSub) -> None:
        last_ping = 0.0
        while not self._closing:
            now = time.monotonic()
            if now - last_ping >= self._ping_interval:
                await pubsub.ping()
                last_ping = now
            message = await pubsub.get_message(timeout=self._ping_interval)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "subscribe":
                # Everything cached before this moment may have missed an invalidation.
                self._clear()
                self._subscribed = True
                log.info("redis_subscription_ready")
            elif kind == "message":
                self._evict(message["data"])
            self._last_heard = time.monotonic()

    def _distrust(self) -> None:
        self._subscribed = False
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._alive.clear()
        self._users.clear()

    def _evict(self, data: bytes | str) -> None:
        self._generation += 1
        item = data.decode() if isinstance(data, bytes) else data
        if item == "*":
            self._clear()
        elif item.startswith("s:"):
            self._alive.pop(item[2:], None)
        elif item.startswith("u:"):
            self._users.pop(item[2:], None)

    # -- the hot path ----------------------------------------------------------------

    async def lookup(self, sid: str, uid: str) -> tuple[bool, UserState]:
        """Whether the session is alive, and its user's state: from the cache while it is
        trusted, else from Redis (``RedisUnavailable`` if Redis is down)."""
        if self.cache_trusted:
            alive = self._alive.get(sid)
            state = self._users.get(uid)
            if alive is not None and state is not None:
                _SESSION_HIT.inc()
                return alive, state
        _SESSION_MISS.inc()
        generation = self._generation
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._session_key(sid))
            pipe.get(self._nbf_key(uid))
            pipe.exists(self._ban_key(uid))
            exists, nbf, banned = await redis_call("session_check", pipe.execute())
        alive = bool(exists)
        state = UserState(not_before=float(nbf or 0), banned=bool(banned))
        if generation == self._generation and self.cache_trusted:
            self._alive.put(sid, alive)
            self._users.put(uid, state)
        return alive, state

    # -- writes ----------------------------------------------------------------------

    async def create(self, sid: str, uid: str, *, ip: str, user_agent: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._session_key(sid),
                mapping={
                    "user_id": uid,
                    "created_at": now,
                    "last_seen_at": now,
                    "ip": ip,
                    "user_agent": user_agent[:256],
                },
            )
            pipe.expire(self._session_key(sid), self.session_ttl)
            pipe.zadd(self._index_key(uid), {sid: now})
            pipe.expire(self._index_key(uid), self.session_ttl)
            pipe.publish(self.channel, f"s:{sid}")
            await redis_call("session_create", pipe.execute())

    async def touch(self, sid: str, uid: str, *, ip: str | None = None) -> bool:
        """Mark a session used (on refresh) and extend its life; False if it is gone."""
        key = self._session_key(sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hset(key, "last_seen_at", time.time())
            if ip:
                pipe.hset(key, "ip", ip)
            pipe.expire(key, self.session_ttl)
            pipe.expire(self._index_key(uid), self.session_ttl)
            exists, *_ = await redis_call("session_touch", pipe.execute())
        if not exists:
            # hset just recreated a partial hash; remove it again.
            await redis_call("session_touch", self.redis.delete(key))
        return bool(exists)

    async def get(self, sid: str) -> SessionInfo | None:
        raw = await redis_call("session_get", self.redis.hgetall(self._session_key(sid)))
        return _session_info(sid, raw) if raw else None

    async def list_for_user(self, uid: str) -> list[SessionInfo]:
        sids = await redis_call("session_list", self.redis.zrange(self._index_key(uid), 0, -1))
        if not sids:
            return []
        ids: list[str] = [s.decode() if isinstance(s, bytes) else str(s) for s in sids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(self._session_key(sid))
            rows = await redis_call("session_list", pipe.execute())
        found = [_session_info(sid, raw) for sid, raw in zip(ids, rows, strict=True) if raw]
        gone = [sid for sid, raw in zip(ids, rows, strict=True) if not raw]
        if gone:
            await redis_call("session_list", self.redis.zrem(self._index_key(uid), *gone))
        return found

    async def revoke(self, uid: str, sids: Iterable[str]) -> None:
        ids = list(sids)
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._session_key(sid) for sid in ids))
            pipe.zrem(self._index_key(uid), *ids)
            for sid in ids:
                pipe.publish(self.channel, f"s:{sid}")
            await redis_call("session_revoke", pipe.execute())

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
        async with self.redis.pipeline(transaction=True) as pipe:
            # Token iat has one-second resolution; round up so a token from this very
            # second is refused too.
            pipe.set(self._nbf_key(uid), int(when) + 1, ex=self.session_ttl)
            pipe.publish(self.channel, f"u:{uid}")
            await redis_call("user_not_before", pipe.execute())

    async def set_banned(self, uid: str, banned: bool) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if banned:
                pipe.set(self._ban_key(uid), 1)
            else:
                pipe.delete(self._ban_key(uid))
            pipe.publish(self.channel, f"u:{uid}")
            await redis_call("user_ban", pipe.execute())

    async def user_state(self, uid: str) -> UserState:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._nbf_key(uid))
            pipe.exists(self._ban_key(uid))
            nbf, banned = await redis_call("user_state", pipe.execute())
        return UserState(not_before=float(nbf or 0), banned=bool(banned))

    # -- assurance level (MFA), recorded per session ------------------------------------

    async def set_assurance(self, sid: str, aal: str, factor_id: str | None) -> bool:
        """Record that the session reached ``aal`` (through ``factor_id``); False if the
        session is gone."""
        key = self._session_key(sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hset(key, mapping={"aal": aal, "factor_id": factor_id or ""})
            pipe.publish(self.channel, f"s:{sid}")
            exists, *_ = await redis_call("session_aal", pipe.execute())
        if not exists:
            await redis_call("session_aal", self.redis.delete(key))
        return bool(exists)

    async def assurance(self, sid: str) -> str:
        """The level this service recorded for the session: ``aal1`` unless an MFA
        verification through this service raised it (and no unenrolment lowered it)."""
        raw = await redis_call("session_aal", self.redis.hget(self._session_key(sid), "aal"))
        if raw is None:
            return "aal1"
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def assurances(self, uid: str) -> dict[str, tuple[str, str]]:
        """session id -> (aal, factor id) for every live session of the user."""
        sessions = await self.list_for_user(uid)
        if not sessions:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for info in sessions:
                pipe.hmget(self._session_key(info.id), ["aal", "factor_id"])
            rows = await redis_call("session_aal", pipe.execute())
        found: dict[str, tuple[str, str]] = {}
        for info, (aal, factor) in zip(sessions, rows, strict=True):
            found[info.id] = (_text(aal) or "aal1", _text(factor))
        return found

    async def lower_assurance(self, uid: str, factor_id: str) -> list[str]:
        """Sessions raised to aal2 by ``factor_id`` fall back to aal1 (the factor is gone)."""
        lowered = [
            sid
            for sid, (aal, factor) in (await self.assurances(uid)).items()
            if aal != "aal1" and factor == factor_id
        ]
        for sid in lowered:
            await self.set_assurance(sid, "aal1", None)
        return lowered


def _session_info(sid: str, raw: dict[Any, Any]) -> SessionInfo:
    data = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    return SessionInfo(
        id=sid,
        user_id=data.get("user_id", ""),
        created_at=float(data.get("created_at", 0)),
        last_seen_at=float(data.get("last_seen_at", 0)),
        ip=data.get("ip", ""),
        user_agent=data.get("user_agent", ""),
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
