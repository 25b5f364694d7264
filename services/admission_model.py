"""What admission knows of the upstream (see docs/deadlocks.md, "Admission"): how long its
calls take, how fast it gets through them, and the concurrency limit that follows.

``UpstreamModel`` learns from every answered call (``learn``) and answers the questions the
controller (``services.admission``) decides by: the no-load and smoothed service time of an
operation, the interval between answers under load (the throughput), the service time of a
call sent at a given concurrency, and how long the upstream has been silent. The limit is
the gradient rule of Netflix's concurrency-limits and Envoy's adaptive concurrency filter:
``gradient = clamp((tolerance * noload + slack) / rtt, 0.5, 1)`` and
``limit = limit * gradient + sqrt(limit)``, smoothed; a timeout or transport failure cuts it
by ``backoff``; a limit left unused decays back to where it started.

Like the controller, it lives on the event loop only.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["AdmissionConfig", "InFlight", "UpstreamModel"]


class InFlight(Protocol):
    """What the model reads of a call in flight (``services.admission_types.Ticket``)."""

    @property
    def operation(self) -> str: ...
    @property
    def admitted(self) -> float: ...
    @property
    def expected(self) -> float: ...
    @property
    def deadline(self) -> float: ...


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
    # The limit stops growing once calls run this share above the concurrency the no-load
    # time was seen at and each answer's service time over its concurrency is still at
    # least ``saturation`` of what it was there (no more answers a second for more calls).
    probe_headroom: float = 0.25
    saturation: float = 0.8
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
    shed_margin: float = 0.25
    # Sending is the final decision, and it errs the other way: a call is sent only if it is
    # predicted to end with this share of its service time to spare. The prediction is a
    # mean, and a call sent that ends past its deadline is the worst outcome a burst can
    # have: a 504 after the whole deadline, an upstream slot (and its CPU) taken from a
    # call that could finish, and a timeout the breaker counts; refused, it is a 503 now.
    dispatch_margin: float = 0.1
    gap_samples: int = 32  # intervals between answers under load behind the throughput
    # Fewer intervals than this say little (a pool of bcrypt threads answers in clumps: two
    # or three intervals may hold one long pause and nothing else), so until then the
    # throughput is modelled from the service time instead (Little's law).
    min_gap_samples: int = 16


def _share_left(call: InFlight, now: float) -> float:
    """The share of a call's predicted service still ahead of it (all of it when too
    little was observed to predict)."""
    if call.expected <= 0:
        return 1.0
    return max(0.0, 1.0 - (now - call.admitted) / call.expected)


class _WindowMin:
    """The minimum of the samples of the last one to two ``window`` seconds, with what was
    seen along with it: the concurrency, and the pace (seconds per answer) of the moment."""

    __slots__ = ("_current", "_previous", "_started", "_window")

    _EMPTY = (math.inf, math.inf, 0.0)
    TIE = 0.05  # samples within this share of the minimum are the same speed

    def __init__(self, window: float) -> None:
        self._window = window
        self._current = self._EMPTY
        self._previous = self._EMPTY
        self._started = -math.inf

    def add(self, value: float, now: float, concurrency: float = 1.0, pace: float = 0.0) -> None:
        if now - self._started >= self._window:
            self._previous, self._current, self._started = self._current, self._EMPTY, now
        best, seen_at, seen_pace = self._current
        if value > best:
            return
        if value < best * (1 - self.TIE) or concurrency <= seen_at:
            self._current = (value, concurrency, pace)
        else:
            # As fast within noise, but with more calls at once: a call that found the
            # upstream's workers free as others left (a pool of 16 bcrypt threads serves
            # a 30th call in the same time as the 16th). The minimum stays where fewer calls
            # ran, so saturation is still judged against the concurrency that earned it.
            self._current = (value, seen_at, seen_pace)

    def value(self) -> float:
        return min(self._current, self._previous)[0]

    def seen_with(self) -> tuple[float, float]:
        """The concurrency and the pace the minimum was seen with."""
        _, concurrency, pace = min(self._current, self._previous)
        return concurrency, pace


@dataclass
class _OperationStats:
    ewma: float = 0.0  # smoothed service time: predictions and the limit's gradient
    samples: int = 0
    noload: _WindowMin = field(default_factory=lambda: _WindowMin(30.0))


class UpstreamModel:
    def __init__(self, config: AdmissionConfig, now: float) -> None:
        self.config = config
        self.start = float(min(max(config.initial_limit, config.min_limit), config.max_concurrency))
        self.limit = self.start
        self._ops: dict[str, _OperationStats] = {}
        self.ewma = 0.0  # service time over every operation
        self.per_slot = 0.0  # service time over its mean concurrency: the modelled gap
        self.progress_at = now  # last answered call, or the last start from idle
        self._used_at = now  # the last moment at least half of the limit was in use
        # Intervals between answered calls while calls waited (the upstream's throughput
        # when it is what binds), and when the last such answer came.
        self._gaps: collections.deque[float] = collections.deque(maxlen=config.gap_samples)
        self._last_answer_under_load: float | None = None

    # -- what the controller asks -----------------------------------------------------

    def estimate(self, operation: str | None, now: float, in_flight: int) -> float:
        """Predicted service time (seconds) of ``operation`` (or of any call) right now."""
        base = self.ewma
        if operation is not None:
            stats = self._ops.get(operation)
            if stats is not None and stats.samples:
                base = stats.ewma
        return max(base, self.silence(now, in_flight))

    def silence(self, now: float, in_flight: int) -> float:
        """Seconds since the upstream last answered while calls were outstanding: a lower
        bound of what the calls in flight are taking now (0 while slots are free)."""
        if in_flight < int(self.limit):
            return 0.0
        return max(0.0, now - self.progress_at)

    def noload(self, operation: str) -> float:
        stats = self._ops.get(operation)
        if stats is None:
            return 0.0
        value = stats.noload.value()
        return 0.0 if math.isinf(value) else value

    def observed(self) -> bool:
        return len(self._gaps) >= self.config.min_gap_samples

    def gap(self) -> float:
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
        model = min(self.per_slot or math.inf, self.ewma / max(1, int(self.limit)))
        if not self._gaps:
            return model
        observed = sum(self._gaps) / len(self._gaps)
        # A few intervals may be all pause (answers clump) or all clump: trusted once
        # there are enough, and only when they say the queue moves faster before that.
        return observed if self.observed() else min(model, observed)

    def service(self, operation: str, gap: float, concurrency: int) -> float:
        """The service time of a call sent with ``concurrency`` calls in flight (itself
        included). Little's law: with one answer every ``gap`` seconds, it takes
        ``concurrency * gap``, for a CPU-bound upstream (bcrypt shares its cores, so a call
        takes as long as the number in flight makes it) and a latency-bound one alike. The
        smoothed service time alone is wrong whenever it was learnt at another
        concurrency: too short once the limit has grown (the call would end in a 504), too
        long after a busier burst. Bounded below by the operation's no-load time; while
        the throughput is only modelled, above by the smoothed time too (a latency-bound
        upstream's calls do not get faster when fewer are in flight)."""
        estimate = max(self.noload(operation), concurrency * gap)
        return estimate if self.observed() else min(self.smoothed(operation), estimate)

    def longest(self, concurrency: int) -> float:
        """An upper bound on ``service`` for any operation at ``concurrency``."""
        noload = max((self.noload(op) for op in self._ops), default=0.0)
        return max(noload, concurrency * self.gap())

    def crowded(
        self, calls: Iterable[InFlight], now: float, concurrency: int, spare: float
    ) -> bool:
        """Whether running ``concurrency`` calls at once would make one of ``calls`` (those in
        flight) end past its deadline, with ``spare`` times its predicted time to spare.
        On a CPU-bound upstream every call in flight slows down by one share when another
        is sent, so a call sent as the previous ones finish (the tail of a burst, with a
        little time left) is sent only while those it joins still make theirs. A call in
        flight is judged by the share of its predicted service still ahead of it (all of
        it when too little was observed to predict)."""
        gap = self.gap()
        full: dict[str, float] = {}
        for call in calls:
            service = full.get(call.operation)
            if service is None:
                service = full[call.operation] = self.service(call.operation, gap, concurrency)
            if now + _share_left(call, now) * service * spare > call.deadline:
                return True
        return False

    @staticmethod
    def work_left(calls: Iterable[InFlight], now: float) -> float:
        """What ``calls`` (those in flight) still have to do, in calls: the sum of the
        shares of their predicted service still ahead of them."""
        return sum(_share_left(call, now) for call in calls)

    def finish(
        self, operation: str, now: float, *, ahead: int, behind: int, in_flight: int, work: float
    ) -> float:
        """When a queued call with ``ahead`` calls before it and ``behind`` after it would be
        over, ``in_flight`` calls being out with ``work`` (``work_left``) still to do. It
        starts after ``ahead + 1`` calls complete (and, once the limit has just shrunk,
        after the calls in flight above it), at the current throughput, then takes its
        own time. A refusal is final and a wait costs no thread, so the throughput is the
        faster of the two estimates: the intervals between answers (which clump on a pool
        of bcrypt threads: a window may hold two long pauses for one) and each answer's
        service time over the number in flight with it (Little's law, call by call)."""
        limit = int(self.limit)
        gap = self.gap()
        if self.per_slot:
            gap = min(gap, self.per_slot)
        starts_after = ahead + 1 + max(0, in_flight - limit)
        # At the concurrency it will run at: the limit, or fewer while sending holds back
        # (at a burst's tail calls wait for those in flight to thin out, so the queue is
        # not refused as though they would all run with it).
        running = min(limit, in_flight + 1)
        silence = self.silence(now, in_flight)
        pipeline = starts_after * gap + max(self.service(operation, gap, running), silence)
        # At a burst's tail fewer calls follow it than the limit holds: on a CPU-bound
        # upstream it ends once the work ahead of it (what the calls in flight have left,
        # and the calls before it), its own, and on average half of that of the calls
        # sent after it that run along with it is done, an answer a gap apart. It cannot
        # end before it has started and run its unloaded time, though (a latency-bound
        # upstream's calls take that however few run).
        sharing = min(behind, max(0, limit - 1)) / 2
        drained = max(
            (work + ahead + 1 + sharing) * gap,
            starts_after * gap + max(self.noload(operation), silence),
        )
        return now + min(pipeline, drained)

    def smoothed(self, operation: str) -> float:
        stats = self._ops.get(operation)
        if stats is not None and stats.samples:
            return stats.ewma
        return self.ewma

    def _saturated(self, stats: _OperationStats, concurrency: float, pace: float) -> bool:
        """More calls at once have stopped bringing more answers a second: well above the
        concurrency the no-load time was seen at, answers come no more often than they did
        then (the slower of the interval between answers and each answer's service time
        over the number in flight with it, against the latter's smoothed value at that
        moment: what calls typically took then, not the fastest one). A CPU-bound
        upstream then only queues what it is sent, slower for every call. This is what
        holds the limit when the no-load time itself was learnt under load (a burst that
        meets a service just started, before any call ran alone): the tolerance compares
        service times with that loaded one, and would let the limit grow to twice it."""
        seen_at, then = stats.noload.seen_with()
        if concurrency <= seen_at * (1 + self.config.probe_headroom) or then <= 0:
            return False  # near where it was seen: growing is how the limit probes
        return pace >= self.config.saturation * then

    def _pace(self) -> float:
        """Seconds per answer now: the slower of the interval between answers and each
        answer's service time over the number in flight with it."""
        return max(self.gap(), self.per_slot)

    # -- what the controller tells it -------------------------------------------------

    def started_from_idle(self, now: float) -> None:
        """A call was sent with none in flight: the silence counts from now."""
        self.progress_at = now

    def validate(self, now: float, in_flight: int) -> None:
        """Decay a limit left unused (see ``AdmissionConfig.idle_half_life``)."""
        if in_flight * 2 >= self.limit:
            self._used_at = now
            return
        idle = now - self._used_at
        if idle >= self.config.idle_half_life and self.limit > self.start:
            decayed = self.limit * 0.5 ** (idle / self.config.idle_half_life)
            self.limit = max(self.start, decayed, 2.0 * in_flight)
            self._used_at = now

    def back_off(self) -> None:
        """A timeout or transport failure: fewer calls at once."""
        self.limit = max(float(self.config.min_limit), self.limit * self.config.backoff)

    def learn(
        self,
        operation: str,
        rtt: float,
        now: float,
        *,
        concurrency: float,
        in_flight: int,
        queued: bool,
    ) -> None:
        """An answered call: ``rtt`` seconds of service at a mean ``concurrency``, with
        ``in_flight`` calls still out and calls ``queued`` or not."""
        self.progress_at = now
        if queued:
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
        self.ewma = rtt if self.ewma == 0 else (1 - weight) * self.ewma + weight * rtt
        slot = rtt / concurrency
        self.per_slot = slot if self.per_slot == 0 else (1 - weight) * self.per_slot + weight * slot
        stats.noload.add(rtt, now, concurrency, self.per_slot)
        noload = stats.noload.value()
        if stats.ewma <= 0 or math.isinf(noload):
            return
        limit = self.limit
        allowed = self.config.tolerance * noload + self.config.latency_slack
        gradient = min(1.0, max(0.5, allowed / stats.ewma))
        target = limit * gradient + math.sqrt(limit)
        if in_flight * 2 < limit:
            target = min(target, limit)  # grow only when the limit is what binds
        elif self._saturated(stats, concurrency, pace := self._pace()):
            # More calls bring no more answers: by Little's law the upstream keeps busy
            # with no-load time over the time between answers, and every call above that
            # (and the probing headroom) only waits inside it. The limit comes back down
            # there instead of holding where the probing overshot.
            usable = (1 + self.config.probe_headroom) * noload / pace
            target = min(target, limit, max(usable, float(self.config.min_limit)))
        else:
            # A limit is earned by calls that used it: at most the probing headroom above
            # the concurrency this call ran at. A batch of answers that come together (a
            # pool of bcrypt threads ends its calls at once) would otherwise grow it by a
            # step each, 16 to 31 before any call has run at 20, and every call above the
            # upstream's own parallelism waits inside it, unseen, towards a 504.
            target = min(target, max(limit, (1 + self.config.probe_headroom) * concurrency))
        smoothing = self.config.smoothing
        limit = (1 - smoothing) * limit + smoothing * target
        self.limit = min(float(self.config.max_concurrency), max(self.config.min_limit, limit))
