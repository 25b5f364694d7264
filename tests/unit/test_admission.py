"""The admission controller's rules, driven directly (no threads, no upstream)."""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from services.admission import (
    AdmissionConfig,
    AdmissionController,
    Outcome,
    Priority,
    Shed,
    Ticket,
)

pytestmark = pytest.mark.anyio


def controller(**overrides: object) -> AdmissionController:
    values: dict[str, object] = {"max_concurrency": 64, "initial_limit": 8, "min_limit": 2}
    values.update(overrides)
    return AdmissionController(AdmissionConfig(**values))  # type: ignore[arg-type]


def clocked(**config: Any) -> tuple[AdmissionController, list[float]]:
    """A controller on a clock that moves only when the test moves ``now[0]``."""
    now = [1000.0]
    return AdmissionController(AdmissionConfig(**config), clock=lambda: now[0]), now


def answer(admission: AdmissionController, ticket: Ticket, now: list[float], took: float) -> None:
    """``ticket``'s call answers now, after ``took`` seconds of service."""
    ticket.started = now[0] - took
    admission.release(ticket, Outcome.ANSWERED)


async def answer_alone(admission: AdmissionController, now: list[float], took: float) -> None:
    """One call with nothing else in flight, answered after ``took`` seconds."""
    ticket = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
    now[0] += took
    answer(admission, ticket, now, took)


async def load(
    admission: AdmissionController, now: list[float], seconds: float, took: float = 0.2
) -> None:
    """Batches of calls at the full limit, each taking ``took``, for ``seconds``."""
    end = now[0] + seconds
    while now[0] < end:
        tickets = []
        while admission.in_flight < admission.limit:
            tickets.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60))
        now[0] += took
        for ticket in tickets:
            answer(admission, ticket, now, took)


async def test_limit_grows_while_calls_stay_as_fast_as_unloaded() -> None:
    """A latency-bound upstream (every call 0.2 s however many run): the limit climbs
    towards the thread bound, as Little's law asks, by at most the probing headroom over
    the concurrency the answering calls ran at: a limit is earned by calls that used it."""
    admission, now = clocked(max_concurrency=64, initial_limit=8, min_limit=2)
    grown = [admission.limit]
    for _ in range(15):
        await load(admission, now, 0.2)
        grown.append(admission.limit)
    assert grown[-1] >= 48
    assert all(b <= a * 1.25 + 1 for a, b in itertools.pairwise(grown))


async def test_limit_shrinks_when_calls_slow_down_and_on_timeouts() -> None:
    """Calls taking 4x their no-load time pull the limit down; timeouts cut it further,
    never below min_limit."""
    admission, now = clocked(max_concurrency=64, initial_limit=32, min_limit=2)
    await load(admission, now, 0.1, took=0.05)
    high = admission.limit
    await load(admission, now, 4.0, took=0.2)
    assert admission.limit < high / 2
    for _ in range(50):
        ticket = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
        ticket.started = now[0]
        now[0] += 1
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


async def test_a_queue_is_judged_at_the_concurrency_it_will_run_at() -> None:
    """A CPU-bound upstream (bcrypt: 2 cores, 50 ms of CPU a login) answers 40 logins/s
    however many run, and a call takes as long as the number in flight makes it. Service
    times learnt while 64 ran (1.6 s) must not refuse a later queue that runs 8 at a time
    (0.2 s each): at the observed 40 answers/s, the first ~192 of 260 queued logins finish
    within their 5 s (Little's law). A refusal is final, so only those predicted to end
    more than a quarter past it (the last ~18) are refused now; the rest wait for the slot
    that decides. Judged by the 1.6 s, only 186 would be kept."""
    now = [1000.0]
    admission = AdmissionController(
        AdmissionConfig(max_concurrency=64, initial_limit=64, min_limit=8), clock=lambda: now[0]
    )
    outstanding: list[Ticket] = []

    async def wait(deadline: float) -> None:
        with contextlib.suppress(Shed):
            outstanding.append(await admission.acquire("sign_in", Priority.NORMAL, deadline))

    async with anyio.create_task_group() as group:
        solo = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
        solo.started = now[0] - 0.05  # unloaded: 50 ms
        admission.release(solo, Outcome.ANSWERED)
        # The earlier, busier burst: 64 in flight, one answer every 25 ms, each 1.6 s.
        busy = [
            await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600) for _ in range(64)
        ]
        for _ in range(40):
            group.start_soon(wait, now[0] + 600)
        await anyio.sleep(0.01)
        for ticket in busy:
            now[0] += 0.025
            ticket.started = now[0] - 1.6
            admission.release(ticket, Outcome.ANSWERED)
        await anyio.sleep(0.01)
        while admission.in_flight:  # the rest time out: the limit falls to its floor
            ticket = outstanding.pop()
            ticket.started = now[0] - 1.6
            admission.release(ticket, Outcome.OVERLOAD)
            await anyio.lowlevel.checkpoint()
        while admission.limit > 8:
            ticket = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
            ticket.started = now[0] - 1.6
            admission.release(ticket, Outcome.OVERLOAD)
        assert admission.limit == 8
        assert admission.service_estimate("sign_in") > 1.0  # the smoothed time is the old one
        # The new burst: 8 run, 260 queue with 5 s each.
        held = [await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60) for _ in range(8)]
        for _ in range(260):
            group.start_soon(wait, now[0] + 5.0)
        await anyio.sleep(0.2)  # a few re-checks (the clock stands still)
        assert admission.shed_counts["deadline"] > 0, "the tail that cannot make it is refused"
        assert 236 <= admission.queued <= 246, admission.queued
        group.cancel_scope.cancel()
    for ticket in held:
        admission.release(ticket, Outcome.NONE)


