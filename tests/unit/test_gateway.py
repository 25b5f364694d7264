"""The Supabase gateway: bulkhead, deadlines, retries, error mapping and the breaker.

Rare upstream answers come from an ``httpx.MockTransport``; timeouts that need a real
socket (the deadline-bound socket backend of ``build_http_client``) use the ``FaultProxy``
in front of a real localauth. Every wait is bounded: blocked handlers wait on a
``threading.Event`` with a timeout, and polls give up after a few seconds.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from services import errors
from services.breaker import BreakerState, Caller
from services.gateway import GatewayConfig, SupabaseGateway, build_http_client
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio

UPSTREAM = "http://upstream.test/auth/v1"
API = {"X-Supabase-Api-Version": "2024-01-01"}
USER_ID = "11111111-1111-4111-8111-111111111111"
USER: dict[str, Any] = {
    "id": USER_ID,
    "aud": "authenticated",
    "role": "authenticated",
    "email": "someone@example.com",
    "app_metadata": {},
    "user_metadata": {},
    "created_at": "2024-01-01T00:00:00Z",
}
SESSION = {
    "access_token": "header.payload.signature",
    "refresh_token": "refresh-token",
    "expires_in": 3600,
    "expires_at": 2_000_000_000,
    "token_type": "bearer",
    "user": USER,
}
# The longest a blocked handler may wait: a failing test must still end.
BLOCK_LIMIT = 10.0

Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A MockTransport handler that counts calls and answers from a script."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def config(**overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "url": UPSTREAM,
        "anon_key": "anon",
        "service_role_key": "service",
        "pool_size": 2,
        "deadline": 1.0,
        "connect_timeout": 0.5,
        "read_timeout": 0.8,
        "max_attempts": 3,
        "breaker_failure_threshold": 5,
        "breaker_open_seconds": 30.0,
    }
    values.update(overrides)
    return GatewayConfig(**values)


def mock_gateway(handler: Handler, **overrides: Any) -> SupabaseGateway:
    """A gateway whose upstream is ``handler`` (no sockets)."""
    return SupabaseGateway(
        config(**overrides), http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )


def api_error(status: int, code: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": code, **extra}, headers=API)


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll ``predicate`` on the loop until it holds, for at most ``within`` seconds."""
    with anyio.move_on_after(within):
        while not predicate():
            await anyio.sleep(0.01)
    return predicate()


def blocking(release: threading.Event, entered: threading.Event) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        entered.set()
        release.wait(BLOCK_LIMIT)
        return httpx.Response(200, json={"status": "ok"})

    return handler


async def attempt(fn: Callable[..., Any], *args: Any) -> None:
    """Run a gateway call in a task group whatever it answers."""
    with contextlib.suppress(errors.AuthServiceError):
        await fn(*args)


# -- bulkhead -------------------------------------------------------------------------


