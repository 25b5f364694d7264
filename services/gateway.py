"""The only code that calls the Supabase SDK.

The SDK is blocking, so every call runs on a worker thread. Each call goes through
``SupabaseGateway._call``, which:

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
abandoned threads pile up. User calls never share SDK session state: each builds a
throwaway ``SyncGoTrueClient`` (``persist_session=False``, ``auto_refresh_token=False``) over
the shared pool; admin calls use one separate service-role client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import structlog
from pydantic import ValidationError
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import (
    AuthApiError,
    AuthError,
    AuthRetryableError,
    AuthWeakPasswordError,
)
from supabase_auth.types import User
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from services import apikeys, budget, errors, keyrefusals, metrics, tallies
from services.account_gateway import AccountOperations
from services.admission import (
    AdmissionConfig,
    AdmissionController,
    Outcome,
    Priority,
    Shed,
)
from services.breaker import UNKNOWN_CALLER, BreakerState, Caller, CircuitBreaker
from services.thread_clients import ThreadClients
from services.threads import IdleThreadReaper, ThreadSlot
from services.upstream_errors import (
    BadListing,
    evidence_caller,
    is_bad_record,
    is_retryable,
    is_transient_key_error,
    is_upstream_failure,
    map_api_error,
)
from services.upstream_http import (
    DEADLINE,
    TRACE,
    Trace,
    UpstreamDeadline,
    build_client,
    install_trace_hooks,
    upstream_tls_context,
)
from services.upstream_session import AuthSession, session_of, user_dict

# Re-exported: callers name them through the gateway, the one upstream boundary.
__all__ = [
    "AuthSession",
    "GatewayConfig",
    "SupabaseGateway",
    "UserPage",
    "build_http_client",
    "is_transient_key_error",
    "user_dict",
]

T = TypeVar("T")
log = structlog.get_logger("services.gateway")


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
    max_attempts: int = 3
    breaker_failure_threshold: int = 5
    breaker_open_seconds: float = 10.0
    # Caller-dependent failures open the breaker only from this many distinct addresses
    # and accounts (services.breaker).
    breaker_min_callers: int = 3
    initial_limit: int = 16
    min_limit: int = 16


def build_http_client(config: GatewayConfig, *, connections: int | None = None) -> httpx.Client:
    """The SDK's HTTP client (``services.upstream_http.build_client``) for this config: a pool
    of ``connections``, the thread bound by default (a worker thread's own client needs one)."""
    return build_client(
        connections=connections or config.pool_size,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )


@dataclass(frozen=True)
class UserPage:
    """One page of the admin user list: the users the SDK can read, and the ids of the
    records it cannot (each skipped record degrades only itself)."""

    users: list[dict[str, Any]]
    skipped: list[str]


class SupabaseGateway(AccountOperations):
    """Async facade over the blocking SDK. Build one per process, in the app lifespan."""

    def __init__(self, config: GatewayConfig, http_client: httpx.Client | None = None) -> None:
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
        # Each key in `apikey`; as the bearer only if it is a JWT (a legacy key). The SDK
        # adds `Authorization: Bearer <token>` itself only for a user's access token.
        self._public_key = apikeys.classify(config.anon_key)
        self._server_key = apikeys.classify(config.service_role_key)
        self._key_refusals = keyrefusals.KeyRefusals(self._public_key, self._server_key)
        log.info("upstream_api_keys", public=self._public_key.label, server=self._server_key.label)
        self._user_headers = apikeys.request_headers(self._public_key)
        # Each worker thread calls the upstream through a client of its own
        # (services.thread_clients); ``http_client`` replaces them all (tests).
        self._clients = ThreadClients(
            lambda: build_http_client(config, connections=1), self._attach, shared=http_client
        )
        if http_client is None:
            upstream_tls_context()  # built now, once, rather than by the first burst
        metrics.POOL_SIZE.set(config.pool_size)

    def _attach(self, client: httpx.Client) -> SyncGoTrueAdminAPI:
        """A thread's client, made ready: tracing hooks and the admin API over it."""
        install_trace_hooks(client)
        return SyncGoTrueAdminAPI(
            url=self.config.url,
            headers=apikeys.request_headers(self._server_key),
            http_client=client,
        )

    @property
    def http_client(self) -> httpx.Client:
        """This thread's upstream client."""
        return self._clients.get()[0]

    @property
    def _admin(self) -> SyncGoTrueAdminAPI:
        return self._clients.get()[1]

    def close(self) -> None:
        self.admission.close()
        self._reaper.close()
        self._clients.close()

    # -- operations ------------------------------------------------------------------

    async def sign_in(
        self, email: str, password: str, *, caller: Caller = UNKNOWN_CALLER
    ) -> AuthSession:
        def call() -> AuthSession:
            response = self._user_client().sign_in_with_password(
                {"email": email, "password": password}
            )
            return session_of(response.session)

        # The upstream may already be checking the password when a read fails: only a
        # connect failure (nothing sent) is repeated.
        return await self._call("sign_in", call, retry_safe=False, caller=caller)

    async def refresh(self, refresh_token: str, *, caller: Caller = UNKNOWN_CALLER) -> AuthSession:
        # A repeat is harmless: GoTrue answers the parent of the active token with the
        # active pair, which is exactly what a retry after a lost response needs.
        def call() -> AuthSession:
            response = self._user_client().refresh_session(refresh_token)
            return session_of(response.session)

        return await self._call(
            "refresh", call, retry_safe=True, caller=caller, priority=Priority.CONTROL
        )

    async def sign_out(
        self, access_token: str, scope: str, *, caller: Caller = UNKNOWN_CALLER
    ) -> None:
        def call() -> None:
            self._admin.sign_out(access_token, scope)  # type: ignore[arg-type]

        await self._call(
            "sign_out", call, retry_safe=True, caller=caller, priority=Priority.CONTROL
        )

    async def create_user(
        self, attributes: dict[str, Any], *, caller: Caller = UNKNOWN_CALLER
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.create_user(attributes).user)  # type: ignore[arg-type]

        # Not retried after the request may have been sent: the caller handles a
        # duplicate through its idempotency record.
        return await self._call("create_user", call, retry_safe=False, caller=caller)

    async def get_user(self, user_id: str, *, caller: Caller = UNKNOWN_CALLER) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.get_user_by_id(user_id).user)

        return await self._call("get_user", call, retry_safe=True, caller=caller)

    async def update_user(
        self, user_id: str, attributes: dict[str, Any], *, caller: Caller = UNKNOWN_CALLER
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._admin.update_user_by_id(user_id, attributes)  # type: ignore[arg-type]
            return user_dict(response.user)

        return await self._call("update_user", call, retry_safe=True, caller=caller)

    async def list_users(
        self, page: int, per_page: int, *, caller: Caller = UNKNOWN_CALLER
    ) -> UserPage:
        """The SDK's own ``list_users`` parses the page at once, so one record it cannot
        read would fail the page for every admin; this reads the same endpoint over the
        same client and validates each record on its own, as the SDK would parse it."""

        def call() -> UserPage:
            # The SDK's own request helper: same headers, client and error mapping.
            response = self._admin._request(
                "GET", "admin/users", query=httpx.QueryParams(page=page, per_page=per_page)
            )
            try:
                records = response.json()["users"]
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise BadListing(str(exc)) from exc
            if not isinstance(records, list):
                raise BadListing("users is not a list")
            users: list[dict[str, Any]] = []
            skipped: list[str] = []
            for record in records:
                try:
                    users.append(user_dict(User.model_validate_json(json.dumps(record))))
                except (ValidationError, ValueError, TypeError, RecursionError):
                    record_id = record.get("id") if isinstance(record, dict) else None
                    skipped.append(str(record_id) if record_id is not None else "?")
            if skipped:
                log.warning("upstream_bad_records_skipped", operation="list_users", ids=skipped)
            return UserPage(users=users, skipped=skipped)

        return await self._call("list_users", call, retry_safe=True, caller=caller)

    async def health(self) -> dict[str, Any]:
        """GET /health on the upstream, through the same bulkhead and breaker."""

        def call() -> dict[str, Any]:
            # Raw httpx errors are raised as the SDK would, so they take the same
            # retry and mapping path as every other call.
            try:
                response = self.http_client.get(f"{self.config.url}/health")
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                raise AuthRetryableError(f"health answered {status}", status) from exc
            except httpx.RequestError as exc:
                raise AuthRetryableError(str(exc), 0) from exc
            body: dict[str, Any] = response.json()
            return body

        # The service's own probe: fixed content, so a failure is evidence on its own
        # (caller None); it never waits for a slot (readiness must answer at once).
        return await self._call(
            "health", call, retry_safe=True, caller=None, priority=Priority.PROBE
        )

    def _user_client(self) -> SyncGoTrueClient:
        # Per call, so no user's session outlives the call; it shares the pool, and must
        # never be closed (that would close the shared httpx client).
        return SyncGoTrueClient(
            url=self.config.url,
            headers=self._user_headers,
            http_client=self.http_client,
            persist_session=False,
            auto_refresh_token=False,
        )

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
            self.breaker.record_failure(None if not trace.sent else caller)
            log.warning("upstream_timeout", operation=operation, deadline=self.config.deadline)
            raise errors.DeadlineExceeded(
                debug=f"no answer from {self.config.url} within {self.config.deadline}s"
            ) from None
        except AuthError as exc:
            mapped = self._map_error(operation, exc)
            if is_upstream_failure(exc, mapped):
                self.breaker.record_failure(evidence_caller(exc, caller))
            else:
                self.breaker.record_success()
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
