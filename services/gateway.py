"""The only code that calls the Supabase SDK.

The SDK is blocking, so every call runs on a worker thread. Each call goes through
``SupabaseGateway._call``, which:

1. asks the circuit breaker (a dead upstream costs microseconds, not a thread);
2. takes a slot of a dedicated ``anyio.CapacityLimiter`` (the bulkhead), waiting at most
   ``pool_wait`` before answering 503, so a slow upstream can never queue work without bound;
3. runs the call with ``anyio.to_thread.run_sync`` under an await-level deadline (504);
4. inside the thread, the injected ``httpx.Client`` (HTTP/1.1, pool sized to the bulkhead)
   runs over ``DeadlineBackend``, which cuts every socket connect, read and write to the
   time left, so even a response that trickles in byte by byte ends with the deadline and
   the thread ends on its own;
5. retries transport failures and 502/503/504 with jittered backoff, only within the
   deadline, and only where a repeat is harmless;
6. maps SDK exceptions to ``services.errors`` exactly once.

The bulkhead slot is held until the thread really ends, not until the awaiting task gives
up: a cancelled await does not stop a running thread, and releasing the slot early would let
abandoned threads pile up. User calls never share SDK session state: each builds a
throwaway ``SyncGoTrueClient`` (``persist_session=False``, ``auto_refresh_token=False``) over
the shared pool; admin calls use one separate service-role client.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpcore
import httpx
import structlog
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import (
    AuthApiError,
    AuthError,
    AuthRetryableError,
    AuthWeakPasswordError,
)
from supabase_auth.helpers import parse_user_response
from supabase_auth.types import Session, User
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from services import apikeys, errors, keyrefusals, metrics
from services.breaker import BreakerState, CircuitBreaker

T = TypeVar("T")
log = structlog.get_logger("services.gateway")

# The absolute (monotonic) time by which the current upstream call must be over. Set on the
# loop before the thread hop; anyio copies the context into the worker thread.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("upstream_deadline")

_RETRYABLE_STATUSES = frozenset({502, 503, 504})
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class UpstreamDeadline(httpx.TimeoutException):
    """The call's whole deadline passed while talking to the upstream."""


@dataclass(frozen=True)
class GatewayConfig:
    url: str
    anon_key: str
    service_role_key: str
    pool_size: int = 16
    pool_wait: float = 0.5
    deadline: float = 5.0
    connect_timeout: float = 1.5
    read_timeout: float = 4.0
    max_attempts: int = 3
    breaker_failure_threshold: int = 5
    breaker_open_seconds: float = 10.0


@dataclass(frozen=True)
class AuthSession:
    """A Supabase session as handed to the browser."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires_at: int
    user: dict[str, Any]
    token_type: str = "bearer"

    @classmethod
    def from_sdk(cls, session: Session) -> AuthSession:
        return cls(
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_in=session.expires_in,
            expires_at=session.expires_at or int(time.time()) + session.expires_in,
            user=user_dict(session.user),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "user": self.user,
        }


def user_dict(user: User) -> dict[str, Any]:
    return user.model_dump(mode="json", exclude_none=True)


def _time_left(timeout: float | None) -> float:
    """``timeout`` cut to what is left of the current call's deadline."""
    deadline = _deadline.get(None)
    if deadline is None:
        return timeout if timeout is not None else float("inf")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamDeadline("the upstream call ran out of time")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineSocket(httpcore.NetworkStream):
    """Every read, write and TLS handshake gets at most the time left, so a peer that
    trickles bytes (headers or body) cannot keep the thread past the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineSocket(
            self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking socket backend, bound by the current call's deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _time_left(timeout), local_address, socket_options
        )
        return _DeadlineSocket(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineSocket(
            self._inner.connect_unix_socket(path, _time_left(timeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def build_http_client(config: GatewayConfig) -> httpx.Client:
    """The SDK's HTTP client: HTTP/1.1, a pool the size of the bulkhead, deadline-bound."""
    limits = httpx.Limits(
        max_connections=config.pool_size,
        max_keepalive_connections=config.pool_size,
        keepalive_expiry=30.0,
    )
    transport = httpx.HTTPTransport(limits=limits, http2=False, retries=0)
    # httpx takes no network backend, so its pool is rebuilt with the same limits over the
    # deadline-bound backend (httpcore's pool and backend are public API).
    transport._pool = httpcore.ConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=DeadlineBackend(),
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.read_timeout,
            pool=config.pool_wait + config.connect_timeout,
        ),
        follow_redirects=False,
    )


