"""Awaiting Redis: a failed command becomes a 503 (``RedisUnavailable``), and a reply is read
as text."""

from __future__ import annotations

import os
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError

from services import errors, metrics
from services.redis_client import Call, Gate, RedisClient, run_together

# The sessions' logger: its events keep the name they are known by.
log = structlog.get_logger("services.sessions")
T = TypeVar("T")


async def redis_call(operation: str, awaitable: Awaitable[T]) -> T:
    """Await a Redis command, turning any Redis failure into a 503."""
    try:
        return await awaitable
    except (TypeError, AttributeError) as exc:
        if not _from_a_torn_down_socket(exc):
            raise
        metrics.REDIS_ERRORS.labels(operation).inc()
        log.warning("redis_unavailable", operation=operation, error=type(exc).__name__)
        raise errors.RedisUnavailable(
            retry_after=1, debug=f"Redis connection lost during {operation}"
        ) from exc
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.labels(operation).inc()
        log.warning("redis_unavailable", operation=operation, error=type(exc).__name__)
        raise errors.RedisUnavailable(
            retry_after=1,
            debug=f"Redis failed during {operation}: {type(exc).__name__}; "
            "check REDIS_URL and python -m app.diagnose",
        ) from exc


async def decide_alone(operation: str, gate: Gate) -> object:
    """Send one ``Gate`` on its own round trip and return its verdict."""
    script, keys, args = gate.call()
    return gate.decide(await redis_call(operation, script(keys=list(keys), args=list(args))))


async def gated(
    operation: str,
    client: RedisClient,
    call: Call,
    gates: Sequence[Gate],
    on_refusal: Callable[[Any], Awaitable[None]] | None = None,
) -> Any:
    """Run ``call`` with ``gates`` in one round trip (alone when there are none), decide
    the gates first, in order, and return the call's reply. A gate that refuses raises;
    ``on_refusal`` first undoes what the call's reply says it did."""
    script, keys, args = call
    if not gates:
        return await redis_call(operation, script(keys=list(keys), args=list(args)))
    *replies, own = await redis_call(
        operation, run_together(client, [*(gate.call() for gate in gates), call])
    )
    try:
        for gate, reply in zip(gates, replies, strict=True):
            gate.decide(reply)
    except BaseException:
        if on_refusal is not None:
            await on_refusal(own)
        raise
    return own


def _from_a_torn_down_socket(exc: BaseException) -> bool:
    """redis-py 8.1 lets a write on a connection the peer just closed (a node killed in a
    failover) escape as TypeError/AttributeError from the transport instead of
    ConnectionError (redis/redis-py#4287). Only errors raised inside redis-py or asyncio's
    transports count; our own bugs still surface."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1].filename if frames else ""
    return f"{os.sep}redis{os.sep}" in where or f"{os.sep}asyncio{os.sep}" in where


def as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
