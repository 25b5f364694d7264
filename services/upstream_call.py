"""The one path every upstream call takes: breaker, admission, worker thread, deadline,
retries and error mapping, around a blocking SDK call (``services.gateway`` makes the calls).

Each call goes through ``GuardedCalls._call``, which:

1. asks the circuit breaker (a dead upstream costs microseconds, not a thread);
2. asks admission (``services.admission``) for a slot: at once while the adaptive limit has
   room, queued while the call can still finish within its deadline, refused (503
   ``upstream_busy``) as soon as it cannot; the breaker is asked again once admitted;
3. runs the call with ``anyio.to_thread.run_sync`` under an await-level deadline (504); the
   deadline covers the queueing too, so no answer comes later than ``deadline``;
4. inside the thread, the injected ``httpx.Client`` (HTTP/1.1, pool sized to the thread
   bound) runs over ``DeadlineBackend``, which cuts every socket connect, read and write to
   the time left, so even a response that trickles in byte by byte ends with the deadline
   and the thread ends on its own;
5. retries only within the deadline and only where a repeat is harmless: connect failures
   (nothing was sent) always, 502/503/504 and transport errors only for idempotent calls;
6. maps SDK exceptions to ``services.errors`` exactly once, and tells the breaker only what
   is evidence about the upstream (``services.breaker``, "what counts").

The admission slot is held until the thread really ends, not until the awaiting task gives
up: a cancelled await does not stop a running thread, and releasing the slot early would let
abandoned threads pile up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread
import httpx
import structlog
from supabase_auth.errors import (
    AuthApiError,
    AuthError,
    AuthRetryableError,
    AuthWeakPasswordError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from services import budget, errors, keyrefusals, metrics, tallies
from services.admission import (
    AdmissionConfig,
    AdmissionController,
    Outcome,
    Priority,
    Shed,
    Ticket,
)
from services.breaker import UNKNOWN_CALLER, BreakerState, Caller, CircuitBreaker
from services.threads import IdleThreadReaper, ThreadSlot
from services.upstream_errors import (
    BadListing,
    evidence_caller,
    is_bad_record,
    is_retryable,
    is_upstream_failure,
    map_api_error,
)
from services.upstream_http import DEADLINE, TRACE, Trace, UpstreamDeadline

T = TypeVar("T")
# The gateway's logger: its events keep the name they are known by.
log = structlog.get_logger("services.gateway")
# A timeout is evidence against the upstream only for a call given at least this many
# times the service time predicted for it (``_timeout_is_evidence``).
TIMEOUT_EVIDENCE = 2.0


@dataclass(frozen=True)
class GatewayConfig:
    url: str
    anon_key: str
    service_role_key: str
    # The thread bound (and HTTP connections): calls in flight, abandoned ones included.
    pool_size: int = 128
    # The whole budget of a call, queueing included.
    deadline: float = 5.0
    connect_timeout: float = 1.5
    # None: every read may take the time left of the deadline (never less).
    read_timeout: float | None = None
    # Seconds an idle upstream connection is kept (services.upstream_http.build_client).
    keepalive: float = 4.0
    max_attempts: int = 3
    breaker_failure_threshold: int = 5
    breaker_open_seconds: float = 10.0
    # Caller-dependent failures open the breaker only from this many distinct addresses
    # and accounts (services.breaker).
    breaker_min_callers: int = 3
    initial_limit: int = 16
    min_limit: int = 16


class GuardedCalls:
    """The call path of ``SupabaseGateway``: its breaker, admission and thread bound."""

    def __init__(self, config: GatewayConfig, key_refusals: keyrefusals.KeyRefusals) -> None:
        self.config = config
        self.admission = AdmissionController(
            AdmissionConfig(
                max_concurrency=config.pool_size,
                initial_limit=config.initial_limit,
                min_limit=min(config.min_limit, config.pool_size),
            ),
            on_shed=_count_shed,
        )
        # anyio's own thread limiter; admission already bounds the threads, this keeps
        # the calls off the default limiter shared with the rest of the process.
        self._thread_limiter = anyio.CapacityLimiter(config.pool_size)
        self._reaper = IdleThreadReaper(self._thread_limiter)
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failure_threshold,
            open_seconds=config.breaker_open_seconds,
            min_callers=config.breaker_min_callers,
            on_change=self._breaker_changed,
        )
        self._key_refusals = key_refusals
        metrics.POOL_SIZE.set(config.pool_size)

    def close(self) -> None:
        self.admission.close()
        self._reaper.close()

    # -- the one path every call takes ---------------------------------------------------

    async def _call(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        retry_safe: bool,
        caller: Caller | None = UNKNOWN_CALLER,
        priority: Priority = Priority.NORMAL,
    ) -> T:
        started = time.monotonic()
        outcome = "error"
        try:
            result = await self._guarded(
                operation, fn, retry_safe=retry_safe, caller=caller, priority=priority
            )
        except errors.AuthServiceError as exc:
            outcome = exc.code
            raise
        else:
            outcome = "ok"
            return result
        finally:
            tallies.count(metrics.UPSTREAM_CALLS, operation, outcome)
            tallies.observe(metrics.UPSTREAM_LATENCY, time.monotonic() - started, operation)

    def _circuit_open(self) -> errors.CircuitOpen:
        return errors.CircuitOpen(
            retry_after=max(1.0, self.breaker.retry_after()),
            debug=f"{self.breaker.failure_threshold} upstream failures in a row; "
            f"the next probe is allowed in {self.breaker.retry_after():.1f}s",
        )

    async def _guarded(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        retry_safe: bool,
        caller: Caller | None,
        priority: Priority,
    ) -> T:
        if not self.breaker.allows():
            raise self._circuit_open()
        # One deadline for the whole call: queueing, every attempt, every socket operation,
        # counted from the request's arrival (services/budget.py).
        deadline = budget.call_deadline(self.config.deadline, time.monotonic())
        # The thread gives up a little before the await does, so the usual timeout is the
        # thread's own clean one rather than an abandonment; admission judges by the
        # thread's end, the time the upstream really has.
        margin = min(0.1, self.config.deadline * 0.05)
        try:
            ticket = await self.admission.acquire(operation, priority, deadline - margin)
        except Shed as exc:
            log.warning("upstream_shed", operation=operation, reason=exc.reason)
            raise errors.PoolExhausted(
                retry_after=1, debug=f"admission refused the call ({exc.reason}): {exc.detail}"
            ) from None
        # The breaker may have opened while the call waited: ask again (and take the
        # half-open probe, if that is what this call is).
        if not self.breaker.try_acquire():
            self.admission.release(ticket, Outcome.NONE)
            raise self._circuit_open()
        self._reaper.busy()
        slot = ThreadSlot(self.admission, ticket, asyncio.get_running_loop())
        trace = Trace()
        token = DEADLINE.set(deadline - margin)
        trace_token = TRACE.set(trace)

        def work() -> T:
            if not slot.start():
                raise errors.DeadlineExceeded()
            outcome = Outcome.NONE
            try:
                result = self._with_retries(operation, fn, retry_safe=retry_safe)
            except BaseException as exc:
                outcome = _outcome_of(exc, trace)
                raise
            else:
                outcome = Outcome.ANSWERED if trace.answered else Outcome.NONE
                return result
            finally:
                slot.finish(outcome)

        try:
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                result = await anyio.to_thread.run_sync(
                    work, abandon_on_cancel=True, limiter=self._thread_limiter
                )
        except TimeoutError:
            slot.abandon()
            if _timeout_is_evidence(ticket, deadline - margin):
                self.breaker.record_failure(None if not trace.sent else caller)
            else:
                self.breaker.release_probe()
            log.warning("upstream_timeout", operation=operation, deadline=self.config.deadline)
            raise errors.DeadlineExceeded(
                debug=f"no answer from {self.config.url} within {self.config.deadline}s"
            ) from None
        except AuthError as exc:
            mapped = self._map_error(operation, exc)
            if not is_upstream_failure(exc, mapped):
                self.breaker.record_success()
            elif isinstance(mapped, errors.DeadlineExceeded) and not _timeout_is_evidence(
                ticket, deadline - margin
            ):
                self.breaker.release_probe()
            else:
                self.breaker.record_failure(evidence_caller(exc, caller))
            raise mapped from exc
        except errors.AuthServiceError:
            self.breaker.release_probe()
            raise
        except Exception as exc:
            raise self._unexpected(operation, exc, trace, caller) from exc
        except BaseException:
            # Cancelled (the client went away, or shutdown): the slot follows the thread.
            slot.abandon()
            self.breaker.release_probe()
            raise
        else:
            self.breaker.record_success()
        finally:
            TRACE.reset(trace_token)
            DEADLINE.reset(token)
            # After the breaker heard the outcome: the next call admitted into this slot
            # sees its new state.
            slot.settle()
        return result

    def _unexpected(
        self, operation: str, exc: Exception, trace: Trace, caller: Caller | None
    ) -> errors.AuthServiceError:
        """Something other than an SDK error: decide whose fault it is."""
        if isinstance(exc, BadListing) or is_bad_record(exc):
            # The upstream answered, and what it holds for this request cannot be read:
            # that record's problem, not the upstream's health.
            self.breaker.release_probe()
            log.warning("upstream_bad_record", operation=operation, error=type(exc).__name__)
            return errors.UpstreamBadRecord(
                debug=f"{self.config.url} answered a record the SDK cannot read "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            )
        if not trace.attempted:
            # Raised before anything was sent (the request could not even be encoded,
            # e.g. NaN or a structure too deep): the request's content, never the upstream.
            self.breaker.release_probe()
            log.warning("upstream_request_unencodable", operation=operation, error=str(exc))
            return errors.ValidationFailed(
                "The request holds a value that cannot be sent to the authentication provider.",
                debug=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
        # A 2xx body the SDK's models reject, or an error it let escape unmapped.
        self.breaker.record_failure(caller)
        log.error("upstream_unexpected_answer", operation=operation, error=type(exc).__name__)
        return errors.UpstreamUnavailable(
            retry_after=1,
            debug=f"{self.config.url} gave an answer the SDK could not read "
            f"({type(exc).__name__}); check SUPABASE_URL points at Supabase",
        )

    def _with_retries(self, operation: str, fn: Callable[[], T], *, retry_safe: bool) -> T:
        deadline = DEADLINE.get()

        def retryable(exc: BaseException) -> bool:
            return is_retryable(exc, retry_safe=retry_safe)

        def count_retry(_: RetryCallState) -> None:
            metrics.UPSTREAM_RETRIES.labels(operation).inc()

        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts)
            | stop_before_delay(max(0.0, deadline - time.monotonic())),
            wait=wait_random_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception(retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        return retrying(fn)

    def _map_error(self, operation: str, exc: AuthError) -> errors.AuthServiceError:
        cause = exc.__cause__
        if isinstance(exc, AuthRetryableError):
            if isinstance(cause, httpx.TimeoutException) and not isinstance(
                cause, httpx.ConnectTimeout
            ):
                log.warning("upstream_timeout", operation=operation, reason=str(cause))
                return errors.DeadlineExceeded(debug=f"{self.config.url}: {cause!r}")
            log.warning("upstream_unreachable", operation=operation, status=exc.status)
            return errors.UpstreamUnavailable(
                retry_after=1,
                debug=f"{self.config.url} answered {exc.status or repr(cause)}; "
                "check SUPABASE_URL and that Supabase Auth is up",
            )
        if isinstance(exc, AuthWeakPasswordError):
            return errors.WeakPassword(
                exc.message, errors=[{"field": "password", "reasons": exc.reasons}]
            )
        if isinstance(exc, AuthApiError):
            refused = self._key_refusals.map(operation, exc.status, exc.code, exc.message)
            return refused or map_api_error(operation, exc, self.config.url)
        log.error("upstream_unexpected_answer", operation=operation, error=type(exc).__name__)
        return errors.UpstreamUnavailable(
            retry_after=1,
            debug=f"{self.config.url} answered something that is not Supabase Auth "
            f"({type(exc).__name__}); check SUPABASE_URL",
        )

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        metrics.BREAKER_STATE.set(int(new))
        event = {
            BreakerState.OPEN: "upstream_breaker_opened",
            BreakerState.HALF_OPEN: "upstream_breaker_half_open",
            BreakerState.CLOSED: "upstream_breaker_closed",
        }[new]
        log.warning(event, previous=old.name.lower())


def _timeout_is_evidence(ticket: Ticket, deadline: float) -> bool:
    """Whether a call that ran out of time says something about the upstream's health. It
    does when the call was given time to spare: at least ``TIMEOUT_EVIDENCE`` times the
    service time admission predicted for it (or no prediction could be made). A call
    admitted with less, at the end of a healthy burst (its slot came free late, and it
    was predicted to just fit), timed out because the prediction was a mean: counting it
    would let one burst of distinct users open the breaker for everyone. A hung upstream
    still opens it: calls are sent into it on the pace it had, with their whole deadline."""
    budget = deadline - ticket.admitted
    return ticket.expected <= 0 or budget >= TIMEOUT_EVIDENCE * ticket.expected


def _outcome_of(exc: BaseException, trace: Trace) -> Outcome:
    """What a failed call tells the adaptive limit."""
    if isinstance(exc, AuthRetryableError) and exc.status == 0:
        return Outcome.OVERLOAD  # timeout or transport failure
    if isinstance(exc, (UpstreamDeadline, httpx.TransportError)):
        return Outcome.OVERLOAD
    if isinstance(exc, AuthRetryableError):
        return Outcome.OVERLOAD  # 502/503/504: the upstream or its proxy is overloaded
    return Outcome.ANSWERED if trace.answered else Outcome.NONE


def _count_shed(reason: str, priority: Priority) -> None:
    metrics.ADMISSION_SHED.labels(reason, priority.name.lower()).inc()
