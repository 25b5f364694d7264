"""A sign-in's two records (the session and its refresh token) are written in one round
trip, and that single write keeps every guarantee of the separate ones: it survives a
server that lost its scripts (a restart, a promoted replica) and is never acknowledged
when the required replicas did not confirm it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services import errors
from services.sessions import SessionStore
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def client(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(own_redis.url)
    yield redis
    await redis.aclose()


async def test_a_sign_in_is_recorded_whole_on_a_server_that_lost_its_scripts(
    client: aioredis.Redis,
) -> None:
    store = SessionStore(client, prefix="dw:", session_ttl=3600)
    # A fresh server has never seen the scripts: the first write loads them itself.
    await store.create("s1", "u1", ip="203.0.113.1", user_agent="ua", refresh_token="rt-1")
    await client.script_flush()  # what a restarted or promoted server looks like
    await store.create("s2", "u1", ip="203.0.113.1", user_agent="ua", refresh_token="rt-2")
    for sid, token in (("s1", "rt-1"), ("s2", "rt-2")):
        assert (await store.lookup(sid, "u1"))[0] is True
        record = await store.refresh_record(token)
        assert record is not None
        assert (record.uid, record.sid, record.used) == ("u1", sid, False)


async def test_a_sign_in_the_replicas_did_not_confirm_is_refused(
    client: aioredis.Redis,
) -> None:
    # No replica will ever confirm: the write must not be acknowledged (a 503, retryable).
    store = SessionStore(
        client, prefix="dw:", session_ttl=3600, replica_acks=1, replica_ack_timeout_ms=20
    )
    with pytest.raises(errors.RedisUnavailable):
        await store.create("s1", "u1", ip="203.0.113.1", user_agent="ua", refresh_token="rt-1")
