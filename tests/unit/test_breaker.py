"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from services.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[BreakerState, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[BreakerState, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3,
        open_seconds=10.0,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return breaker.state


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_starts_closed_and_admits_calls(breaker: CircuitBreaker) -> None:
    """A new breaker is closed, admits every call and has nothing to wait for."""
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.try_acquire() for _ in range(10))
    assert breaker.retry_after() == 0


def test_opens_after_threshold_consecutive_failures(
    breaker: CircuitBreaker, changes: list[tuple[BreakerState, BreakerState]]
) -> None:
    """N consecutive failures open it, and the listener hears closed → open once."""
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_open_refuses_and_reports_retry_after(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """An open breaker refuses calls and counts down the time to the next probe."""
    _open(breaker)
    assert not breaker.try_acquire()
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(4.0)
    assert not breaker.try_acquire()
    assert breaker.retry_after() == pytest.approx(6.0)
    assert breaker.state is BreakerState.OPEN


def test_half_open_admits_exactly_one_probe(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[BreakerState, BreakerState]]
) -> None:
    """After open_seconds it reports half-open and lets one probe through, not two."""
    _open(breaker)
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after() == 0
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    assert not breaker.try_acquire()
    assert changes[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_probe_success_closes(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[BreakerState, BreakerState]]
) -> None:
    """A successful probe closes the breaker, and calls flow freely again."""
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.try_acquire() for _ in range(5))
    assert changes[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED)


def test_probe_failure_reopens_for_a_full_period(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A failed probe opens it again at once (one failure is enough), for open_seconds more."""
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(10.0)
    assert breaker.try_acquire()


def test_release_probe_lets_the_next_probe_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    """A probe that ended without a verdict (cancelled, shed) frees the probe slot only."""
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    breaker.release_probe()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_failures_while_open_do_not_close_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Late failures of calls admitted before it opened keep it open and restart the wait."""
    _open(breaker)
    clock.advance(5.0)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(10.0)
