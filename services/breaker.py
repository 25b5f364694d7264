"""A small circuit breaker for the Supabase upstream.

It lives in the event loop (never touched from worker threads), counts consecutive
upstream failures, and once open answers in microseconds instead of spending a thread
on a dead upstream. After ``open_seconds`` it lets exactly one call through as a probe:
success closes it, failure opens it again.

Its state is per process on purpose: it describes this instance's view of the upstream,
the way Kong's passive health checks do, and needs no shared store to be correct.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


StateListener = Callable[["BreakerState", "BreakerState"], None]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.retry_after() == 0:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until a probe may be tried; 0 when calls may go through."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())

    def try_acquire(self) -> bool:
        """May a call go through now? A half-open breaker admits one probe at a time."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self.retry_after() > 0:
                return False
            self._transition(BreakerState.HALF_OPEN)
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            if self._state is not BreakerState.OPEN:
                self._transition(BreakerState.OPEN)

    def release_probe(self) -> None:
        """A probe ended without telling us anything about the upstream."""
        self._probe_in_flight = False

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_change is not None:
            self._on_change(old, new)