class _Clumped:
    """A controller on a standing clock, 8 slots, that has learnt an unloaded pace of one
    answer every 50 ms (8 in flight, 0.4 s each), with 8 calls in flight and 80 queued
    with 5 s each: 80 x 50 ms + 0.4 s, so all of them fit."""

    def __init__(self) -> None:
        self.now = [1000.0]
        self.admission = AdmissionController(
            AdmissionConfig(max_concurrency=8, initial_limit=8, min_limit=8),
            clock=lambda: self.now[0],
        )
        self.in_flight: list[Ticket] = []

    async def start(self, group: anyio.abc.TaskGroup) -> None:
        admission = self.admission
        learnt = [await admission.acquire("sign_in", Priority.NORMAL, 1e9) for _ in range(8)]
        self.now[0] += 0.4
        for ticket in learnt:
            self._answer(ticket)
        for _ in range(8):
            self.in_flight.append(await admission.acquire("sign_in", Priority.NORMAL, 1e9))
        for _ in range(80):
            group.start_soon(self._wait)
        await anyio.sleep(0.01)
        assert admission.queued == 80

    async def _wait(self) -> None:
        with contextlib.suppress(Shed):
            ticket = await self.admission.acquire("sign_in", Priority.NORMAL, self.now[0] + 5.0)
            self.in_flight.append(ticket)

    def _answer(self, ticket: Ticket) -> None:
        ticket.started = ticket.admitted  # it ran for as long as it held its slot
        self.admission.release(ticket, Outcome.ANSWERED)

    async def answer_after(self, pause: float) -> None:
        """The oldest call in flight answers ``pause`` seconds after the last answer."""
        self.now[0] += pause
        self._answer(self.in_flight.pop(0))
        await anyio.lowlevel.checkpoint()  # the granted waiter takes its slot


async def test_a_few_intervals_between_clumped_answers_shed_nothing() -> None:
    """A pool of bcrypt threads answers in clumps: intervals of 1 ms, 1 ms and 0.6 s
    average 0.2 s, four times the real pace. Judged by them, most of a queue that fits
    its deadline would be refused, and a refusal is final."""
    clumped = _Clumped()
    async with anyio.create_task_group() as group:
        await clumped.start(group)
        for pause in (0.0, 0.001, 0.001, 0.6):
            await clumped.answer_after(pause)
        await anyio.sleep(0.2)  # a few re-checks of the queue
        assert clumped.admission.shed_counts["deadline"] == 0
        group.cancel_scope.cancel()


