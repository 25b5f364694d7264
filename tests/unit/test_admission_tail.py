"""Admission at the end of a burst and under a burst that meets a service just started: the
calls in flight thin out, the deadline nears, and nothing observed says how fast the
upstream is unloaded. Driven directly, on a clock that moves only when the test moves it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import anyio
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

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PACE = 0.1  # seconds between answers of the CPU-bound upstream below, however many run


def clocked(limit: int) -> tuple[AdmissionController, list[float]]:
    now = [1000.0]
    config = AdmissionConfig(max_concurrency=limit, initial_limit=limit, min_limit=limit)
    return AdmissionController(config, clock=lambda: now[0]), now


def answer(admission: AdmissionController, ticket: Ticket) -> None:
    """``ticket``'s call answers now; it ran for as long as it held its slot."""
    ticket.started = ticket.admitted
    admission.release(ticket, Outcome.ANSWERED)


async def learn_cpu_bound(admission: AdmissionController, now: list[float]) -> None:
    """One call alone took ``PACE``; then, with calls queued, one answer came every
    ``PACE`` whatever the number in flight (a call takes ``in flight x PACE``): enough
    answers for the pace to be trusted."""
    alone = await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60)
    now[0] += PACE
    answer(admission, alone)
    in_flight = [
        await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600)
        for _ in range(admission.limit)
    ]

    async def wait() -> None:
        in_flight.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600))

    async with anyio.create_task_group() as group:
        for _ in range(24):
            group.start_soon(wait)
        await anyio.sleep(0.01)
        for _ in range(24):
            now[0] += PACE
            answer(admission, in_flight.pop(0))
            await anyio.sleep(0.001)
    while in_flight:
        now[0] += PACE
        answer(admission, in_flight.pop(0))
    assert admission.model.observed()
    assert admission.model.gap() == pytest.approx(PACE, rel=0.05)


async def test_a_burst_tail_waits_for_the_calls_in_flight_to_thin_out() -> None:
    """Eight calls in flight, one answer every 0.1 s: a call sent now would take 0.8 s.
    One waits with 0.85 s left: sent at the first free slot it would end past its
    deadline (a 504), so it is not sent then; but the calls in flight end together (a
    batch), and sent once they have, it takes 0.2 s. It is served, not refused."""
    admission, now = clocked(8)
    await learn_cpu_bound(admission, now)
    in_flight = [
        await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600) for _ in range(8)
    ]
    fate: list[str] = []

    async def wait() -> None:
        try:
            await admission.acquire("sign_in", Priority.NORMAL, now[0] + 0.85)
            fate.append("granted")
        except Shed as exc:
            fate.append(exc.reason)

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await anyio.sleep(0.01)
        assert admission.queued == 1
        now[0] += 0.05
        answer(admission, in_flight.pop(0))  # 7 left: sent now it would take 0.8 s
        await anyio.sleep(0.01)
        assert fate == [], "it waits for the batch to end"
        assert admission.queued == 1
        for ticket in in_flight[:-1]:  # the rest of the batch, all but one
            answer(admission, ticket)
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.01)
    assert fate == ["granted"]
    assert admission.in_flight == 2


async def test_a_call_that_cannot_make_it_even_alone_is_refused_at_once() -> None:
    """The same queue, but with 0.1 s left: not even an unloaded upstream answers in time,
    so waiting for room only makes the refusal late."""
    admission, now = clocked(8)
    await learn_cpu_bound(admission, now)
    in_flight = [
        await admission.acquire("sign_in", Priority.NORMAL, now[0] + 600) for _ in range(8)
    ]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                with pytest.raises(Shed):
                    await admission.acquire("sign_in", Priority.NORMAL, now[0] + 0.1)

            group.start_soon(wait)
            await anyio.sleep(0.01)
            answer(admission, in_flight.pop(0))
    assert admission.shed_counts["deadline"] == 1
    for ticket in in_flight:
        admission.release(ticket, Outcome.NONE)


