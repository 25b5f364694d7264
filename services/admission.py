"""Admission control for the Supabase gateway: who gets a worker thread now, who waits, who
is refused (see docs/deadlocks.md, "Admission").

``AdmissionController`` replaces a fixed-size bulkhead with a fixed wait by three things
(what it knows of the upstream, and the limit, are learnt by ``services.admission_model``):

* **an adaptive concurrency limit** (``services.admission_model``: the gradient rule of
  Netflix's concurrency-limits and Envoy's adaptive concurrency filter), never above
  ``max_concurrency`` (the thread bound);
* **deadline-aware queueing**: a call that finds no free slot waits while it can still
  finish within its deadline, predicted from the queue ahead of it and the observed
  throughput (Little's law: ``limit / service time``). Calls that can no longer make it are
  refused at once (on arrival) or as soon as the prediction says so (a timer re-checks the
  queue), never after a fixed timer. A call is sent only while it, and every call it
  joins in flight, is predicted to end in time; at the tail of a burst it waits for the
  calls in flight to thin out. When no answer has come back for a while the service-time
  estimate grows with that silence, so a hung upstream sheds within about half a deadline
  and calls arriving after that are refused in microseconds;
* **priorities**: ``CONTROL`` (refresh, logout) is always served before ``NORMAL`` (login,
  registration, admin) and may use a small reserve above the limit; ``PROBE`` (readiness)
  never waits. A standing queue (CoDel: the minimum queueing time over an interval stays
  above a target) switches ``NORMAL`` to newest-first (adaptive LIFO), so the oldest
  callers are the ones the deadline sheds and the served ones keep short waits.

It lives on the event loop only (never touched from worker threads), like the breaker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from services.admission_model import AdmissionConfig, UpstreamModel
from services.admission_types import Outcome, Priority, Shed, Ticket

__all__ = [
    "AdmissionConfig",
    "AdmissionController",
    "Outcome",
    "Priority",
    "Shed",
    "Ticket",
]


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    operation: str
    deadline: float
    enqueued: float
    future: asyncio.Future[None]
    ticket: Ticket | None = None  # the slot, once granted


class AdmissionController:
    def __init__(
        self,
        config: AdmissionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_shed: Callable[[str, Priority], None] | None = None,
    ) -> None:
        if not 1 <= config.min_limit <= config.max_concurrency:
            raise ValueError("min_limit must be between 1 and max_concurrency")
        self.config = config
        self._clock = clock
        self._on_shed = on_shed
        self._running: set[Ticket] = set()  # the tickets in flight (probes included)
        # The deadlines of the calls in flight (probes aside), earliest first; a released
        # ticket's entry is dropped when it reaches the top.
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._granted = 0
        # Slot-seconds held so far (the integral of in_flight over time): a call's mean
        # concurrency over its life is the growth of this over its duration.
        self._occupancy = 0.0
        self._occupancy_at = clock()
        self._queues: dict[Priority, collections.deque[_Waiter]] = {
            Priority.CONTROL: collections.deque(),
            Priority.NORMAL: collections.deque(),
        }
        self.model = UpstreamModel(config, clock())
        self._timer: asyncio.TimerHandle | None = None
        self._interval_started = clock()
        self._interval_min = math.inf
        self.lifo = False
        self.shed_counts: collections.Counter[str] = collections.Counter()

    # -- what readiness and metrics read ----------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now (probes and calls whose caller gave up included)."""
        return len(self._running)

    @property
    def limit(self) -> int:
        return int(self.model.limit)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued_by_priority(self) -> dict[str, int]:
        return {p.name.lower(): len(q) for p, q in self._queues.items()}

    def service_estimate(self, operation: str | None = None) -> float:
        """Predicted service time (seconds) of ``operation`` (or of any call) right now."""
        return self.model.estimate(operation, self._clock(), self.in_flight)

    # -- admission --------------------------------------------------------------------

    async def acquire(self, operation: str, priority: Priority, deadline: float) -> Ticket:
        """A slot for a call that must be over by ``deadline`` (monotonic), or ``Shed``."""
        now = self._clock()
        if (
            self._can_start(priority)
            and not self._waiting_before(priority)
            and (priority is Priority.PROBE or not self._crowds(now))
        ):
            expected = self._expected(operation)
            if priority is not Priority.PROBE and self._too_late(expected, deadline, now):
                raise self._shed(
                    "deadline",
                    priority,
                    f"{self.in_flight} calls already in flight finish first; "
                    f"{max(0.0, deadline - now):.2f}s left is too little",
                )
            return self._grant(operation, priority, now, deadline, expected, queued_for=0.0)
        if priority is Priority.PROBE:
            raise self._shed("busy", priority, "every upstream slot is busy; a probe never waits")
        if self.queued >= self.config.max_queue:
            raise self._shed("queue_full", priority, f"{self.queued} calls already wait")
        ahead = self._ahead_of_new(priority)
        predicted = self._predicted_finish(
            operation, ahead, now, behind=self.queued - ahead, work=self._work_in_flight(now)
        )
        if self._hopeless(predicted, deadline, now, self.config.arrival_margin):
            raise self._shed(
                "deadline",
                priority,
                f"predicted to finish {predicted - now:.2f}s from now, "
                f"{max(0.0, deadline - now):.2f}s left ({self._state(ahead)})",
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(priority, operation, deadline, now, loop.create_future())
        self._queues[priority].append(waiter)
        self._arm_timer(loop)
        try:
            # The hard bound: past this point even an idle upstream could not make it.
            noload = self.model.noload(operation)
            with anyio.fail_after(max(0.0, deadline - noload - self._clock())):
                await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted just as the wait ended: the slot goes to the next one.
                assert waiter.ticket is not None
                waiter.ticket.released = True
                self._advance(self._clock())
                self._running.discard(waiter.ticket)
                self._dispatch()
            else:
                self._remove(waiter)
                if not future.done():
                    future.cancel()
            if isinstance(exc, TimeoutError):
                raise self._shed("deadline", priority, "no slot came free in time") from None
            raise
        assert waiter.ticket is not None
        return waiter.ticket

    def mark_started(self, ticket: Ticket) -> None:
        """Called from the worker thread as the work begins (one float store, on the
        controller's own clock, which ``release`` measures against)."""
        ticket.started = self._clock()

    def release(self, ticket: Ticket, outcome: Outcome) -> None:
        """The call's thread ended (or never started); feeds the estimators once."""
        if ticket.released:
            return
        ticket.released = True
        now = self._clock()
        occupancy = self._advance(now)
        held = now - ticket.admitted
        # The calls in flight with this one, on average over its life.
        concurrency = (occupancy - ticket.occupancy) / held if held > 0 else self.in_flight
        self._running.discard(ticket)
        if ticket.started and outcome is Outcome.ANSWERED:
            self.model.learn(
                ticket.operation,
                now - ticket.started,
                now,
                concurrency=max(1.0, concurrency),
                in_flight=self.in_flight,
                queued=bool(self.queued),
            )
        elif ticket.started and outcome is Outcome.OVERLOAD:
            self.model.back_off()
        self._dispatch()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals --------------------------------------------------------------------

    def _capacity(self, priority: Priority) -> int:
        limit = self.limit
        if priority is Priority.CONTROL:
            limit += max(1, math.ceil(self.model.limit * self.config.control_reserve))
        return min(limit, self.config.max_concurrency)

    def _expected(self, operation: str) -> float:
        """The service time of a call given a free slot now (0: too little observed). On a
        CPU-bound upstream (bcrypt) a call sent behind ``in_flight`` others ends about
        ``in_flight + 1`` answers from now: with the limit still high from a lighter moment,
        a burst sent whole would end its tail in 504s. Judged only by an observed pace, the
        faster of it and the latest answers' per-slot time."""
        if not self.model.observed() or not self.in_flight:
            return 0.0
        gap = min(self.model.gap(), self.model.per_slot or math.inf)
        return self.model.service(operation, gap, self.in_flight + 1)

    def _grant(
        self,
        operation: str,
        priority: Priority,
        now: float,
        deadline: float,
        expected: float,
        *,
        queued_for: float,
    ) -> Ticket:
        ticket = Ticket(
            operation,
            priority,
            now,
            queued_for,
            occupancy=self._take_slot(now),
            expected=expected,
            deadline=deadline,
        )
        self._running.add(ticket)
        if priority is not Priority.PROBE:
            self._granted += 1
            heapq.heappush(self._deadlines, (deadline, self._granted, ticket))
        return ticket

    def _crowds(self, now: float) -> bool:
        """One more call in flight would make a call already sent end past its deadline
        (``UpstreamModel.crowded``): it waits instead of turning them into 504s. Every call
        in flight is looked at only when the earliest deadline among them is nearer than
        the longest call could take: an admission costs O(1) while deadlines are far."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].released:
            heapq.heappop(deadlines)
        if not deadlines:
            return False
        concurrency = self.in_flight + 1
        spare = 1 + self.config.dispatch_margin
        if now + self.model.longest(concurrency) * spare <= deadlines[0][0]:
            return False
        return self.model.crowded(
            (t for t in self._running if t.priority is not Priority.PROBE),
            now,
            concurrency,
            spare,
        )

    def _can_start(self, priority: Priority) -> bool:
        return self.in_flight < self._capacity(priority)

    def _waiting_before(self, priority: Priority) -> bool:
        return any(self._queues[p] for p in self._queues if p <= priority)

    def _ahead_of_new(self, priority: Priority) -> int:
        """Calls that would be served before a call arriving now at ``priority``."""
        higher = sum(len(self._queues[p]) for p in self._queues if p < priority)
        if priority is Priority.NORMAL and self.lifo:
            return higher
        return higher + len(self._queues[priority])

    def _too_late(self, service: float, deadline: float, now: float) -> bool:
        """Sent now, a call taking ``service`` would not end with the margin to spare."""
        return now + service * (1 + self.config.dispatch_margin) > deadline

    @staticmethod
    def _hopeless(predicted: float, deadline: float, now: float, margin: float) -> bool:
        """The prediction is a mean: a call is refused only when it overshoots the time
        left by more than ``margin`` of it (a refusal is final; a wait that turns out too
        long still ends at the deadline)."""
        return predicted - now > (deadline - now) * (1 + margin)

    def _work_in_flight(self, now: float) -> float:
        return self.model.work_left(
            (t for t in self._running if t.priority is not Priority.PROBE), now
        )

    def _predicted_finish(
        self, operation: str, ahead: int, now: float, *, behind: int, work: float
    ) -> float:
        return self.model.finish(
            operation, now, ahead=ahead, behind=behind, in_flight=self.in_flight, work=work
        )

    def _take_slot(self, now: float) -> float:
        """A call is about to take a slot at ``now`` (before its ticket joins those in
        flight): the slot-seconds integral at that moment."""
        if self.in_flight == 0:
            self.model.started_from_idle(now)
        self.model.validate(now, self.in_flight)
        return self._advance(now)

    def _advance(self, now: float) -> float:
        """The slot-seconds integral up to ``now`` (call before ``in_flight`` changes)."""
        self._occupancy += self.in_flight * (now - self._occupancy_at)
        self._occupancy_at = now
        return self._occupancy

    def _dispatch(self) -> None:
        now = self._clock()
        gap = self.model.gap()
        for priority in (Priority.CONTROL, Priority.NORMAL):
            queue = self._queues[priority]
            lifo = priority is Priority.NORMAL and self.lifo
            while queue and self._can_start(priority):
                waiter = queue[-1] if lifo else queue[0]
                if waiter.future.done():
                    _take(queue, lifo)
                    continue
                service = self.model.service(waiter.operation, gap, self.in_flight + 1)
                if self._too_late(service, waiter.deadline, now):
                    alone = self.model.service(waiter.operation, gap, 1)
                    if self.in_flight and not self._too_late(alone, waiter.deadline, now):
                        # On a CPU-bound upstream a call is slower the more run with it:
                        # it waits while the calls in flight thin out (the tail of a
                        # burst), and its deadline, or the re-check, ends the wait.
                        return
                    # Too late to finish: sent now, it would take an upstream slot (and
                    # its CPU) from a call that can, and end in a 504 anyway.
                    _take(queue, lifo)
                    waiter.future.set_exception(
                        self._shed(
                            "deadline",
                            priority,
                            f"a slot came free {max(0.0, waiter.deadline - now):.2f}s before "
                            f"the deadline, too little for the {service:.2f}s the call takes "
                            f"({self._state(0)})",
                        )
                    )
                    continue
                if self._crowds(now):
                    return  # sent now, it would push a call in flight past its deadline
                _take(queue, lifo)
                self._observe_sojourn(now - waiter.enqueued, now)
                waiter.ticket = self._grant(
                    waiter.operation,
                    priority,
                    now,
                    waiter.deadline,
                    service,
                    queued_for=now - waiter.enqueued,
                )
                waiter.future.set_result(None)
            if queue:
                return  # a higher class still waits: lower ones do not jump it
        if not self.queued:
            self.lifo = False

    def _observe_sojourn(self, sojourn: float, now: float) -> None:
        """CoDel's standing-queue test: the minimum queueing time over an interval."""
        self._interval_min = min(self._interval_min, sojourn)
        if now - self._interval_started >= self.config.codel_interval:
            self.lifo = self._interval_min > self.config.codel_target
            self._interval_min = math.inf
            self._interval_started = now

    def _remove(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queues[waiter.priority].remove(waiter)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(self.config.tick, self._on_tick, loop)

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Shed every queued call that the prediction says can no longer make it."""
        self._timer = None
        now = self._clock()
        ahead = 0
        behind = self.queued
        work = self._work_in_flight(now)
        for priority in (Priority.CONTROL, Priority.NORMAL):
            queue = self._queues[priority]
            order = reversed(queue) if priority is Priority.NORMAL and self.lifo else queue
            doomed: list[tuple[_Waiter, float, int]] = []
            for waiter in order:
                behind -= 1
                predicted = self._predicted_finish(
                    waiter.operation, ahead, now, behind=behind, work=work
                )
                if self._hopeless(predicted, waiter.deadline, now, self.config.shed_margin):
                    doomed.append((waiter, predicted, ahead))
                else:
                    ahead += 1
            for waiter, predicted, place in doomed:
                self._remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(
                        self._shed(
                            "deadline",
                            priority,
                            f"the queue moves too slowly: predicted to finish "
                            f"{predicted - now:.2f}s from now, "
                            f"{max(0.0, waiter.deadline - now):.2f}s left ({self._state(place)})",
                        )
                    )
        # The calls in flight have moved on: one that waits for them to make room may fit.
        self._dispatch()
        if self.queued:
            self._arm_timer(loop)

    def _state(self, ahead: int) -> str:
        """What a prediction was made from, for a refusal's detail."""
        return (
            f"{ahead} ahead, {self.in_flight} in flight, limit {self.limit}, "
            f"an answer every {self.model.gap():.3f}s"
        )

    def _shed(self, reason: str, priority: Priority, detail: str) -> Shed:
        self.shed_counts[reason] += 1
        if self._on_shed is not None:
            self._on_shed(reason, priority)
        return Shed(reason, detail)


def _take(queue: collections.deque[_Waiter], lifo: bool) -> _Waiter:
    return queue.pop() if lifo else queue.popleft()