async def test_slot_is_held_until_an_abandoned_thread_really_ends() -> None:
    """A call cut off by the deadline answers 504; its slot stays taken until its thread ends."""
    release, entered = threading.Event(), threading.Event()
    gateway = mock_gateway(blocking(release, entered), deadline=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as caught:
            await gateway.health()
        assert caught.value.status == 504
        assert time.monotonic() - started < 0.5 + 0.3
        assert entered.is_set()
        # The thread is still blocked in the upstream call: its slot is not free.
        await anyio.sleep(0.1)
        assert gateway.admission.in_flight == 1
        release.set()
        assert await eventually(lambda: gateway.admission.in_flight == 0)
    finally:
        release.set()
        gateway.close()


async def test_call_cancelled_before_its_thread_started_releases_its_slot() -> None:
    """A call cancelled while still queued for a thread frees its slot, and its work never runs."""
    upstream = Upstream(httpx.Response(200, json={"status": "ok"}))
    gateway = mock_gateway(upstream)
    # Hold every worker-thread token so the call queues after taking its bulkhead slot.
    holders = [object() for _ in range(int(gateway._thread_limiter.total_tokens))]
    for holder in holders:
        await gateway._thread_limiter.acquire_on_behalf_of(holder)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(gateway.health)
            assert await eventually(lambda: gateway.admission.in_flight == 1)
            group.cancel_scope.cancel()
        assert gateway.admission.in_flight == 0
        for holder in holders:
            gateway._thread_limiter.release_on_behalf_of(holder)
        holders.clear()
        await anyio.sleep(0.1)
        assert upstream.calls == []
        assert gateway.admission.in_flight == 0
        # The gateway still works afterwards.
        assert await gateway.health() == {"status": "ok"}
    finally:
        for holder in holders:
            gateway._thread_limiter.release_on_behalf_of(holder)
        gateway.close()


async def test_immediate_cancellation_never_leaks_a_slot() -> None:
    """However early a call is cancelled (before, during or after the thread hop), the slot
    comes back."""
    upstream = Upstream(httpx.Response(200, json={"status": "ok"}))
    gateway = mock_gateway(upstream, pool_size=1)
    try:
        for round_ in range(50):
            async with anyio.create_task_group() as group:
                group.start_soon(gateway.health)
                for _ in range(round_ % 5):
                    await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()
            assert await eventually(lambda: gateway.admission.in_flight == 0), round_
        assert await gateway.health() == {"status": "ok"}
    finally:
        gateway.close()


async def test_probe_never_waits_for_a_slot() -> None:
    """Readiness's upstream probe finds every slot busy: 503 at once, no upstream call."""
    release, entered = threading.Event(), threading.Event()
    upstream = Upstream(blocking(release, entered))
    gateway = mock_gateway(upstream, pool_size=1, min_limit=1, initial_limit=1, deadline=5.0)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(gateway.health)
            assert await anyio.to_thread.run_sync(entered.wait, BLOCK_LIMIT)
            started = time.monotonic()
            with pytest.raises(errors.PoolExhausted) as caught:
                await gateway.health()
            assert time.monotonic() - started < 0.05
            assert caught.value.status == 503
            assert caught.value.retry_after
            assert len(upstream.calls) == 1
            release.set()
        assert gateway.admission.in_flight == 0
    finally:
        release.set()
        gateway.close()


async def test_silent_upstream_sheds_queued_calls_within_half_the_deadline() -> None:
    """Every slot is held by a call the upstream never answers: a queued call is refused
    (503 upstream_busy) once the silence says it cannot finish in time, about half its
    deadline, not at the deadline; it never reaches the upstream."""
    release, entered = threading.Event(), threading.Event()
    upstream = Upstream(blocking(release, entered))
    gateway = mock_gateway(upstream, pool_size=1, min_limit=1, initial_limit=1, deadline=2.0)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(attempt, gateway.get_user, USER_ID)
            assert await anyio.to_thread.run_sync(entered.wait, BLOCK_LIMIT)
            started = time.monotonic()
            with pytest.raises(errors.PoolExhausted) as caught:
                await gateway.get_user(USER_ID)
            took = time.monotonic() - started
            assert 0.5 < took < 1.0 + 0.3, took
            assert caught.value.code == "upstream_busy"
            # Once the silence is longer than a whole deadline (and the margin), arrivals
            # are refused by the next re-check of the queue (50 ms): their own call would
            # take at least that long.
            await anyio.sleep(max(0.0, 2.35 - (time.monotonic() - started)))
            started = time.monotonic()
            with pytest.raises(errors.PoolExhausted):
                await gateway.get_user(USER_ID)
            assert time.monotonic() - started < 0.2
            assert len(upstream.calls) == 1
            assert gateway.admission.shed_counts["deadline"] == 2
            release.set()
        # The first call was abandoned at its deadline: its slot follows its thread.
        assert await eventually(lambda: gateway.admission.in_flight == 0)
    finally:
        release.set()
        gateway.close()


def slow_user(seconds: float) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(seconds)
        return httpx.Response(200, json=USER, headers=API)

    return handler


async def test_a_burst_queues_while_it_can_finish_in_time() -> None:
    """More calls than slots against a healthy upstream: they queue and all succeed (a
    fixed pool wait would have refused most of them)."""
    upstream = Upstream(slow_user(0.05))
    gateway = mock_gateway(upstream, pool_size=2, min_limit=2, initial_limit=2, deadline=2.0)
    try:
        results: list[dict[str, Any]] = []

        async def one() -> None:
            results.append(await gateway.get_user(USER_ID))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(one)
        assert len(results) == 20
        assert gateway.admission.shed_counts == {}
        assert gateway.admission.in_flight == 0
    finally:
        gateway.close()


async def test_a_call_that_cannot_make_its_deadline_is_refused_at_once() -> None:
    """With the service time learnt (0.3 s) and one slot, the fourth queued call could not
    finish within a 1 s deadline: refused on arrival, not after waiting."""
    upstream = Upstream(slow_user(0.3))
    gateway = mock_gateway(upstream, pool_size=1, min_limit=1, initial_limit=1, deadline=1.0)
    try:
        await gateway.get_user(USER_ID)  # learn the service time
        outcomes: list[str] = []

        async def one() -> None:
            started = time.monotonic()
            try:
                await gateway.get_user(USER_ID)
                outcomes.append("ok")
            except errors.PoolExhausted:
                outcomes.append(f"shed {time.monotonic() - started:.2f}")

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
                await anyio.sleep(0.01)
        assert outcomes.count("ok") >= 2, outcomes
        sheds = [float(o.split()[1]) for o in outcomes if o.startswith("shed")]
        assert sheds, outcomes
        assert min(sheds) < 0.05, outcomes
    finally:
        gateway.close()


async def test_refresh_is_served_before_queued_logins() -> None:
    """A refresh (CONTROL) arriving behind a queue of logins is served next, not last."""
    order: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        kind = "refresh" if "refresh_token" in request.url.params.get("grant_type", "") else "login"
        order.append(kind)
        return httpx.Response(200, json=SESSION, headers=API)

    gateway = mock_gateway(handler, pool_size=1, min_limit=1, initial_limit=1, deadline=3.0)
    try:
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(gateway.sign_in, "someone@example.com", "pw")
            assert await eventually(lambda: gateway.admission.queued == 5)
            group.start_soon(gateway.refresh, "refresh-token")
        # One login was already in flight; the refresh came straight after it.
        assert order.index("refresh") <= 2, order
    finally:
        gateway.close()


async def test_breaker_is_asked_again_when_a_queued_call_is_admitted() -> None:
    """Calls queued behind a failing upstream are not sent once the breaker opens."""
    release, entered = threading.Event(), threading.Event()
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        entered.set()
        release.wait(BLOCK_LIMIT)
        raise httpx.ConnectError("refused")

    gateway = mock_gateway(
        handler,
        pool_size=1,
        min_limit=1,
        initial_limit=1,
        deadline=5.0,
        max_attempts=1,
        breaker_failure_threshold=1,
    )
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await gateway.get_user(USER_ID)
        except errors.AuthServiceError as exc:
            outcomes.append(exc.code)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(one)
            assert await anyio.to_thread.run_sync(entered.wait, BLOCK_LIMIT)
            group.start_soon(one)
            assert await eventually(lambda: gateway.admission.queued == 1)
            release.set()
        assert sorted(outcomes) == ["upstream_circuit_open", "upstream_unavailable"], outcomes
        assert len(calls) == 1
    finally:
        release.set()
        gateway.close()


# -- deadlines --------------------------------------------------------------------------


@pytest.fixture
def proxy(localauth: LocalAuth) -> Iterator[FaultProxy]:
    port = int(localauth.url.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as fault:
        yield fault


def proxied_gateway(localauth: LocalAuth, proxy: FaultProxy, deadline: float) -> SupabaseGateway:
    """The production HTTP client (``build_http_client``), talking to localauth via the proxy."""
    return SupabaseGateway(
        config(
            url=proxy.url + "/auth/v1",
            anon_key=localauth.anon_key,
            service_role_key=localauth.service_role_key,
            deadline=deadline,
            read_timeout=deadline * 0.9,  # would outlast the thread's deadline if not clamped
        )
    )


async def test_hanging_upstream_answers_504_by_the_threads_own_timeout(
    localauth: LocalAuth, proxy: FaultProxy
) -> None:
    """A real upstream that never answers gives 504 just before the deadline, and the thread
    has already ended on its own (its socket timeout was clamped to the time left)."""
    proxy.set_mode(Mode.HANG)
    gateway = proxied_gateway(localauth, proxy, deadline=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as caught:
            await gateway.sign_in("someone@example.com", "Correct-Horse-9")
        took = time.monotonic() - started
        assert caught.value.status == 504
        assert 0.7 < took < 1.0 + 0.3
        # Not abandoned: the slot came back with the answer.
        assert gateway.admission.in_flight == 0
        assert proxy.stats.accepted >= 1
    finally:
        gateway.close()


async def test_body_trickling_past_the_deadline_is_aborted(
    localauth: LocalAuth, proxy: FaultProxy
) -> None:
    """An answer that drips in a byte at a time (never idle long enough for a read timeout)
    is cut off at the deadline with a 504, by the thread itself."""
    proxy.set_mode(Mode.DRIP, drip_interval=0.02)
    gateway = proxied_gateway(localauth, proxy, deadline=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as caught:
            await gateway.sign_in("someone@example.com", "Wrong-password-1")
        took = time.monotonic() - started
        assert caught.value.status == 504
        assert 0.7 < took < 1.0 + 0.3
        assert gateway.admission.in_flight == 0
        assert proxy.stats.forwarded_chunks >= 1  # the request reached localauth
    finally:
        gateway.close()


async def test_healthy_proxy_path_works(localauth: LocalAuth, proxy: FaultProxy) -> None:
    """Control for the two tests above: the same gateway and proxy answer normally in PASS."""
    gateway = proxied_gateway(localauth, proxy, deadline=2.0)
    try:
        with pytest.raises(errors.InvalidCredentials):
            await gateway.sign_in("nobody@example.com", "Wrong-password-1")
        assert isinstance(await gateway.health(), dict)
        assert gateway.admission.in_flight == 0
    finally:
        gateway.close()


@pytest.mark.parametrize(
    ("keepalive", "second"),
    [
        pytest.param(None, errors.InvalidCredentials, id="default-expiry"),
        # Control: kept past the upstream's own idle timeout, the connection is closed
        # under the request in transit (a sign-in is never repeated).
        pytest.param(30.0, errors.UpstreamUnavailable, id="kept-too-long"),
    ],
)
@pytest.mark.timeout(30)
async def test_an_idle_connection_is_not_reused_as_the_upstream_closes_it(
    localauth: LocalAuth, proxy: FaultProxy, keepalive: float | None, second: type[Exception]
) -> None:
    """localauth (uvicorn) closes a connection idle for 5 s, and requests spend 0.3 s in
    transit. A sign-in sent 4.8 s after the last one arrives after the close: on a
    connection kept 30 s it fails with "Server disconnected without sending a response";
    the default expiry (4 s) opens a fresh connection, and the sign-in is answered."""
    proxy.set_mode(Mode.LATENCY, latency=0.3)
    extra = {} if keepalive is None else {"keepalive": keepalive}
    gateway = SupabaseGateway(
        config(
            url=proxy.url + "/auth/v1",
            anon_key=localauth.anon_key,
            service_role_key=localauth.service_role_key,
            deadline=3.0,
            **extra,
        )
    )
    try:
        with pytest.raises(errors.InvalidCredentials):
            await gateway.sign_in("nobody@example.com", "Wrong-password-1")
        await anyio.sleep(4.8)
        with pytest.raises(second):
            await gateway.sign_in("nobody@example.com", "Wrong-password-1")
    finally:
        gateway.close()


# -- retries ----------------------------------------------------------------------------


async def test_503_then_200_succeeds_after_one_retry() -> None:
    """A retry-safe call (refresh) that meets a 503 is retried and succeeds."""
    upstream = Upstream(
        api_error(503, "unavailable"), httpx.Response(200, json=SESSION, headers=API)
    )
    gateway = mock_gateway(upstream)
    try:
        session = await gateway.refresh("refresh-token")
        assert session.access_token == SESSION["access_token"]
        assert len(upstream.calls) == 2
        assert gateway.breaker.state is BreakerState.CLOSED
    finally:
        gateway.close()


async def test_400_is_never_retried() -> None:
    """A client error is the answer: one upstream call, mapped once."""
    upstream = Upstream(api_error(400, "invalid_credentials"))
    gateway = mock_gateway(upstream)
    try:
        with pytest.raises(errors.InvalidCredentials):
            await gateway.sign_in("someone@example.com", "wrong")
        assert len(upstream.calls) == 1
    finally:
        gateway.close()


async def test_create_user_read_timeout_is_not_retried() -> None:
    """create_user may have reached the upstream when the read timed out: no second POST."""
    upstream = Upstream(httpx.ReadTimeout("slow"), httpx.Response(200, json=USER))
    gateway = mock_gateway(upstream)
    try:
        with pytest.raises(errors.DeadlineExceeded) as caught:
            await gateway.create_user({"email": "someone@example.com", "password": "pw"})
        assert caught.value.status == 504
        assert len(upstream.calls) == 1
    finally:
        gateway.close()


async def test_create_user_connect_error_is_retried() -> None:
    """A connect failure means the request never left, so even create_user is repeated."""
    upstream = Upstream(httpx.ConnectError("refused"), httpx.Response(200, json=USER))
    gateway = mock_gateway(upstream)
    try:
        user = await gateway.create_user({"email": "someone@example.com", "password": "pw"})
        assert user["id"] == USER["id"]
        assert len(upstream.calls) == 2
    finally:
        gateway.close()


async def test_retries_stop_at_the_deadline() -> None:
    """An upstream that keeps answering 503 is retried only while time is left: the answer
    (503, not a hang) comes before the deadline even with a huge attempt budget."""
    upstream = Upstream(api_error(503, "unavailable"))
    gateway = mock_gateway(upstream, deadline=0.6, max_attempts=1000)
    try:
        started = time.monotonic()
        with pytest.raises(errors.UpstreamUnavailable) as caught:
            await gateway.refresh("refresh-token")
        assert caught.value.status == 503
        assert time.monotonic() - started < 0.6 + 0.2
        assert 2 <= len(upstream.calls) < 100
        assert gateway.admission.in_flight == 0
    finally:
        gateway.close()


# -- error mapping ------------------------------------------------------------------------

SIGN_IN = "sign_in"
CREATE_USER = "create_user"


@pytest.mark.parametrize(
    ("operation", "answer", "expected", "status"),
    [
        (SIGN_IN, api_error(400, "invalid_credentials"), errors.InvalidCredentials, 401),
        (SIGN_IN, api_error(400, "email_not_confirmed"), errors.EmailNotConfirmed, 403),
        (SIGN_IN, api_error(403, "user_banned"), errors.UserBanned, 403),
        (CREATE_USER, api_error(422, "email_exists"), errors.EmailExists, 409),
        (
            CREATE_USER,
            api_error(422, "weak_password", weak_password={"reasons": ["length"]}),
            errors.WeakPassword,
            422,
        ),
        (SIGN_IN, api_error(429, "over_request_rate_limit"), errors.UpstreamRateLimited, 429),
        (CREATE_USER, api_error(403, "not_admin"), errors.UpstreamMisconfigured, 503),
        (SIGN_IN, api_error(500, "unexpected_failure"), errors.UpstreamUnavailable, 503),
        (SIGN_IN, httpx.Response(200, json={"unexpected": True}), errors.UpstreamUnavailable, 503),
        (CREATE_USER, httpx.Response(200, text="<html>hi</html>"), errors.UpstreamUnavailable, 503),
        (SIGN_IN, httpx.Response(404, text="404 page not found"), errors.UpstreamUnavailable, 503),
    ],
    ids=[
        "invalid_credentials",
        "email_not_confirmed",
        "user_banned",
        "email_exists",
        "weak_password",
        "over_request_rate_limit",
        "not_admin",
        "500",
        "unparseable-2xx-json",
        "non-json-2xx",
        "plain-text-404",
    ],
)
async def test_sdk_errors_map_to_service_errors(
    operation: str, answer: httpx.Response, expected: type[errors.AuthServiceError], status: int
) -> None:
    """Each upstream answer becomes exactly one services.errors class, never a raw exception."""
    upstream = Upstream(answer)
    gateway = mock_gateway(upstream)
    try:
        call = (
            gateway.sign_in("someone@example.com", "pw")
            if operation == SIGN_IN
            else gateway.create_user({"email": "someone@example.com", "password": "pw"})
        )
        with pytest.raises(errors.AuthServiceError) as caught:
            await call
        assert type(caught.value) is expected
        assert caught.value.status == status
        assert len(upstream.calls) == 1
    finally:
        gateway.close()


# -- breaker ------------------------------------------------------------------------------


async def test_breaker_opens_on_transport_failures_then_answers_without_the_transport() -> None:
    """After N failed calls the breaker answers CircuitOpen (503 + Retry-After) at once and
    the upstream is not called."""
    upstream = Upstream(httpx.ConnectError("refused"))
    gateway = mock_gateway(upstream, breaker_failure_threshold=3, max_attempts=1)
    try:
        for _ in range(3):
            with pytest.raises(errors.UpstreamUnavailable):
                await gateway.sign_in("someone@example.com", "pw")
        assert len(upstream.calls) == 3
        assert gateway.breaker.state is BreakerState.OPEN
        started = time.monotonic()
        with pytest.raises(errors.CircuitOpen) as caught:
            await gateway.sign_in("someone@example.com", "pw")
        assert time.monotonic() - started < 0.05
        assert caught.value.status == 503
        assert caught.value.retry_after is not None
        assert caught.value.retry_after >= 1
        assert len(upstream.calls) == 3
        assert gateway.admission.in_flight == 0
    finally:
        gateway.close()


# -- what the breaker counts ---------------------------------------------------------------


def breaker_state(gateway: SupabaseGateway) -> BreakerState:
    """Read through a call so mypy does not narrow the state across transitions."""
    return gateway.breaker.state


def caller(index: int, address: str | None = None) -> Caller:
    return Caller.of(address or f"192.0.2.{index}", f"user{index}@example.com")


async def test_unencodable_request_is_422_sends_nothing_and_never_counts() -> None:
    """A NaN in the metadata fails in the SDK before any byte is sent: 422, the upstream is
    never called, and however often it is repeated the breaker stays closed."""
    upstream = Upstream(httpx.Response(200, json=USER))
    gateway = mock_gateway(upstream, breaker_failure_threshold=2)
    try:
        for index in range(10):
            with pytest.raises(errors.ValidationFailed) as caught:
                await gateway.create_user(
                    {"email": "x@example.com", "password": "pw", "user_metadata": {"n": math.nan}},
                    caller=caller(index),
                )
            assert caught.value.status == 422
        assert upstream.calls == []
        assert gateway.breaker.state is BreakerState.CLOSED
        assert (await gateway.get_user(USER_ID))["id"] == USER["id"]
    finally:
        gateway.close()


async def test_server_errors_from_one_address_do_not_open_the_breaker() -> None:
    """500s that a request's content may have caused, all met by one address (many
    accounts): 503 each time, breaker closed; the same 500s from distinct callers open it."""
    upstream = Upstream(api_error(500, "unexpected_failure"))
    gateway = mock_gateway(upstream, breaker_failure_threshold=3, breaker_min_callers=3)
    try:
        for index in range(20):
            with pytest.raises(errors.UpstreamUnavailable):
                await gateway.sign_in(
                    f"u{index}@example.com", "pw", caller=caller(index, "10.1.1.1")
                )
        assert breaker_state(gateway) is BreakerState.CLOSED
        for index in range(2):  # with 10.1.1.1, three addresses and accounts
            with pytest.raises(errors.UpstreamUnavailable):
                await gateway.sign_in("someone@example.com", "pw", caller=caller(index))
        assert breaker_state(gateway) is BreakerState.OPEN
    finally:
        gateway.close()


@pytest.mark.parametrize(
    ("predicted", "opens"),
    [
        pytest.param(None, True, id="given-time-to-spare"),
        # Admitted late in a healthy burst: predicted to take 0.6 s of the 0.95 s left.
        pytest.param(0.6, False, id="admitted-to-just-fit"),
    ],
)
async def test_a_timeout_counts_against_the_upstream_only_with_time_to_spare(
    predicted: float | None, opens: bool
) -> None:
    """Read timeouts met by three distinct callers. Given their whole deadline against a
    pace of milliseconds, they are evidence of a sick upstream and open the breaker; sent
    when admission predicted they would only just fit (the tail of a burst on a busy,
    healthy upstream), they are a 504 each but say nothing of the upstream's health, and a
    burst of distinct users cannot open the breaker for everyone with them."""
    upstream = Upstream(httpx.ReadTimeout("slow"))
    gateway = mock_gateway(upstream, breaker_failure_threshold=3, breaker_min_callers=3)
    if predicted is not None:
        gateway.admission._expected = lambda operation: predicted  # type: ignore[method-assign]
    try:
        for index in range(3):
            with pytest.raises(errors.DeadlineExceeded):
                await gateway.sign_in("someone@example.com", "pw", caller=caller(index))
        assert (breaker_state(gateway) is BreakerState.OPEN) is opens
    finally:
        gateway.close()


async def test_upstream_4xx_answers_never_open_the_breaker() -> None:
    """An answer about the request, even one this service does not map (a 503 to the
    client), from many distinct callers: the upstream is answering, the breaker stays
    closed; an account without a password is told invalid_credentials."""
    upstream = Upstream(api_error(400, "password_not_set"), api_error(418, "teapot"))
    gateway = mock_gateway(upstream, breaker_failure_threshold=2, breaker_min_callers=1)
    try:
        with pytest.raises(errors.InvalidCredentials):
            await gateway.sign_in("oauth-only@example.com", "pw", caller=caller(0))
        for index in range(1, 10):
            with pytest.raises(errors.UpstreamUnavailable):
                await gateway.sign_in("someone@example.com", "pw", caller=caller(index))
        assert breaker_state(gateway) is BreakerState.CLOSED
    finally:
        gateway.close()


async def test_unreadable_stored_record_is_502_and_never_counts() -> None:
    """A user whose metadata is nested too deep for the SDK's JSON parser: that user's
    call fails with 502 upstream_bad_record, the breaker hears nothing."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(400):
        node["a"] = {}
        node = node["a"]
    poisoned = {**USER, "user_metadata": deep}
    upstream = Upstream(httpx.Response(200, json=poisoned))
    gateway = mock_gateway(upstream, breaker_failure_threshold=1)
    try:
        for _ in range(5):
            with pytest.raises(errors.UpstreamBadRecord) as caught:
                await gateway.get_user(USER_ID)
            assert caught.value.status == 502
        assert gateway.breaker.state is BreakerState.CLOSED
    finally:
        gateway.close()


async def test_user_list_skips_and_names_unreadable_records() -> None:
    """One unreadable record in a page: the others come back, its id is named."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(400):
        node["a"] = {}
        node = node["a"]
    bad_id = "22222222-2222-4222-8222-222222222222"
    page = {"users": [USER, {**USER, "id": bad_id, "user_metadata": deep}], "aud": "authenticated"}
    upstream = Upstream(httpx.Response(200, json=page, headers=API))
    gateway = mock_gateway(upstream, breaker_failure_threshold=1)
    try:
        listing = await gateway.list_users(1, 50)
        assert [u["id"] for u in listing.users] == [USER["id"]]
        assert listing.skipped == [bad_id]
        assert upstream.calls[0].url.params["per_page"] == "50"
        assert gateway.breaker.state is BreakerState.CLOSED
    finally:
        gateway.close()


async def test_sign_in_read_timeout_is_not_retried() -> None:
    """The upstream may be checking the password when the read fails: one attempt only."""
    upstream = Upstream(httpx.ReadTimeout("slow"), httpx.Response(200, json=SESSION, headers=API))
    gateway = mock_gateway(upstream)
    try:
        with pytest.raises(errors.DeadlineExceeded):
            await gateway.sign_in("someone@example.com", "pw")
        assert len(upstream.calls) == 1
    finally:
        gateway.close()


async def test_a_slow_answer_inside_the_deadline_is_served(
    localauth: LocalAuth, proxy: FaultProxy
) -> None:
    """The upstream takes about 1 s of a 1.5 s deadline (the proxy delays each request
    chunk): by default no socket read timeout is shorter than the time left, so the
    sign-in is answered, not 504."""
    proxy.set_mode(Mode.LATENCY, latency=0.45)
    config = GatewayConfig(
        url=proxy.url + "/auth/v1",
        anon_key=localauth.anon_key,
        service_role_key=localauth.service_role_key,
        deadline=1.5,
        connect_timeout=0.5,
    )
    gateway = SupabaseGateway(config)
    try:
        assert gateway.http_client.timeout.read is None
        started = time.monotonic()
        with pytest.raises(errors.InvalidCredentials):
            await gateway.sign_in("nobody@example.com", "Wrong-password-1")
        assert time.monotonic() - started > 0.4
    finally:
        gateway.close()


async def test_idle_worker_threads_are_released_after_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a burst and then silence, the worker threads end: anyio prunes idle ones
    only when another call comes, so the gateway makes that call itself (idle time and
    delay shortened here from 10 s and 11 s)."""
    from anyio._backends._asyncio import WorkerThread

    from services.threads import IdleThreadReaper

    monkeypatch.setattr(WorkerThread, "MAX_IDLE_TIME", 0.2)
    monkeypatch.setattr(IdleThreadReaper, "DELAY", 0.4)
    upstream = Upstream(slow_user(0.1))
    gateway = mock_gateway(upstream, pool_size=8, min_limit=8, initial_limit=8)
    try:
        before = threading.active_count()
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(gateway.get_user, USER_ID)
        assert threading.active_count() >= before + 4
        assert await eventually(lambda: threading.active_count() <= before + 1, within=5.0)
    finally:
        gateway.close()


def test_the_shared_upstream_client_never_keeps_a_cookie() -> None:
    """One client carries every user's calls: a cookie set in one answer (a proxy's, say)
    must not go out with the next call."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, json={}, headers={"set-cookie": "edge=user-a; Path=/"})

    client = build_http_client(config())
    client._transport = httpx.MockTransport(handler)
    try:
        client.get(f"{UPSTREAM}/user")
        client.get(f"{UPSTREAM}/user")
    finally:
        client.close()
    assert seen == [None, None]
    assert len(client.cookies) == 0
