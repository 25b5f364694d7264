"""Sessions, revocation, refresh-token records and per-user state in Redis.

The key layout and the scripts are in ``services.session_keys`` (one hash slot per user,
so it runs unchanged on a Redis Cluster). A session is alive exactly while its hash
exists, so a lost Redis fails closed. Every instance keeps a small in-process cache of
these answers so an authenticated request costs no Redis round trip; every write publishes
an invalidation from inside its script, and each instance evicts on receipt.

The cache is trusted only while the invalidation path is provably working end to end: each
instance publishes its own numbered heartbeat every ``ping_interval`` through the normal
write path and trusts the cache only while its latest heartbeat came back through its
subscription within ``stale_after`` seconds. That holds on every topology (a subscription
left on a demoted Sentinel master, a cluster node cut off from the bus, a dead socket all
stop the heartbeats); a heartbeat that was published but never arrived means a message may
have been lost, and the cache is cleared. Otherwise every check reads Redis, and a Redis
outage answers 503, never a stale "yes".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from services import errors, metrics
from services import session_keys as keys
from services.redis_client import Durable, RedisClient

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
            debug=f"Redis failed during {operation}: {type(exc).__name__}; "
            "check REDIS_URL and python -m app.diagnose",
        ) from exc


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


@dataclass(frozen=True)
class RefreshRecord:
    """What Redis knows of a refresh token: its session, and whether it was rotated."""

    uid: str
    sid: str
    used: bool


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
        redis: RedisClient,
        *,
        prefix: str,
        session_ttl: int,
        cache_size: int = 50_000,
        stale_after: float = 3.0,
        ping_interval: float = 1.0,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 250,
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
        self._beater: asyncio.Task[None] | None = None
        self._closing = False
        # Heartbeats: "hb:<this instance>:<n>"; the ones published and not yet heard back.
        self._instance = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._beat_prefix = f"hb:{self._instance}:"
        self._beat_seq = 0
        self._beats_pending: deque[int] = deque(maxlen=64)
        self._beat_published = 0.0
        self.subscription_error: str | None = None
        self.durable = Durable(redis, replica_acks=replica_acks, timeout_ms=replica_ack_timeout_ms)
        self._create = redis.register_script(keys.CREATE)
        self._touch = redis.register_script(keys.TOUCH)
        self._revoke = redis.register_script(keys.REVOKE)
        self._set_field = redis.register_script(keys.SET_USER_FIELD)
        self._retire = redis.register_script(keys.RETIRE)

    # -- the invalidation listener ---------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._listener = asyncio.create_task(self._listen(), name="session-invalidation")
        self._beater = asyncio.create_task(self._heartbeats(), name="session-heartbeat")
        # Bounded: a Redis that is down at start is reported by readiness, not waited for.
        deadline = time.monotonic() + 1.0
        while not self._subscribed and self.subscription_error is None:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        tasks = [t for t in (self._listener, self._beater) if t is not None]
        self._listener = self._beater = None
        if not tasks:
            return
        # redis-py's get_message(timeout=...) can swallow a cancellation, so the loop
        # also checks this flag; the wait is bounded either way.
        self._closing = True
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=self._ping_interval * 2)
        self._distrust()

    @property
    def cache_trusted(self) -> bool:
        return self._subscribed and time.monotonic() - self._last_heard < self._stale_after

    @property
    def subscription_active(self) -> bool:
        """The server confirmed the subscription (the cache is trusted once, in addition,
        this instance's own heartbeat comes back through it)."""
        return self._subscribed

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
                self.subscription_error = f"{type(exc).__name__}: {exc}"[:200]
                self._distrust()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[Any]:
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # The slot map picks the node to subscribe on.
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            yield pubsub
        finally:
            self._distrust()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _pump(self, pubsub: Any) -> None:
        subscribed_at = time.monotonic()
        while not self._closing:
            message = await pubsub.get_message(timeout=self._ping_interval)
            now = time.monotonic()
            if message is not None:
                kind = message.get("type")
                if kind == "subscribe":
                    # Everything cached before this moment may have missed an invalidation.
                    self._clear()
                    self._subscribed = True
                    self.subscription_error = None
                    subscribed_at = now
                    log.info("redis_subscription_ready")
                elif kind == "message":
                    self._on_message(_text(message["data"]))
                elif kind in ("unsubscribe", "sunsubscribe"):
                    raise ConnectionError("the server ended the subscription")
            # Our heartbeats are published but none comes back: this subscription is deaf
            # (a demoted master, a node cut off from the cluster bus). Subscribe anew.
            heard = max(self._last_heard, subscribed_at)
            if self._beat_published > heard and now - heard > 2 * self._stale_after:
                raise ConnectionError("own heartbeats do not arrive on this subscription")

    async def _heartbeats(self) -> None:
        while not self._closing:
            # Soon after (re)subscribing, so the cache is trusted within milliseconds.
            await asyncio.sleep(self._ping_interval if self.cache_trusted else 0.05)
            if not self._subscribed:
                continue
            self._beat_seq += 1
            seq = self._beat_seq
            self._beats_pending.append(seq)
            try:
                await self.redis.publish(self.channel, f"{self._beat_prefix}{seq}")
                self._beat_published = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # No master right now: trust simply runs out.
                with contextlib.suppress(ValueError):
                    self._beats_pending.remove(seq)
                log.debug("redis_heartbeat_failed", error=type(exc).__name__)

    def _on_message(self, item: str) -> None:
        if item.startswith("hb:"):
            if item.startswith(self._beat_prefix):
                self._heard_beat(int(item[len(self._beat_prefix) :]))
            return
        self._evict(item)

    def _heard_beat(self, seq: int) -> None:
        pending = self._beats_pending
        lost = False
        while pending and pending[0] < seq:
            pending.popleft()  # Published before this one and never heard: a gap.
            lost = True
        if pending and pending[0] == seq:
            pending.popleft()
        if lost:
            self._clear()
        self._last_heard = time.monotonic()

    def _distrust(self) -> None:
        self._subscribed = False
        self._last_heard = 0.0
        self._beats_pending.clear()
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._alive.clear()
        self._users.clear()

    def _evict(self, item: str) -> None:
        self._generation += 1
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
        # One key, one command: one round trip on every topology.
        value, nbf, banned = await redis_call(
            "session_check",
            self.redis.hmget(keys.user_key(self.prefix, uid), [sid, keys.NOT_BEFORE, keys.BANNED]),
        )
        alive = value is not None and keys.parse_session(_text(value))[0] > time.time()
        state = UserState(not_before=float(nbf or 0), banned=banned is not None)
        if generation == self._generation and self.cache_trusted:
            self._alive.put(sid, alive)
            self._users.put(uid, state)
        return alive, state

    # -- writes ----------------------------------------------------------------------

    async def create(self, sid: str, uid: str, *, ip: str, user_agent: str) -> None:
        await redis_call(
            "session_create",
            self.durable.run(
                self._create,
                [keys.user_key(self.prefix, uid)],
                [self.session_ttl, _clean(ip), _clean(user_agent[:256]), sid, self.channel],
            ),
        )
        self._evict(f"s:{sid}")

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
        info = None if raw is None else _session_info(sid, uid, _text(raw))
        return info if info is not None and info.expires > time.time() else None

    async def list_for_user(self, uid: str) -> list[SessionInfo]:
        raw = await redis_call("session_list", self.redis.hgetall(keys.user_key(self.prefix, uid)))
        now = time.time()
        found = []
        for field, value in raw.items():
            sid = _text(field)
            if not sid.startswith("!"):
                info = _session_info(sid, uid, _text(value))
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

    # -- refresh-token records -------------------------------------------------------

    def refresh_key(self, refresh_token: str) -> str:
        return keys.refresh_key(self.prefix, refresh_token)

    async def remember_refresh(self, refresh_token: str, uid: str, sid: str) -> None:
        await redis_call(
            "refresh",
            self.durable.write(self.refresh_key(refresh_token), f"{uid} {sid}", self.session_ttl),
        )

    async def refresh_record(self, refresh_token: str) -> RefreshRecord | None:
        raw = await redis_call("refresh", self.redis.get(self.refresh_key(refresh_token)))
        if raw is None:
            return None
        value = _text(raw)
        used = value.startswith("!")
        uid, _, sid = value.lstrip("!").partition(" ")
        return RefreshRecord(uid=uid, sid=sid, used=used)

    async def grace_answer(self, refresh_token: str) -> str | None:
        raw = await redis_call("refresh", self.redis.get(self.refresh_key(refresh_token) + ":g"))
        return None if raw is None else _text(raw)

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
