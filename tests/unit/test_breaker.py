"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from services.breaker import BreakerState, Caller, CircuitBreaker


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
        min_callers=3,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return breaker.state


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.try_acquire()
        breaker.record_failure(None)
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
    breaker.record_failure(None)
    breaker.record_failure(None)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(None)
    assert state(breaker) is BreakerState.OPEN
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker.record_failure(None)
    breaker.record_failure(None)
    breaker.record_success()
    breaker.record_failure(None)
    breaker.record_failure(None)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(None)
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
    breaker.record_failure(None)
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
    breaker.record_failure(None)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(10.0)


# -- what counts: the upstream, not the caller ---------------------------------------------


def test_one_address_cannot_open_it_with_any_number_of_accounts(breaker: CircuitBreaker) -> None:
    """Failures that a request could have caused, all from one address (however many
    accounts it names), never open it: the rule needs min_callers addresses."""
    for index in range(100):
        breaker.record_failure(Caller.of("198.51.100.7", f"victim{index}@example.com"))
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.try_acquire()


def test_one_account_cannot_open_it_from_any_number_of_addresses(breaker: CircuitBreaker) -> None:
    """Nor can one account from many addresses (a botnet aiming at one record)."""
    for index in range(100):
        breaker.record_failure(Caller.of(f"203.0.113.{index}", "poisoned@example.com"))
    assert state(breaker) is BreakerState.CLOSED


def test_a_few_addresses_and_accounts_below_the_rule_do_not_open_it(
    breaker: CircuitBreaker,
) -> None:
    """Two addresses alternating over two accounts: still below min_callers = 3."""
    for index in range(50):
        breaker.record_failure(Caller.of(f"192.0.2.{index % 2}", f"a{index % 2}@example.com"))
    assert state(breaker) is BreakerState.CLOSED


def test_distinct_callers_meeting_the_threshold_open_it(breaker: CircuitBreaker) -> None:
    """Three failures from three addresses and three accounts: the upstream is sick."""
    breaker.record_failure(Caller.of("192.0.2.1", "a@example.com"))
    breaker.record_failure(Caller.of("192.0.2.2", "b@example.com"))
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(Caller.of("192.0.2.3", "c@example.com"))
    assert state(breaker) is BreakerState.OPEN


def test_upstream_only_evidence_corroborates_a_single_caller(breaker: CircuitBreaker) -> None:
    """A connect failure (nothing sent: the request cannot be its cause) counts on its
    own, so one client of a dead upstream still opens it."""
    caller = Caller.of("192.0.2.1", "a@example.com")
    breaker.record_failure(caller)
    breaker.record_failure(caller)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(None)
    assert state(breaker) is BreakerState.OPEN


def test_a_success_forgets_the_callers_of_the_run(breaker: CircuitBreaker) -> None:
    """The distinct callers belong to one run of consecutive failures: a success in the
    middle (the upstream answered) starts both counts again."""
    breaker.record_failure(Caller.of("192.0.2.1", "a@example.com"))
    breaker.record_failure(Caller.of("192.0.2.2", "b@example.com"))
    breaker.record_success()
    breaker.record_failure(Caller.of("192.0.2.3", "c@example.com"))
    breaker.record_failure(Caller.of("192.0.2.3", "c@example.com"))
    breaker.record_failure(Caller.of("192.0.2.3", "c@example.com"))
    assert state(breaker) is BreakerState.CLOSED


def test_caller_keys_are_hashed_and_case_folded() -> None:
    """The breaker holds no address or e-mail; an account differing only in case is one."""
    one = Caller.of("192.0.2.1", "A@Example.com")
    assert one == Caller.of("192.0.2.1", "a@example.com")
    assert "192.0.2.1" not in one.address
    assert "example" not in one.account


def test_allows_peeks_without_taking_the_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """``allows`` answers like ``try_acquire`` but leaves the half-open probe free."""
    _open(breaker)
    assert not breaker.allows()
    clock.advance(10.0)
    assert breaker.allows()
    assert breaker.allows()
    assert breaker.try_acquire()
    assert not breaker.allows()
