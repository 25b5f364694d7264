"""A small circuit breaker for the Supabase upstream.

It lives in the event loop (never touched from worker threads), counts consecutive
upstream failures, and once open answers in microseconds instead of spending a thread
on a dead upstream. After ``open_seconds`` it lets exactly one call through as a probe:
success closes it, failure opens it again.

Its state is per process on purpose: it describes this instance's view of the upstream,
the way Kong's passive health checks do, and needs no shared store to be correct.

What counts (docs/deadlocks.md, "What the breaker counts"): it measures the upstream, not
the caller. Each failure is recorded with the ``Caller`` whose request met it, or with
``None`` when the failure says something about the upstream alone (a connect failure: no
byte was sent; the service's own health probe, whose content is fixed). Failures a
request's content caused are never recorded (the gateway sorts them out). A run of
``failure_threshold`` consecutive failures opens the breaker only if at least one of them
was upstream-only evidence, or if they came from at least ``min_callers`` distinct client
addresses *and* ``min_callers`` distinct accounts: no single address or account, however
many requests it sends, can open it for everyone.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


StateListener = Callable[["BreakerState", "BreakerState"], None]


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who a call is for, hashed (the breaker keeps no addresses or e-mails)."""

    address: str
    account: str

    @classmethod
    def of(cls, address: str, account: str) -> Caller:
        return cls(_digest(address), _digest(account.strip().lower()))


# A call that names no caller: all of them count as one caller.
UNKNOWN_CALLER = Caller("unknown", "unknown")


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        open_seconds: float,
        min_callers: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.min_callers = min_callers
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        # The current run of consecutive failures: who met them.
        self._upstream_evidence = False
        self._addresses: set[str] = set()
        self._accounts: set[str] = set()

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

    def allows(self) -> bool:
        """Would ``try_acquire`` admit a call now? (Changes nothing.)"""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN and self.retry_after() > 0:
            return False
        return not self._probe_in_flight

    def corroborated(self) -> bool:
        """Does the current run of failures say something about the upstream itself?"""
        return self._upstream_evidence or (
            len(self._addresses) >= self.min_callers and len(self._accounts) >= self.min_callers
        )

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
        self._upstream_evidence = False
        self._addresses.clear()
        self._accounts.clear()
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self, caller: Caller | None) -> None:
        """An upstream failure met by ``caller``'s request, or (``None``) evidence about the
        upstream alone."""
        self._probe_in_flight = False
        self._failures += 1
        if caller is None:
            self._upstream_evidence = True
        else:
            # Only whether ``min_callers`` is reached matters: the sets stay that small.
            if len(self._addresses) < self.min_callers:
                self._addresses.add(caller.address)
            if len(self._accounts) < self.min_callers:
                self._accounts.add(caller.account)
        if self._state is BreakerState.HALF_OPEN or (
            self._failures >= self.failure_threshold and self.corroborated()
        ):
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