async def test_a_call_is_not_sent_when_it_would_push_the_calls_in_flight_past_theirs() -> None:
    """Four calls in flight must end within 0.5 s: at one answer every 0.1 s, four at once
    take 0.4 s and fit, five would take 0.5 s and, with the margin a mean needs, do not.
    A fifth call with all the time in the world finds a free slot: sent now, it would turn
    those four into 504s; it waits until they are answered, then goes."""
    admission, now = clocked(8)
    await learn_cpu_bound(admission, now)
    tight = [await admission.acquire("sign_in", Priority.NORMAL, now[0] + 0.5) for _ in range(4)]
    granted: list[Ticket] = []

    async def patient() -> None:
        granted.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 60))

    async with anyio.create_task_group() as group:
        group.start_soon(patient)
        await anyio.sleep(0.01)
        assert (admission.in_flight, admission.queued) == (4, 1)
        now[0] += 0.4
        for ticket in tight:
            answer(admission, ticket)
        await anyio.sleep(0.01)
    assert len(granted) == 1
    assert admission.in_flight == 1
    admission.release(granted[0], Outcome.NONE)


async def test_a_probe_is_never_held_back_by_the_calls_in_flight() -> None:
    admission, now = clocked(8)
    await learn_cpu_bound(admission, now)
    held = [await admission.acquire("sign_in", Priority.NORMAL, now[0] + 0.5) for _ in range(4)]
    probe = await admission.acquire("health", Priority.PROBE, now[0] + 1)
    assert admission.in_flight == 5
    for ticket in (*held, probe):
        admission.release(ticket, Outcome.NONE)


async def run_burst(latency_bound: bool, answers: int = 400, *, jitter: float = 0.0) -> int:
    """A burst meets a controller that has never seen a call alone (a service just
    started): a queue that never empties, answered either by a CPU-bound upstream (a pool
    of 16 threads sharing one core: every second, the 16 oldest calls it holds answer
    together, whatever the number in flight) or a latency-bound one (every call takes
    0.2 s). ``jitter``: every third batch of the CPU-bound upstream comes that much early
    (a shared core: its calls look a little faster than the unloaded ones, with more in
    flight). Returns the limit at the end."""
    now = [1000.0]
    config = AdmissionConfig(max_concurrency=256, initial_limit=16, min_limit=16)
    admission = AdmissionController(config, clock=lambda: now[0])
    in_flight: list[Ticket] = []

    async def wait() -> None:
        with contextlib.suppress(Shed):
            in_flight.append(await admission.acquire("sign_in", Priority.NORMAL, now[0] + 1e6))

    async with anyio.create_task_group() as group:
        for _ in range(answers + 300):
            group.start_soon(wait)
        await anyio.sleep(0.05)
        done = 0
        while done < answers:
            if latency_bound:
                now[0] += 0.01
                due = [t for t in in_flight if now[0] - t.admitted >= 0.2]
            else:
                now[0] += 1.0 - (jitter if done % 48 == 32 else 0.0)
                due = in_flight[:16]
            for ticket in due:
                in_flight.remove(ticket)
                answer(admission, ticket)
                done += 1
            await anyio.sleep(0.001)
        group.cancel_scope.cancel()
    return admission.limit


async def test_a_cpu_bound_upstream_met_cold_keeps_the_limit_where_it_started() -> None:
    """Its calls take longer the more are sent (no more answers a second), so the limit
    must not grow: every call above the upstream's own parallelism only queues there, and
    the service times the deadline is judged by stop holding. Learnt under load, the
    no-load time is the loaded one, and the tolerance alone would let the limit double."""
    assert await run_burst(latency_bound=False) <= 24


async def test_a_cpu_bound_upstream_that_looks_a_little_faster_under_load_still_holds() -> None:
    """Some batches come a little early, so the fastest call was seen with more calls in
    flight than the first ones ran with; and the probing overshoots before the first
    answers say anything. Neither may lift the limit: calls as fast within noise are judged
    at the concurrency the first of them ran at, and once more calls bring no more answers
    the limit comes back to what the upstream keeps busy with (Little's law), rather than
    holding where it overshot."""
    assert await run_burst(latency_bound=False, jitter=0.03) <= 24


async def test_a_latency_bound_upstream_met_cold_gets_the_limit_its_calls_need() -> None:
    """Every call takes 0.2 s however many run: more at once is more answers a second,
    and the limit grows towards what the queue needs (Little's law)."""
    assert await run_burst(latency_bound=True) >= 64


