"""The in-process cache of "is this session alive" and user-state answers, kept coherent
by the invalidation channel; trusted only while the channel is provably working.

Every instance publishes its own numbered heartbeat every ``ping_interval`` through the
normal write path and trusts the cache only while its latest heartbeat came back through
its subscription within ``stale_after`` seconds. That holds on every topology (a
subscription left on a demoted Sentinel master, a cluster node cut off from the bus, a dead
socket all stop the heartbeats); a heartbeat that was published but never arrived means a
message may have been lost, and the cache is cleared. Messages: "s:SID", "u:UID", "*", and
heartbeats "hb:INSTANCE:N".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from redis.asyncio.cluster import RedisCluster

from services.redis_client import RedisClient

log = structlog.get_logger("services.sessions")
T = TypeVar("T")


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


class InvalidationCache:
    def __init__(
        self,
        redis: RedisClient,
        *,
        channel: str,
        cache_size: int,
        stale_after: float,
        ping_interval: float,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self._stale_after = stale_after
        self._ping_interval = ping_interval
        # Session id -> its owner's user id ("" once it is gone).
        self._alive: _Lru[str] = _Lru(cache_size)
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
        # Called with a user id when that user's state changed on any instance (None:
        # everything may have), so other per-user caches (services.principals) follow.
        self.user_listeners: list[Callable[[str | None], None]] = []

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
        for listener in self.user_listeners:
            listener(None)

    def _evict(self, item: str) -> None:
        self._generation += 1
        if item == "*":
            self._clear()
        elif item.startswith("s:"):
            self._alive.pop(item[2:], None)
        elif item.startswith("u:"):
            self._users.pop(item[2:], None)
            for listener in self.user_listeners:
                listener(item[2:])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