async def test_enough_intervals_that_agree_are_trusted() -> None:
    """Seventeen answers 0.2 s apart: the queue really moves at 5 answers/s, so the calls
    queued deepest cannot finish in their 5 s and are refused now, not at the deadline."""
    clumped = _Clumped()
    async with anyio.create_task_group() as group:
        await clumped.start(group)
        for _ in range(17):
            await clumped.answer_after(0.2)
        await anyio.sleep(0.2)
        assert clumped.admission.shed_counts["deadline"] >= 30, clumped.admission.shed_counts
        group.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("short", "fate"),
    [
        pytest.param(3.0, "deadline", id="0.5s-left"),
        # The held call's 2.5 s brings the estimate to 1.3 s. Predicted to end 0.1 s
        # inside its deadline is a mean, not a promise (a little host noise and it is a
        # 504), so it is not sent either; with a tenth of its time to spare, it is.
        pytest.param(3.9, "deadline", id="1.4s-left"),
        pytest.param(4.0, "granted", id="1.5s-left"),
    ],
)
async def test_a_call_whose_slot_comes_too_late_is_refused_not_sent(
    short: float, fate: str
) -> None:
    """Calls take 1 s. One waits with ``short`` seconds left, another with 10 s; the only
    slot comes free 2.5 s later. Sent then with too little time to spare, the first would
    end in a 504 and spend an upstream slot (and its CPU) that the second can use: it is
    refused, the second is served."""
    admission, now = clocked(max_concurrency=1, initial_limit=1, min_limit=1)
    await answer_alone(admission, now, 1.0)
    held = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
    held.started = now[0]
    outcomes: dict[str, str] = {}

    async def wait(name: str, seconds: float) -> None:
        try:
            await admission.acquire("sign_in", Priority.NORMAL, now[0] + seconds)
            outcomes[name] = "granted"
        except Shed as exc:
            outcomes[name] = exc.reason

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "short", short)
        await anyio.sleep(0.01)
        group.start_soon(wait, "long", 10.0)
        await anyio.sleep(0.01)
        assert admission.queued == 2
        now[0] += 2.5  # no re-check runs between this and the release
        admission.release(held, Outcome.ANSWERED)
        await anyio.sleep(0.01)
        group.cancel_scope.cancel()  # the long one, if it still waits
    if fate == "granted":
        assert outcomes == {"short": "granted"}
    else:
        assert outcomes == {"short": fate, "long": "granted"}
    assert admission.in_flight == 1


async def test_a_free_slot_behind_a_long_upstream_queue_is_not_taken_too_late() -> None:
    """A CPU-bound upstream answers every 0.1 s whatever the number in flight. With 30
    calls already sent (the limit still high from a lighter moment), a new one would end
    about 3.1 s from now: with 2 s left it is refused at once rather than sent into a
    504; with 10 s left it is sent."""
    admission, now = clocked(max_concurrency=32, initial_limit=32, min_limit=32)
    in_flight: list[Ticket] = []

    async def wait() -> None:
        with contextlib.suppress(Shed):
            in_flight.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600))

    async with anyio.create_task_group() as group:
        for _ in range(32):
            in_flight.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600))
        for _ in range(20):
            group.start_soon(wait)
        await anyio.sleep(0.01)
        for _ in range(18):  # one answer every 0.1 s, each call 3.2 s (32 in flight)
            now[0] += 0.1
            answer(admission, in_flight.pop(0), now, 3.2)
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    while len(in_flight) > 30:
        now[0] += 0.1
        answer(admission, in_flight.pop(0), now, 3.2)
    assert (admission.in_flight, admission.limit) == (30, 32)
    with pytest.raises(Shed) as refused:
        await admission.acquire("sign_in", Priority.NORMAL, now[0] + 2.0)
    assert refused.value.reason == "deadline"
    sent = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 10.0)
    assert admission.in_flight == 31
    admission.release(sent, Outcome.NONE)


async def test_a_limit_left_unused_returns_to_where_it_started() -> None:
    """A limit earned by an earlier load is not trusted after a quiet spell (RFC 2861):
    a burst arriving then starts from the initial limit, not from every slot at once,
    and grows again as its own answers allow. A limit in use never decays."""
    admission, now = clocked(max_concurrency=64, initial_limit=8, min_limit=2)
    await load(admission, now, 3.0)
    earned = admission.limit
    assert earned >= 48
    await load(admission, now, 5.0)  # used all along: nothing decays
    assert admission.limit >= earned
    now[0] += 3.0  # three quiet half-lives
    first = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 5)
    assert admission.limit == 8
    admission.release(first, Outcome.NONE)


async def test_a_lone_call_does_not_make_a_burst_look_serial() -> None:
    """One call alone took 40 ms. Then 178 arrive at once with 8 slots: at 8 in flight a
    latency-bound upstream answers one every 5 ms, so all fit in 5 s. Judged by the lone
    call's 40 ms per answer, 170 calls ahead would need 7 s, and most of the burst was
    refused on arrival."""
    admission, now = clocked(max_concurrency=8, initial_limit=8, min_limit=8)
    await answer_alone(admission, now, 0.04)
    held = [await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60) for _ in range(8)]

    async def wait() -> None:
        with contextlib.suppress(Shed):
            await admission.acquire("sign_in", Priority.NORMAL, now[0] + 5.0)

    async with anyio.create_task_group() as group:
        for _ in range(170):
            group.start_soon(wait)
        await anyio.sleep(0.2)
        assert admission.queued == 170
        assert admission.shed_counts["deadline"] == 0
        group.cancel_scope.cancel()
    for ticket in held:
        admission.release(ticket, Outcome.NONE)
