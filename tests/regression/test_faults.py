"""Deadlock and fault scenarios against the real app (uvicorn) behind the fault proxy.

Bounds come from ``Limits`` (T = 2 s deadline, L = 8 threads at most, B = 2 s breaker, 5
failures to open; admission on its defaults): /health/live p99 < 150 ms during every storm
(probed from a separate process every 20 ms), every login answered before T + 1 s with 503
or 504 (never 500, never cut off), "upstream_busy" sheds within T / 2 + 1 s, threads <=
baseline + L + 8, and after recovery a first success within B + T + 2 s and >= 99 % of the
next 96 logins succeeding. The storms are scaled from the incident's 20 s to 5 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import app_env
from tests.regression.harness import (
    Limits,
    fault_violations,
    login,
    new_client,
    run_storm,
    success_ratio,
    wait_for_first_success,
)
from tests.support.appserver import AppServer, run_app
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.regression, pytest.mark.timeout(240)]

STORM_CLIENTS = 200
STORM_SECONDS = 5.0


async def _recovers(app: AppServer, users: list[tuple[str, str]], limits: Limits) -> None:
    took = await wait_for_first_success(
        app.url, users[0], within=limits.breaker_open + limits.deadline + 2
    )
    print(f"first success {took:.2f}s after recovery")
    ratio, statuses = await success_ratio(app.url, users, clients=limits.pool_size, rounds=12)
    print(f"after recovery {dict(statuses)}")
    assert ratio >= 0.99, statuses


async def test_baseline_200_concurrent_logins_succeed(
    localauth: LocalAuth,
    proxy: FaultProxy,
    redis_url: str,
    redis_prefix: str,
    users: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    """200 logins at once against a healthy upstream all succeed. localauth serves about
    165 logins/s on the 2-core reference machine, so this burst needs ~1.5 s of queueing;
    admission lets each call queue while it can still finish within its deadline, with no
    setting of its own (the fault scenarios below run the very same configuration)."""
    limits = Limits(deadline=5.0)
    env = app_env(localauth, redis_url, redis_prefix, **limits.env())
    env["SUPABASE_URL"] = proxy.url
    with run_app(env, tmp_path / "logs") as app:
        storm = await run_storm(
            app.url, app.pid, users, clients=STORM_CLIENTS, duration=0, once=True
        )
    print(f"baseline: {storm.summary()}")
    assert storm.statuses() == {200: STORM_CLIENTS}, storm.summary()
    assert storm.max_threads <= storm.baseline_threads + limits.pool_size + limits.thread_slack


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        pytest.param(Mode.HANG, {}, id="hang"),
        pytest.param(Mode.DRIP, {"drip_interval": 0.5}, id="drip"),
        pytest.param(Mode.RESET, {}, id="reset"),
    ],
)
async def test_upstream_fault_storm(
    fault_app: AppServer,
    proxy: FaultProxy,
    users: list[tuple[str, str]],
    limits: Limits,
    mode: Mode,
    options: dict[str, float],
) -> None:
    """200 clients log in back to back while the upstream hangs / drips / resets."""
    ratio, statuses = await success_ratio(fault_app.url, users, clients=limits.pool_size)
    assert ratio == 1, statuses  # warm: keep-alive connections exist and get hit too
    proxy.set_mode(mode, **options)
    storm = await run_storm(
        fault_app.url, fault_app.pid, users, clients=STORM_CLIENTS, duration=STORM_SECONDS
    )
    proxy.set_mode(Mode.PASS)
    print(f"{mode.value}: {storm.summary()}")
    violations = fault_violations(storm, limits)
    print(violations)
    assert violations == []
    assert storm.statuses()[504] + storm.statuses()[503] == len(storm.outcomes)
    await _recovers(fault_app, users, limits)


async def test_dead_upstream_opens_the_breaker_then_closes(
    fault_app: AppServer, proxy: FaultProxy, users: list[tuple[str, str]], limits: Limits
) -> None:
    proxy.set_mode(Mode.REFUSE)
    async with new_client(fault_app.url, 4) as client:
        failures = [await login(client, *users[0]) for _ in range(limits.breaker_threshold)]
        assert {o.status for o in failures} == {503}, failures
        fast = [await login(client, *users[0]) for _ in range(20)]
    print(
        "refused: first",
        [round(o.elapsed, 3) for o in failures],
        "open",
        [round(o.elapsed, 4) for o in fast[:5]],
    )
    assert {o.code for o in fast} == {"upstream_circuit_open"}, fast
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in fast)
    assert max(o.elapsed for o in fast) < 0.05, fast
    proxy.set_mode(Mode.PASS)
    await _recovers(fault_app, users, limits)


async def test_redis_outage_gives_503_and_recovers(
    localauth: LocalAuth,
    proxy: FaultProxy,
    own_redis: RedisServer,
    users: list[tuple[str, str]],
    limits: Limits,
    tmp_path: Path,
) -> None:
    env = app_env(localauth, own_redis.url, "sgreg:", **limits.env())
    env["SUPABASE_URL"] = proxy.url
    with run_app(env, tmp_path / "logs") as app:
        ratio, statuses = await success_ratio(app.url, users, clients=limits.pool_size)
        assert ratio == 1, statuses
        own_redis.stop()
        storm = await run_storm(app.url, app.pid, users, clients=50, duration=3.0)
        print(f"redis down: {storm.summary()}")
        assert set(storm.statuses()) == {503}, storm.summary()
        assert fault_violations(storm, limits) == []
        own_redis.start()
        await _recovers(app, users, limits)


async def test_client_disconnects_free_their_slots(
    fault_app: AppServer, proxy: FaultProxy, users: list[tuple[str, str]], limits: Limits
) -> None:
    """Clients hang up after 0.5 s while the upstream hangs; the slots come back."""
    proxy.set_mode(Mode.HANG)
    storm = await run_storm(
        fault_app.url,
        fault_app.pid,
        users,
        clients=4 * limits.pool_size,
        duration=3.0,
        give_up_after=0.5,
    )
    print(f"disconnects: {storm.summary()}")
    assert storm.max_threads <= storm.baseline_threads + limits.pool_size + limits.thread_slack
    proxy.set_mode(Mode.PASS)
    # Wait (bounded) for the first success (the hang's calls drain; every client here is
    # one address, so the breaker stays closed), then a full L at once must succeed.
    await wait_for_first_success(
        fault_app.url, users[0], within=limits.breaker_open + limits.deadline + 2
    )
    started = time.monotonic()
    ratio, statuses = await success_ratio(fault_app.url, users, clients=limits.pool_size)
    print(f"after disconnects: {dict(statuses)} in {time.monotonic() - started:.2f}s")
    assert ratio == 1, statuses
    await asyncio.sleep(0)