class _SlotState(enum.Enum):
    PENDING = enum.auto()
    RUNNING = enum.auto()
    ABANDONED = enum.auto()


class _Slot:
    """One bulkhead slot, released exactly once: when its thread ends, or at once if the
    thread never started. anyio skips a queued call whose await was cancelled, so the
    thread's own ``finally`` alone could leak the slot."""

    __slots__ = ("_limiter", "_lock", "_loop", "_state")

    def __init__(self, limiter: anyio.CapacityLimiter, loop: asyncio.AbstractEventLoop) -> None:
        self._limiter = limiter
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _SlotState.PENDING

    def start(self) -> bool:
        """Called first thing in the worker thread; False if the caller already gave up."""
        with self._lock:
            if self._state is _SlotState.ABANDONED:
                return False
            self._state = _SlotState.RUNNING
            return True

    def finish(self) -> None:
        """Called last thing in the worker thread."""
        # A closed loop (shutdown) has nothing left to release to.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._limiter.release_on_behalf_of, self)

    def abandon(self) -> None:
        """Called on the loop when the await ends without a result."""
        with self._lock:
            if self._state is not _SlotState.PENDING:
                return
            self._state = _SlotState.ABANDONED
        self._limiter.release_on_behalf_of(self)


class SupabaseGateway:
    """Async facade over the blocking SDK. Build one per process, in the app lifespan."""

    def __init__(self, config: GatewayConfig, http_client: httpx.Client | None = None) -> None:
        self.config = config
        self.http_client = http_client or build_http_client(config)
        self.limiter = anyio.CapacityLimiter(config.pool_size)
        # anyio's own thread limiter; our bulkhead already bounds the threads, this keeps
        # the calls off the default limiter shared with the rest of the process.
        self._thread_limiter = anyio.CapacityLimiter(config.pool_size)
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failure_threshold,
            open_seconds=config.breaker_open_seconds,
            on_change=self._breaker_changed,
        )
        # Each key in `apikey`; as the bearer only if it is a JWT (a legacy key). The SDK
        # adds `Authorization: Bearer <token>` itself only for a user's access token.
        self._public_key = apikeys.classify(config.anon_key)
        self._server_key = apikeys.classify(config.service_role_key)
        self._key_refusals = keyrefusals.KeyRefusals(self._public_key, self._server_key)
        log.info("upstream_api_keys", public=self._public_key.label, server=self._server_key.label)
        self._user_headers = apikeys.request_headers(self._public_key)
        self._admin = SyncGoTrueAdminAPI(
            url=config.url,
            headers=apikeys.request_headers(self._server_key),
            http_client=self.http_client,
        )
        metrics.POOL_SIZE.set(config.pool_size)

    def close(self) -> None:
        self.http_client.close()

    # -- operations ------------------------------------------------------------------

    async def sign_in(self, email: str, password: str) -> AuthSession:
        def call() -> AuthSession:
            response = self._user_client().sign_in_with_password(
                {"email": email, "password": password}
            )
            return _session_of(response.session)

        return await self._call("sign_in", call, retry_safe=True)

    async def refresh(self, refresh_token: str) -> AuthSession:
        # A repeat is harmless: GoTrue answers the parent of the active token with the
        # active pair, which is exactly what a retry after a lost response needs.
        def call() -> AuthSession:
            response = self._user_client().refresh_session(refresh_token)
            return _session_of(response.session)

        return await self._call("refresh", call, retry_safe=True)

    async def sign_out(self, access_token: str, scope: str) -> None:
        def call() -> None:
            self._admin.sign_out(access_token, scope)  # type: ignore[arg-type]

        await self._call("sign_out", call, retry_safe=True)

    async def create_user(self, attributes: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.create_user(attributes).user)  # type: ignore[arg-type]

        # Not retried after the request may have been sent: the caller handles a
        # duplicate through its idempotency record.
        return await self._call("create_user", call, retry_safe=False)

    async def get_user(self, user_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.get_user_by_id(user_id).user)

        return await self._call("get_user", call, retry_safe=True)

    async def update_user(self, user_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._admin.update_user_by_id(user_id, attributes)  # type: ignore[arg-type]
            return user_dict(response.user)

        return await self._call("update_user", call, retry_safe=True)

    async def list_users(self, page: int, per_page: int) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            return [user_dict(u) for u in self._admin.list_users(page=page, per_page=per_page)]

        return await self._call("list_users", call, retry_safe=True)

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

        return await self._call("health", call, retry_safe=True)

    # -- account lifecycle: recovery, confirmation, OTP, OAuth, MFA, deletion -------------
    # Sending mail and consuming one-time codes are never repeated once the request may have
    # left (retry_safe=False): a repeat would mail twice or burn the code. Calls made with a
    # user's access token pass it explicitly; no SDK client keeps it.

    async def send_recovery(self, email: str, redirect_to: str | None) -> None:
        def call() -> None:
            options = {"redirect_to": redirect_to} if redirect_to else {}
            self._user_client().reset_password_for_email(email, options)  # type: ignore[arg-type]

        await self._call("send_recovery", _lifecycle(call), retry_safe=False)

    async def resend(self, email: str, kind: str, redirect_to: str | None) -> None:
        def call() -> None:
            options = {"email_redirect_to": redirect_to} if redirect_to else {}
            self._user_client().resend(
                {"type": kind, "email": email, "options": options}  # type: ignore[typeddict-item]
            )

        await self._call("resend", _lifecycle(call), retry_safe=False)

    async def send_otp(self, email: str, redirect_to: str | None) -> None:
        def call() -> None:
            options: dict[str, Any] = {"should_create_user": False}
            if redirect_to:
                options["email_redirect_to"] = redirect_to
            self._user_client().sign_in_with_otp(
                {"email": email, "options": options}  # type: ignore[typeddict-item]
            )

        await self._call("send_otp", _lifecycle(call), retry_safe=False)

    async def verify_otp(self, params: dict[str, str]) -> AuthSession | None:
        """``/verify`` with an emailed code or token hash; None for the first half of a
        secure email change."""

        def call() -> AuthSession | None:
            response = self._user_client().verify_otp(params)  # type: ignore[arg-type]
            return AuthSession.from_sdk(response.session) if response.session else None

        return await self._call("verify_otp", _lifecycle(call), retry_safe=False)

    async def exchange_code(self, auth_code: str, code_verifier: str) -> AuthSession:
        def call() -> AuthSession:
            response = self._user_client().exchange_code_for_session(
                {"auth_code": auth_code, "code_verifier": code_verifier}
            )
            return _session_of(response.session)

        return await self._call("exchange_code", _lifecycle(call), retry_safe=False)

    async def reauthenticate(self, access_token: str) -> None:
        def call() -> None:
            self._user_client()._request("GET", "reauthenticate", jwt=access_token)

        await self._call("reauthenticate", _lifecycle(call, token=True), retry_safe=False)

    async def own_user(self, access_token: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request("GET", "user", jwt=access_token)
            return user_dict(parse_user_response(response).user)

        return await self._call("own_user", _lifecycle(call, token=True), retry_safe=True)

    async def update_own_user(
        self, access_token: str, attributes: dict[str, Any], redirect_to: str | None = None
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request(
                "PUT", "user", jwt=access_token, body=attributes, redirect_to=redirect_to
            )
            return user_dict(parse_user_response(response).user)

        return await self._call("update_own_user", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_enroll(
        self, access_token: str, friendly_name: str, issuer: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"factor_type": "totp", "friendly_name": friendly_name}
        if issuer:
            body["issuer"] = issuer

        def call() -> dict[str, Any]:
            response = self._user_client()._request("POST", "factors", jwt=access_token, body=body)
            answer: dict[str, Any] = response.json()
            return answer

        return await self._call("mfa_enroll", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_challenge(self, access_token: str, factor_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request(
                "POST", f"factors/{factor_id}/challenge", jwt=access_token, body={}
            )
            answer: dict[str, Any] = response.json()
            return answer

        return await self._call("mfa_challenge", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_verify(
        self, access_token: str, factor_id: str, challenge_id: str, code: str
    ) -> AuthSession:
        body = {"challenge_id": challenge_id, "code": code}

        def call() -> AuthSession:
            response = self._user_client()._request(
                "POST", f"factors/{factor_id}/verify", jwt=access_token, body=body
            )
            return AuthSession.from_sdk(Session.model_validate_json(response.content))

        return await self._call("mfa_verify", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_unenroll(self, access_token: str, factor_id: str) -> None:
        def call() -> None:
            self._user_client()._request("DELETE", f"factors/{factor_id}", jwt=access_token)

        await self._call("mfa_unenroll", _lifecycle(call, token=True), retry_safe=True)

    async def delete_user(self, user_id: str) -> None:
        def call() -> None:
            self._admin.delete_user(user_id)

        # A repeat after a lost answer finds no user: the caller treats that as done.
        await self._call("delete_user", call, retry_safe=True)

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

    async def _call(self, operation: str, fn: Callable[[], T], *, retry_safe: bool) -> T:
        started = time.monotonic()
        outcome = "error"
        try:
            result = await self._guarded(operation, fn, retry_safe=retry_safe)
        except errors.AuthServiceError as exc:
            outcome = exc.code
            raise
        else:
            outcome = "ok"
            return result
        finally:
            metrics.UPSTREAM_CALLS.labels(operation, outcome).inc()
            metrics.UPSTREAM_LATENCY.labels(operation).observe(time.monotonic() - started)

    async def _guarded(self, operation: str, fn: Callable[[], T], *, retry_safe: bool) -> T:
        if not self.breaker.try_acquire():
            raise errors.CircuitOpen(
                retry_after=max(1.0, self.breaker.retry_after()),
                debug=f"{self.breaker.failure_threshold} upstream failures in a row; "
                f"the next probe is allowed in {self.breaker.retry_after():.1f}s",
            )
        slot = _Slot(self.limiter, asyncio.get_running_loop())
        metrics.POOL_WAITING.inc()
        try:
            with anyio.fail_after(self.config.pool_wait):
                await self.limiter.acquire_on_behalf_of(slot)
        except TimeoutError:
            self.breaker.release_probe()
            log.warning("upstream_pool_exhausted", operation=operation)
            raise errors.PoolExhausted(
                retry_after=1,
                debug=f"all {self.config.pool_size} upstream slots stayed busy "
                f"for {self.config.pool_wait}s",
            ) from None
        finally:
            metrics.POOL_WAITING.dec()
        metrics.POOL_IN_USE.set(self.limiter.borrowed_tokens)

        deadline = time.monotonic() + self.config.deadline
        # The thread gives up a little before the await does, so the usual timeout is the
        # thread's own clean one rather than an abandonment.
        token = _deadline.set(deadline - min(0.25, self.config.deadline * 0.1))

        def work() -> T:
            if not slot.start():
                raise errors.DeadlineExceeded()
            try:
                return self._with_retries(operation, fn, retry_safe=retry_safe)
            finally:
                slot.finish()

        try:
            with anyio.fail_after(self.config.deadline):
                result = await anyio.to_thread.run_sync(
                    work, abandon_on_cancel=True, limiter=self._thread_limiter
                )
        except TimeoutError:
            slot.abandon()
            self.breaker.record_failure()
            log.warning("upstream_timeout", operation=operation, deadline=self.config.deadline)
            raise errors.DeadlineExceeded(
                debug=f"no answer from {self.config.url} within {self.config.deadline}s"
            ) from None
        except AuthError as exc:
            mapped = self._map_error(operation, exc)
            if mapped.status >= 500 and not isinstance(mapped, errors.UpstreamMisconfigured):
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            raise mapped from exc
        except errors.AuthServiceError:
            self.breaker.release_probe()
            raise
        except Exception as exc:
            # A 2xx body the SDK's models reject, or an error it let escape unmapped.
            self.breaker.record_failure()
            log.error("upstream_unexpected_answer", operation=operation, error=type(exc).__name__)
            raise errors.UpstreamUnavailable(
                retry_after=1,
                debug=f"{self.config.url} gave an answer the SDK could not read "
                f"({type(exc).__name__}); check SUPABASE_URL points at Supabase",
            ) from exc
        except BaseException:
            # Cancelled (the client went away, or shutdown): the slot follows the thread.
            slot.abandon()
            self.breaker.release_probe()
            raise
        finally:
            _deadline.reset(token)
        self.breaker.record_success()
        return result

    def _with_retries(self, operation: str, fn: Callable[[], T], *, retry_safe: bool) -> T:
        deadline = _deadline.get()

        def retryable(exc: BaseException) -> bool:
            return _is_retryable(exc, retry_safe=retry_safe)

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
            return refused or _map_api_error(operation, exc, self.config.url)
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


def _session_of(session: Session | None) -> AuthSession:
    if session is None:
        raise errors.EmailNotConfirmed()
    return AuthSession.from_sdk(session)


def _is_retryable(exc: BaseException, *, retry_safe: bool) -> bool:
    if not isinstance(exc, AuthRetryableError):
        return retry_safe and is_transient_key_error(exc)
    cause = exc.__cause__
    if isinstance(cause, UpstreamDeadline):
        return False
    if isinstance(cause, _CONNECT_FAILURES):
        return True  # The request never left: always safe to repeat.
    return retry_safe and (
        exc.status in _RETRYABLE_STATUSES or isinstance(cause, httpx.TransportError)
    )


def is_transient_key_error(exc: BaseException) -> bool:
    """A platform-side refusal of a key that a repeat may get past (for retry predicates)."""
    return isinstance(exc, AuthApiError) and keyrefusals.is_transient_key_error(
        exc.status, exc.code, exc.message
    )


_API_ERRORS: dict[str, type[errors.AuthServiceError]] = {
    "invalid_credentials": errors.InvalidCredentials,
    "email_not_confirmed": errors.EmailNotConfirmed,
    "phone_not_confirmed": errors.EmailNotConfirmed,
    "user_banned": errors.UserBanned,
    "refresh_token_not_found": errors.InvalidRefreshToken,
    "refresh_token_already_used": errors.RefreshTokenReused,
    "session_not_found": errors.SessionRevoked,
    "session_expired": errors.SessionRevoked,
    "email_exists": errors.EmailExists,
    "user_already_exists": errors.EmailExists,
    "weak_password": errors.WeakPassword,
    "same_password": errors.ValidationFailed,
    "validation_failed": errors.ValidationFailed,
    "email_address_invalid": errors.ValidationFailed,
    "user_not_found": errors.NotFound,
    "over_request_rate_limit": errors.UpstreamRateLimited,
    "over_email_send_rate_limit": errors.UpstreamRateLimited,
    "conflict": errors.Conflict,
}


def _map_api_error(operation: str, exc: AuthApiError, url: str) -> errors.AuthServiceError:
    code = exc.code or ""
    if operation == "sign_out" and exc.status in (401, 403, 404):
        return errors.SessionRevoked()
    error_class = _API_ERRORS.get(code)
    if error_class is not None:
        if error_class is errors.ValidationFailed:
            return error_class(exc.message)
        return error_class()
    if exc.status >= 500:
        log.error("upstream_server_error", operation=operation, status=exc.status, code=code)
        return errors.UpstreamUnavailable(
            retry_after=1, debug=f"{url} failed with {exc.status} {code}"
        )
    log.error("upstream_unmapped_error", operation=operation, status=exc.status, code=code)
    return errors.UpstreamUnavailable(
        retry_after=1, debug=f"{url} answered {exc.status} {code}: {exc.message}"
    )


# -- account lifecycle: upstream answers that mean something specific to these flows ------

_LIFECYCLE_ERRORS: dict[str, Callable[[], errors.AuthServiceError]] = {
    "otp_expired": errors.InvalidCode,
    "reauthentication_not_valid": errors.InvalidNonce,
    "mfa_verification_failed": errors.InvalidMfaCode,
    "mfa_challenge_expired": errors.MfaChallengeInvalid,
    "mfa_ip_address_mismatch": errors.MfaChallengeInvalid,
    "mfa_factor_name_conflict": errors.FactorExists,
    "mfa_factor_not_found": lambda: errors.NotFound("No such factor."),
    "too_many_enrolled_mfa_factors": lambda: errors.ValidationFailed(
        "The maximum number of factors is enrolled; remove one first."
    ),
    "insufficient_aal": errors.InsufficientAssurance,
    "flow_state_not_found": errors.InvalidAuthCode,
    "flow_state_expired": errors.InvalidAuthCode,
    "bad_code_verifier": errors.InvalidAuthCode,
    "otp_disabled": lambda: errors.NotFound("No such account."),
}
# With a user's token, these mean the token or its session is gone, not a bad service key.
_TOKEN_ERRORS: dict[str, Callable[[], errors.AuthServiceError]] = {
    "bad_jwt": errors.InvalidToken,
    "no_authorization": errors.InvalidToken,
    "session_not_found": errors.SessionRevoked,
    "user_not_found": errors.SessionRevoked,
}


def _lifecycle(fn: Callable[[], T], *, token: bool = False) -> Callable[[], T]:
    """``fn`` with the lifecycle flows' upstream error codes mapped to ours (raised from the
    worker thread, so they take the gateway's path for our own errors)."""

    def call() -> T:
        try:
            return fn()
        except AuthApiError as exc:
            code = exc.code or ""
            factory = (_TOKEN_ERRORS.get(code) if token else None) or _LIFECYCLE_ERRORS.get(code)
            if factory is None:
                raise
            raise factory() from exc

    return call
