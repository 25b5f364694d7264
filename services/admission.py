"""Admission control for the Supabase gateway: who gets a worker thread now, who waits, who
is refused (see docs/deadlocks.md, "Admission").

``AdmissionController`` replaces a fixed-size bulkhead with a fixed wait by three things:

* **an adaptive concurrency limit** (the gradient rule of Netflix's concurrency-limits and
  Envoy's adaptive concurrency filter): each answered call's service time, smoothed, is
  compared with the no-load service time of its operation (the minimum of the last
  ``noload_window`` seconds); ``gradient = clamp((tolerance * noload + slack) / rtt, 0.5,
  1)`` and
  ``limit = limit * gradient + sqrt(limit)``, smoothed. While the upstream answers about as
  fast as unloaded, the limit grows (as far as the calls need: Little's law); once calls
  take ``tolerance`` times longer, it shrinks. A timeout or transport failure cuts it by
  ``backoff``. The limit never exceeds ``max_concurrency`` (the thread bound);
* **deadline-aware queueing**: a call that finds no free slot waits while it can still
  finish within its deadline, predicted from the queue ahead of it and the observed
  throughput (Little's law: ``limit / service time``). Calls that can no longer make it are
  refused at once (on arrival) or as soon as the prediction says so (a timer re-checks the
  queue), never after a fixed timer. When no answered call has come back for a while the
  service-time estimate grows with that silence, so a hung upstream sheds within about half
  a deadline, and calls arriving after that are refused in microseconds;
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
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

__all__ = [
    "AdmissionConfig",
    "AdmissionController",
    "Outcome",
    "Priority",
    "Shed",
    "Ticket",
]


class Priority(enum.IntEnum):
    CONTROL = 0  # refresh, logout: never starved by a login storm
    NORMAL = 1  # login, registration, admin calls
    PROBE = 2  # readiness: admitted only when a slot is free now, never queued


class Outcome(enum.Enum):
    ANSWERED = "answered"  # the upstream answered (any status it meant): a latency sample
    OVERLOAD = "overload"  # a timeout or transport failure: the limit backs off
    NONE = "none"  # nothing learnt (cancelled before start, failed before sending)


class Shed(Exception):
    """The call was refused by admission; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AdmissionConfig:
    max_concurrency: int = 128  # the thread bound: calls in flight, abandoned ones included
    initial_limit: int = 16
    min_limit: int = 16
    # How much slower than unloaded a call may get before the limit shrinks (jitter on a
    # shared machine or network stays below it; an upstream queue soon passes it).
    tolerance: float = 2.0
    # ...plus this much in absolute terms: a few milliseconds more on a fast upstream (a
    # busy machine, the GIL) is not congestion worth throttling for.
    latency_slack: float = 0.05
    smoothing: float = 0.2  # weight of a newly computed limit
    backoff: float = 0.9  # limit multiplier on a timeout or transport failure
    ewma_weight: float = 0.2  # weight of a new service-time sample
    noload_window: float = 30.0  # seconds a no-load (minimum) service time is remembered
    # A limit is only known good while it is used (TCP's congestion window validation,
    # RFC 2861): after this long with under half of it in use, it halves for every such
    # spell, down to where it started, so a burst after a quiet spell is not sent whole on
    # a limit that an earlier load earned; while it is used, it never decays.
    idle_half_life: float = 1.0
    control_reserve: float = 0.1  # share of the limit only CONTROL calls may use on top
    max_queue: int = 4096  # memory bound on waiting calls (far above any useful queue)
    tick: float = 0.05  # how often a non-empty queue is re-checked against deadlines
    codel_target: float = 0.05  # a queueing time every call of an interval exceeds...
    codel_interval: float = 0.5  # ...for this long means a standing queue: serve LIFO
    # How far past its deadline a queued call must be predicted to end to be refused: on
    # arrival (the estimate may be from an earlier burst), and on a re-check (fresh).
    arrival_margin: float = 0.5
    shed_margin: float = 0.1
    gap_samples: int = 32  # intervals between answers under load behind the throughput
    # Fewer intervals than this say little (a pool of bcrypt threads answers in clumps: two
    # or three intervals may hold one long pause and nothing else), so until then the
    # throughput is modelled from the service time instead (Little's law).
    min_gap_samples: int = 16


class _WindowMin:
    """The minimum of the samples of the last one to two ``window`` seconds."""

    __slots__ = ("_current", "_previous", "_started", "_window")

    def __init__(self, window: float) -> None:
        self._window = window
        self._current = math.inf
        self._previous = math.inf
        self._started = -math.inf

    def add(self, value: float, now: float) -> None:
        if now - self._started >= self._window:
            self._previous, self._current, self._started = self._current, math.inf, now
        self._current = min(self._current, value)

    def value(self) -> float:
        return min(self._current, self._previous)