def test_the_no_load_time_stays_with_the_fewest_calls_that_earned_it() -> None:
    """A call as fast as the fastest within noise, seen with more calls at once, keeps the
    minimum's concurrency (and lowers its value); a clearly faster one replaces both."""
    from services.admission_model import _WindowMin

    window = _WindowMin(30.0)
    window.add(1.00, 0.0, concurrency=16, pace=0.0625)
    window.add(0.98, 1.0, concurrency=29, pace=0.034)
    assert window.value() == 0.98
    assert window.seen_with() == (16, 0.0625)
    window.add(0.50, 2.0, concurrency=4, pace=0.125)
    assert (window.value(), window.seen_with()) == (0.50, (4, 0.125))
    window.add(0.40, 3.0, concurrency=20, pace=0.02)  # 20 % faster: a new minimum
    assert (window.value(), window.seen_with()) == (0.40, (20, 0.02))


class SharedCore:
    """A CPU-bound upstream as a pool of bcrypt threads is one: ``threads`` workers on one
    core, first come first served; a call needs about ``work`` seconds of the core alone
    (within 2 %, so the calls of a batch do not all end at the same instant), and the
    calls holding a worker share the core equally."""

    def __init__(self, threads: int = 16) -> None:
        self.threads = threads
        self.calls: list[tuple[list[float], Callable[[float], None]]] = []
        self._submitted = 0

    def submit(self, work: float, done: Callable[[float], None]) -> None:
        self._submitted += 1
        spread = 1 + 0.01 * ((self._submitted * 7) % 5 - 2)
        self.calls.append(([work * spread], done))

    def advance(self, step: float, now: float) -> None:
        running = self.calls[: self.threads]
        for left, _ in running:
            left[0] -= step / len(running)
        for call in [c for c in running if c[0][0] <= 1e-9]:
            self.calls.remove(call)
            call[1](now)


WORK, STEP, HOP, DEADLINE = 0.075, 0.005, 0.01, 5.0


def served_alone(burst: int) -> int:
    """Calls of a burst sent straight at the upstream that it answers within the deadline."""
    upstream, now = SharedCore(), 0.0
    answered: list[float] = []
    for _ in range(burst):
        upstream.submit(WORK, answered.append)
    while upstream.calls and now < DEADLINE:
        now += STEP
        upstream.advance(STEP, now)
    return sum(1 for at in answered if at <= DEADLINE + 1e-9)


async def burst_through(admission: AdmissionController, now: list[float], burst: int) -> list[str]:
    """A burst through the controller on the simulated clock, an ``HOP`` each way between
    it and the upstream; every call's fate: served in time, late (a 504) or refused."""
    upstream = SharedCore()
    events: list[tuple[float, Callable[[float], None]]] = []
    start, fates = now[0], []

    async def login() -> None:
        try:
            ticket = await admission.acquire("sign_in", Priority.NORMAL, start + DEADLINE)
        except Shed:
            fates.append("refused")
            return
        ticket.started = now[0]

        def back(at: float) -> None:
            admission.release(ticket, Outcome.ANSWERED)
            fates.append("served" if at - start <= DEADLINE else "late")

        def answered(at: float) -> None:
            events.append((at + HOP, back))

        events.append((now[0] + HOP, lambda _at: upstream.submit(WORK, answered)))

    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as group:
        for _ in range(burst):
            group.start_soon(login)
        await anyio.sleep(0.01)
        next_tick = now[0] + admission.config.tick
        while len(fates) < burst:
            now[0] += STEP
            upstream.advance(STEP, now[0])
            for event in [e for e in events if e[0] <= now[0] + 1e-9]:
                events.remove(event)
                event[1](now[0])
            if now[0] >= next_tick:  # the re-check, on the simulated clock
                admission._on_tick(loop)
                next_tick = now[0] + admission.config.tick
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
    return fates


@pytest.mark.parametrize("burst", [50, 100, 200])
async def test_a_burst_at_a_cpu_bound_upstream_is_served_as_the_upstream_alone_would(
    burst: int,
) -> None:
    """Bursts of distinct logins at a pool of 16 bcrypt threads on one core, three in a
    row on the app's defaults (the first met cold): each is served about as well as the
    upstream alone serves it within the deadline, and no call the app sends ends past
    it. The probing limit may not overshoot on a batch of answers that come together
    (a 504 for every call it lets queue inside the upstream), and the tail of the queue
    is judged by the work still ahead of it, not as if the full limit ran with it."""
    now = [1000.0]
    admission = AdmissionController(AdmissionConfig(), clock=lambda: now[0])
    alone = served_alone(burst)
    for _ in range(3):
        fates = await burst_through(admission, now, burst)
        assert fates.count("late") == 0
        assert fates.count("served") >= 0.95 * alone
        now[0] += 8.0
