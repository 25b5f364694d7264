"""A request's upstream calls end by its arrival plus the deadline (services/budget.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from services import budget, errors
from tests.unit.test_gateway import API, USER, USER_ID, Upstream, mock_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_calls_count_from_the_request_arrival_until_it_ends() -> None:
    async def request() -> tuple[float, asyncio.Task[float]]:
        opened = budget.opened()
        opened.arrived -= 2.0  # the request arrived 2 s ago
        inside = budget.call_deadline(5.0, time.monotonic())

        async def later() -> float:
            await closed.wait()
            return budget.call_deadline(5.0, time.monotonic()) - time.monotonic()

        task = asyncio.create_task(later())  # copies the request's context
        opened.open = False  # the edge closes the budget as the request ends
        closed.set()
        return inside - time.monotonic(), task

    closed = asyncio.Event()
    left, outliving = await asyncio.create_task(request())
    assert 2.9 < left < 3.01
    # Work that outlives its request is timed from its own calls again.
    assert 4.9 < await outliving <= 5.0
    # Outside any request: the whole deadline.
    assert 4.9 < budget.call_deadline(5.0, time.monotonic()) - time.monotonic() <= 5.0


async def test_an_upstream_call_gets_only_what_its_request_has_left() -> None:
    """The upstream answers in 0.5 s and the deadline is 1 s, but the request arrived
    0.8 s ago (a slow body, a busy loop, an earlier upstream call): 504 by the request's
    deadline, not 1 s after the call began."""

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.5)
        return httpx.Response(200, json=USER, headers=API)

    gateway = mock_gateway(Upstream(slow), deadline=1.0)
    try:
        await gateway.get_user(USER_ID)  # a fresh call has the whole second

        async def request() -> float:
            budget.opened().arrived -= 0.8
            started = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded):
                await gateway.get_user(USER_ID)
            return time.monotonic() - started

        assert await asyncio.create_task(request()) < 0.4
    finally:
        gateway.close()