@dataclass
class _OperationStats:
    ewma: float = 0.0  # smoothed service time: predictions and the limit's gradient
    samples: int = 0
    noload: _WindowMin = field(default_factory=lambda: _WindowMin(30.0))


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    operation: str
    deadline: float
    enqueued: float
    future: asyncio.Future[None]


@dataclass(eq=False)
class Ticket:
    """A slot held by one call; give it back with ``AdmissionController.release``."""

    operation: str
    priority: Priority
    admitted: float
    queued_for: float
    started: float = 0.0  # when its thread began the work (0: never started)
    released: bool = False
    occupancy: float = 0.0  # the controller's slot-seconds integral when it was admitted


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
        self._limit = self._start = float(
            min(max(config.initial_limit, config.min_limit), config.max_concurrency)
        )
        self.in_flight = 0
        # Slot-seconds held so far (the integral of in_flight over time): a call's mean
        # concurrency over its life is the growth of this over its duration.
        self._occupancy = 0.0
        self._occupancy_at = clock()
        self._queues: dict[Priority, collections.deque[_Waiter]] = {
            Priority.CONTROL: collections.deque(),
            Priority.NORMAL: collections.deque(),
        }
        self._ops: dict[str, _OperationStats] = {}
        self._ewma = 0.0  # service time over every operation
        self._per_slot = 0.0  # service time over its mean concurrency: the modelled gap
        self._progress_at = clock()  # last answered call, or the last start from idle
        self._used_at = clock()  # the last moment at least half of the limit was in use
        # Intervals between answered calls while calls waited (the upstream's throughput
        # when it is what binds), and when the last such answer came.
        self._gaps: collections.deque[float] = collections.deque(maxlen=config.gap_samples)
        self._last_answer_under_load: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._interval_started = clock()
        self._interval_min = math.inf
        self.lifo = False
        self.shed_counts: collections.Counter[str] = collections.Counter()

    # -- what readiness and metrics read ----------------------------------------------

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued_by_priority(self) -> dict[str, int]:
        return {p.name.lower(): len(q) for p, q in self._queues.items()}

    def service_estimate(self, operation: str | None = None) -> float:
        """Predicted service time (seconds) of ``operation`` (or of any call) right now."""
        base = self._ewma
        if operation is not None:
            stats = self._ops.get(operation)
            if stats is not None and stats.samples:
                base = stats.ewma
        return max(base, self._silence())

    # -- admission --------------------------------------------------------------------

    async def acquire(self, operation: str, priority: Priority, deadline: float) -> Ticket:
        """A slot for a call that must be over by ``deadline`` (monotonic), or ``Shed``."""
        now = self._clock()
        if self._can_start(priority) and not self._waiting_before(priority):
            if priority is not Priority.PROBE and self._overcommitted(operation, deadline, now):
                raise self._shed(
                    "deadline",
                    priority,
                    f"{self.in_flight} calls already in flight finish first; "
                    f"{max(0.0, deadline - now):.2f}s left is too little",
                )
            return Ticket(operation, priority, now, 0.0, occupancy=self._take_slot(now))
        if priority is Priority.PROBE:
            raise self._shed("busy", priority, "every upstream slot is busy; a probe never waits")
        if self.queued >= self.config.max_queue:
            raise self._shed("queue_full", priority, f"{self.queued} calls already wait")
        ahead = self._ahead_of_new(priority)
        predicted = self._predicted_finish(operation, ahead, now)
        if self._hopeless(predicted, deadline, now, self.config.arrival_margin):
            raise self._shed(
                "deadline",
                priority,
                f"predicted to finish {predicted - now:.2f}s from now, "
                f"{max(0.0, deadline - now):.2f}s left ({ahead} calls ahead)",
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(priority, operation, deadline, now, loop.create_future())
        self._queues[priority].append(waiter)
        self._arm_timer(loop)
        try:
            # The hard bound: past this point even an idle upstream could not make it.
            noload = self._noload(operation)
            with anyio.fail_after(max(0.0, deadline - noload - self._clock())):
                await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted just as the wait ended: the slot goes to the next one.
                self._advance(self._clock())
                self.in_flight -= 1
                self._dispatch()
            else:
                self._remove(waiter)
                if not future.done():
                    future.cancel()
            if isinstance(exc, TimeoutError):
                raise self._shed("deadline", priority, "no slot came free in time") from None
            raise
        started = self._clock()
        return Ticket(operation, priority, started, started - now, occupancy=self._advance(started))

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
        self.in_flight -= 1
        if ticket.started and outcome is Outcome.ANSWERED:
            self._learn(ticket.operation, now - ticket.started, now, max(1.0, concurrency))
        elif ticket.started and outcome is Outcome.OVERLOAD:
            self._limit = max(float(self.config.min_limit), self._limit * self.config.backoff)
        self._dispatch()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals --------------------------------------------------------------------

    def _capacity(self, priority: Priority) -> int:
        limit = self.limit
        if priority is Priority.CONTROL:
            limit += max(1, math.ceil(self._limit * self.config.control_reserve))
        return min(limit, self.config.max_concurrency)

    def _overcommitted(self, operation: str, deadline: float, now: float) -> bool:
        """A free slot, but the calls already in flight cannot make way in time: on a
        CPU-bound upstream (bcrypt) a call sent behind ``in_flight`` others ends about
        ``in_flight + 1`` answers from now, and with the limit still high from a lighter
        moment a burst would otherwise be sent whole and its tail end in 504s, each one
        upstream work taken from a call that could finish. Judged only by an observed
        throughput, and by the faster of it and the per-slot time of the latest answers
        (fresh however long ago calls last queued)."""
        if not self._observed() or not self.in_flight:
            return False
        gap = min(self._gap(), self._per_slot or math.inf)
        return now + self._service(operation, gap, self.in_flight + 1) > deadline

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

    def _silence(self) -> float:
        """Seconds since the upstream last answered while calls were outstanding: a lower
        bound of what the calls in flight are taking now (0 while slots are free)."""
        if self.in_flight < self.limit:
            return 0.0
        return max(0.0, self._clock() - self._progress_at)

    def _noload(self, operation: str) -> float:
        stats = self._ops.get(operation)
        if stats is None:
            return 0.0
        value = stats.noload.value()
        return 0.0 if math.isinf(value) else value

    def _observed(self) -> bool:
        return len(self._gaps) >= self.config.min_gap_samples

    def _gap(self) -> float:
        """Seconds between two calls coming back while calls wait: observed (the mean of
        the last intervals between answers under load, which holds whatever the limit and
        however the answers clump), or modelled from service time over the limit (Little's
        law) until there are enough such observations to trust."""
        # Until then, the faster of two models (a refusal is final; a wait that proves
        # too long still ends at the deadline): the smoothed service time over the limit
        # (Little's law at full concurrency: right for a latency-bound upstream, which
        # serves more at once at the same speed, but after a busier burst it carries
        # that burst's long service times over), and each answer's service time over the
        # mean number in flight with it (a CPU-bound upstream serves calls one ``gap``
        # apart whatever their number; learnt from a lone call it would say a
        # latency-bound upstream serves one call at a time). No silence here: before any
        # answer the queue is judged by its head alone (a burst's first answers may all
        # come at once, after a while).
        model = min(self._per_slot or math.inf, self._ewma / max(1, self.limit))
        if not self._gaps:
            return model
        observed = sum(self._gaps) / len(self._gaps)
        # A few intervals may be all pause (answers clump) or all clump: trusted once
        # there are enough, and only when they say the queue moves faster before that.
        return observed if self._observed() else min(model, observed)

    @staticmethod
    def _hopeless(predicted: float, deadline: float, now: float, margin: float) -> bool:
        """The prediction is a mean: a call is refused only when it overshoots the time
        left by more than ``margin`` of it (a refusal is final; a wait that turns out too
        long still ends at the deadline)."""
        return predicted - now > (deadline - now) * (1 + margin)

    def _predicted_finish(self, operation: str, ahead: int, now: float) -> float:
        """When a call with ``ahead`` calls before it would be over: it starts after
        ``ahead + 1`` calls complete (and, once the limit has just shrunk, after the calls in
        flight above it), at the current throughput, then takes its own time."""
        gap = self._gap()
        starts_after = ahead + 1 + max(0, self.in_flight - self.limit)
        service = max(self._service(operation, gap, self.limit), self._silence())
        return now + starts_after * gap + service

    def _service(self, operation: str, gap: float, concurrency: int) -> float:
        """The service time of a call sent with ``concurrency`` calls in flight (itself
        included). Little's law: with one answer every ``gap`` seconds, it takes
        ``concurrency * gap``, for a CPU-bound upstream (bcrypt shares its cores, so a call
        takes as long as the number in flight makes it) and a latency-bound one alike. The
        smoothed service time alone is wrong whenever it was learnt at another
        concurrency: too short once the limit has grown (the call would end in a 504), too
        long after a busier burst. Bounded below by the operation's no-load time; while
        the throughput is only modelled, above by the smoothed time too (a latency-bound
        upstream's calls do not get faster when fewer are in flight)."""
        estimate = max(self._noload(operation), concurrency * gap)
        return estimate if self._observed() else min(self._smoothed(operation), estimate)

    def _smoothed(self, operation: str) -> float:
        stats = self._ops.get(operation)
        if stats is not None and stats.samples:
            return stats.ewma
        return self._ewma

    def _take_slot(self, now: float) -> float:
        """One more call in flight from ``now``; the slot-seconds integral at that moment."""
        if self.in_flight == 0:
            self._progress_at = now
        self._validate(now)
        occupancy = self._advance(now)
        self.in_flight += 1
        return occupancy

    def _validate(self, now: float) -> None:
        """Decay a limit left unused (see ``idle_half_life``)."""
        if self.in_flight * 2 >= self._limit:
            self._used_at = now
            return
        idle = now - self._used_at
        if idle >= self.config.idle_half_life and self._limit > self._start:
            decayed = self._limit * 0.5 ** (idle / self.config.idle_half_life)
            self._limit = max(self._start, decayed, 2.0 * self.in_flight)
            self._used_at = now

    def _advance(self, now: float) -> float:
        """The slot-seconds integral up to ``now`` (call before ``in_flight`` changes)."""
        self._occupancy += self.in_flight * (now - self._occupancy_at)
        self._occupancy_at = now
        return self._occupancy

    def _learn(self, operation: str, rtt: float, now: float, concurrency: float) -> None:
        self._progress_at = now
        if self.queued:
            if self._last_answer_under_load is not None:
                self._gaps.append(now - self._last_answer_under_load)
            self._last_answer_under_load = now
        else:
            self._last_answer_under_load = None
        stats = self._ops.get(operation)
        if stats is None:
            stats = self._ops[operation] = _OperationStats(
                noload=_WindowMin(self.config.noload_window)
            )
        weight = self.config.ewma_weight
        stats.ewma = rtt if not stats.samples else (1 - weight) * stats.ewma + weight * rtt
        stats.samples += 1
        self._ewma = rtt if self._ewma == 0 else (1 - weight) * self._ewma + weight * rtt
        slot = rtt / concurrency
        self._per_slot = (
            slot if self._per_slot == 0 else (1 - weight) * self._per_slot + weight * slot
        )
        stats.noload.add(rtt, now)
        noload = stats.noload.value()
        if stats.ewma <= 0 or math.isinf(noload):
            return
        limit = self._limit
        allowed = self.config.tolerance * noload + self.config.latency_slack
        gradient = min(1.0, max(0.5, allowed / stats.ewma))
        target = limit * gradient + math.sqrt(limit)
        if self.in_flight * 2 < limit:
            target = min(target, limit)  # grow only when the limit is what binds
        smoothing = self.config.smoothing
        limit = (1 - smoothing) * limit + smoothing * target
        self._limit = min(float(self.config.max_concurrency), max(self.config.min_limit, limit))

    def _dispatch(self) -> None:
        now = self._clock()
        gap = self._gap()
        for priority in (Priority.CONTROL, Priority.NORMAL):
            queue = self._queues[priority]
            while queue and self._can_start(priority):
                lifo = priority is Priority.NORMAL and self.lifo
                waiter = queue.pop() if lifo else queue.popleft()
                if waiter.future.done():
                    continue
                service = self._service(waiter.operation, gap, self.in_flight + 1)
                if now + service > waiter.deadline:
                    # Too late to finish: sent now, it would take an upstream slot (and
                    # its CPU) from a call that can, and end in a 504 anyway.
                    waiter.future.set_exception(
                        self._shed(
                            "deadline",
                            priority,
                            f"a slot came free {max(0.0, waiter.deadline - now):.2f}s before "
                            "the deadline, less than the call takes",
                        )
                    )
                    continue
                self._observe_sojourn(now - waiter.enqueued, now)
                self._take_slot(now)
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
        for priority in (Priority.CONTROL, Priority.NORMAL):
            queue = self._queues[priority]
            order = reversed(queue) if priority is Priority.NORMAL and self.lifo else queue
            doomed: list[_Waiter] = []
            for waiter in order:
                predicted = self._predicted_finish(waiter.operation, ahead, now)
                if self._hopeless(predicted, waiter.deadline, now, self.config.shed_margin):
                    doomed.append(waiter)
                else:
                    ahead += 1
            for waiter in doomed:
                self._remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(
                        self._shed(
                            "deadline",
                            priority,
                            f"the queue moves too slowly to finish in "
                            f"{max(0.0, waiter.deadline - now):.2f}s",
                        )
                    )
        if self.queued:
            self._arm_timer(loop)

    def _shed(self, reason: str, priority: Priority, detail: str) -> Shed:
        self.shed_counts[reason] += 1
        if self._on_shed is not None:
            self._on_shed(reason, priority)
        return Shed(reason, detail)
