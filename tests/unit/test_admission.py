"""The admission controller's rules, driven directly (no threads, no upstream)."""

from __future__ import annotations

import time

import anyio
import pytest

from services.admission import AdmissionConfig, AdmissionController, Outcome, Priority, Shed

pytestmark = pytest.mark.anyio


def controller(**overrides: object) -> AdmissionController:
    values: dict[str, object] = {"max_concurrency": 64, "initial_limit": 8, "min_limit": 2}
    values.update(overrides)
    return AdmissionController(AdmissionConfig(**values))  # type: ignore[arg-type]


async def serve(admission: AdmissionController, seconds: float, *, count: int) -> None:
    """``count`` calls that each took ``seconds`` of service, run at the full limit."""
    for _ in range(count):
        tickets = [
            await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60)
            for _ in range(admission.limit)
        ]
        for ticket in tickets:
            ticket.started = time.monotonic() - seconds
            admission.release(ticket, Outcome.ANSWERED)


async def test_limit_grows_while_calls_stay_as_fast_as_unloaded() -> None:
    """A latency-bound upstream (every call 0.2 s however many run): the limit climbs
    towards the thread bound, as Little's law asks."""
    admission = controller()
    await serve(admission, 0.2, count=40)
    assert admission.limit >= 48


async def test_limit_shrinks_when_calls_slow_down_and_on_timeouts() -> None:
    """Calls taking 4x their no-load time pull the limit down; timeouts cut it further,
    never below min_limit."""
    admission = controller(initial_limit=32)
    await serve(admission, 0.05, count=2)
    high = admission.limit
    await serve(admission, 0.2, count=20)
    assert admission.limit < high / 2
    for _ in range(50):
        ticket = await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60)
        ticket.started = time.monotonic() - 1
        admission.release(ticket, Outcome.OVERLOAD)
    assert admission.limit == 2


async def test_probe_never_waits_and_control_has_a_reserve() -> None:
    """At the limit, a probe is refused at once; a refresh still gets a reserved slot."""
    admission = controller(initial_limit=4)
    held = [
        await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60) for _ in range(4)
    ]
    with pytest.raises(Shed) as caught:
        await admission.acquire("health", Priority.PROBE, time.monotonic() + 60)
    assert caught.value.reason == "busy"
    control = await admission.acquire("refresh", Priority.CONTROL, time.monotonic() + 60)
    assert admission.in_flight == 5
    for ticket in [*held, control]:
        admission.release(ticket, Outcome.NONE)
    assert admission.in_flight == 0
    assert admission.shed_counts == {"busy": 1}


async def test_a_queued_call_is_granted_in_priority_order() -> None:
    """Waiting logins and a waiting refresh: the freed slot goes to the refresh."""
    admission = controller(initial_limit=2, min_limit=1, control_reserve=0.0)
    # control_reserve 0 still leaves one reserved slot: fill it too.
    held = [
        await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60) for _ in range(2)
    ]
    held.append(await admission.acquire("refresh", Priority.CONTROL, time.monotonic() + 60))
    order: list[str] = []

    async def wait(operation: str, priority: Priority) -> None:
        ticket = await admission.acquire(operation, priority, time.monotonic() + 60)
        order.append(operation)
        admission.release(ticket, Outcome.NONE)

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "sign_in", Priority.NORMAL)
        group.start_soon(wait, "sign_in", Priority.NORMAL)
        await anyio.sleep(0.01)
        group.start_soon(wait, "refresh", Priority.CONTROL)
        await anyio.sleep(0.01)
        assert admission.queued == 3
        admission.release(held.pop(), Outcome.NONE)
        await anyio.sleep(0.01)
        assert order == ["refresh"]
        for ticket in held:
            admission.release(ticket, Outcome.NONE)
    assert order == ["refresh", "sign_in", "sign_in"]
    assert admission.in_flight == 0


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    """A caller that goes away while queued takes no slot and leaves the queue."""
    admission = controller(initial_limit=2, min_limit=2)
    held = [
        await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60) for _ in range(2)
    ]
    with anyio.move_on_after(0.05):
        await admission.acquire("sign_in", Priority.NORMAL, time.monotonic() + 60)
    assert admission.queued == 0
    for ticket in held:
        admission.release(ticket, Outcome.NONE)
    assert admission.in_flight == 0
