"""Readiness (``/health/ready``) and Prometheus metrics (``/metrics``).

``/health/ready`` is what Railway's deploy gate and Kong's active health checks poll, every
few seconds per Kong node, so it must be cheap and bounded:

* every check runs concurrently and has its own short cap, so the whole answer comes back
  within ``READY_CAP_SECONDS`` (well inside Kong's active-check ``timeout``);
* the upstream probe goes through the gateway (bulkhead and breaker included), and its
  result is shared for ``UPSTREAM_PROBE_TTL`` seconds, so N Kong nodes polling at once cost
  at most one upstream call per second;
* the body names each check, its state and latency, and never a URL, key or token.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.state import redis_config
from services import errors, metrics, tallies
from services.breaker import BreakerState
from services.redis_probe import CommandProbe, write_probe

if TYPE_CHECKING:
    from app.state import Services
    from services.gateway import SupabaseGateway

log = structlog.get_logger("app.health")

READY_CAP_SECONDS = 2.0
UPSTREAM_PROBE_TTL = 1.0


@dataclass
class Check:
    ok: bool
    state: str
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "state": self.state, "latency_ms": self.latency_ms, **self.extra}


class UpstreamProbe:
    """One upstream health call at a time, its result shared for ``ttl`` seconds."""

    def __init__(self, ttl: float = UPSTREAM_PROBE_TTL) -> None:
        self.ttl = ttl
        self._lock = anyio.Lock()
        self._result: Check | None = None
        self._at = 0.0

    async def check(self, gateway: SupabaseGateway, cap: float) -> Check:
        async with self._lock:
            if self._result is not None and time.monotonic() - self._at < self.ttl:
                return self._result
            self._result = await _probe_upstream(gateway, cap)
            self._at = time.monotonic()
            return self._result


async def _probe_upstream(gateway: SupabaseGateway, cap: float) -> Check:
    started = time.perf_counter()
    state = "reachable"
    ok = False
    try:
        with anyio.fail_after(cap):
            await gateway.health()
        ok = True
    except TimeoutError:
        state = "timeout"
    except errors.CircuitOpen:
        state = "breaker_open"
    except errors.PoolExhausted:
        state = "pool_exhausted"
    except errors.DeadlineExceeded:
        state = "timeout"
    except errors.UpstreamMisconfigured:
        state = "rejected_key"
    except errors.AuthServiceError as exc:
        state = exc.code
    return Check(ok=ok, state=state, latency_ms=_ms(started))


_COMMAND_PROBE = CommandProbe()


async def _check_redis(services: Services, cap: float) -> Check:
    """A real write and the role (not only PING), every command the ACL must allow (cached
    30 s while it passes), and the invalidation subscription: each failure says why."""
    started = time.perf_counter()
    settings = services.settings
    prefix = settings.redis_key_prefix
    try:
        with anyio.fail_after(cap):
            probe = await write_probe(services.redis, prefix)
            if probe.ok:
                acl = await _COMMAND_PROBE.check(
                    services.redis, prefix, replica_acks=settings.redis_min_replica_acks
                )
                if not acl.ok:
                    probe = acl
    except TimeoutError:
        return Check(ok=False, state="timeout", latency_ms=_ms(started))
    extra: dict[str, Any] = {"topology": redis_config(settings).topology}
    if probe.role:
        extra["role"] = probe.role
    if not probe.ok:
        metrics.REDIS_ERRORS.labels("ready_probe").inc()
        log.warning("redis_not_ready", state=probe.state, reason=probe.detail)
        extra["reason"] = probe.detail
        # A replica's address given as a single node is a setting; under Sentinel or
        # Cluster, "read_only" is a failover in progress.
        extra["misconfigured"] = probe.state in REDIS_MISCONFIGURED or (
            probe.state == "read_only" and extra["topology"] == "single"
        )
        return Check(ok=False, state=probe.state, latency_ms=_ms(started), extra=extra)
    sessions = services.sessions
    extra["cache_trusted"] = sessions.cache_trusted
    if not sessions.subscription_active:
        extra["reason"] = "no invalidation subscription: " + (
            sessions.subscription_error or "not established yet"
        )
        extra["misconfigured"] = True
        return Check(ok=False, state="subscription_missing", latency_ms=_ms(started), extra=extra)
    return Check(ok=True, state="ok", latency_ms=_ms(started), extra=extra)


async def _check_clock(services: Services, cap: float) -> Check:
    """This instance's clock against Redis's (the reference every instance shares). Beyond
    JWT_LEEWAY_SECONDS every fresh token looks issued in the future (or expired): /me would
    answer 401 to everyone while the process looks healthy. The round trip's half is
    allowed on top of the leeway. Redis unreachable: "unknown", reported by the redis
    check, not a failure of this instance."""
    started = time.perf_counter()
    leeway = services.settings.jwt_leeway_seconds
    try:
        with anyio.fail_after(cap):
            before = time.time()
            seconds, micros = await services.redis.time()
            after = time.time()
    except Exception:  # Timeout, Redis or socket failure: the skew is unknown.
        return Check(ok=True, state="unknown", latency_ms=_ms(started))
    skew = (before + after) / 2 - (seconds + micros / 1_000_000)
    metrics.CLOCK_SKEW.labels("redis").set(skew)
    ok = abs(skew) <= leeway + (after - before) / 2
    if not ok:
        log.error("clock_skew", skew_s=round(skew, 3), leeway_s=leeway)
    return Check(
        ok=ok,
        state="ok" if ok else "skewed",
        latency_ms=_ms(started),
        extra={"skew_s": round(skew, 3), "leeway_s": leeway},
    )


async def _check_jwks(services: Services, cap: float) -> Check:
    started = time.perf_counter()
    verifier = services.verifier
    if not verifier.jwks_loaded:
        # Not forced: refresh_keys itself limits fetches to one per refresh interval.
        with anyio.move_on_after(cap):
            try:
                await verifier.refresh_keys()
            except Exception as exc:  # Reported below as not loaded.
                log.warning("jwks_unavailable", error=type(exc).__name__)
    keys = len(verifier.key_ids)
    hs256 = services.settings.supabase_jwt_secret is not None
    if verifier.jwks_loaded and (keys or hs256):
        return Check(ok=True, state="loaded", latency_ms=_ms(started), extra={"keys": keys})
    if hs256:
        return Check(ok=True, state="hs256_only", latency_ms=_ms(started), extra={"keys": keys})
    return Check(ok=False, state="not_loaded", latency_ms=_ms(started), extra={"keys": keys})


def _check_breaker(services: Services) -> Check:
    breaker = services.gateway.breaker
    state = breaker.state
    extra: dict[str, Any] = {}
    if state is BreakerState.OPEN:
        extra["retry_after_s"] = round(breaker.retry_after(), 1)
    return Check(ok=state is not BreakerState.OPEN, state=state.name.lower(), extra=extra)


def _check_pool(services: Services) -> Check:
    admission = services.gateway.admission
    in_use = admission.in_flight
    size = admission.config.max_concurrency
    waiting = admission.queued
    # Only a thread bound that is reached with calls waiting is this instance's problem; a
    # queue behind the adaptive limit is a busy upstream (shared by every instance).
    saturated = in_use >= size and waiting > 0
    return Check(
        ok=not saturated,
        state="saturated" if saturated else "ok",
        extra={
            "in_use": in_use,
            "size": size,
            "waiting": waiting,
            "limit": admission.limit,
            "service_ms": round(admission.service_estimate() * 1000, 1),
            "shed": dict(admission.shed_counts),
        },
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# What decides readiness: failures of this instance only (no keys, a pool that stays full,
# its clock beyond the JWT leeway). Supabase and Redis are shared by every instance: when
# either is down, all instances fail their check at once, and ejecting them all would swap
# the app's own answers (problem+json 503 with Retry-After; token checks and /me keep
# working without Supabase) for Kong's "failure to get a peer from the ring-balancer". So a
# shared outage is reported as "degraded" with 200, and Kong and Railway keep the instance.
GATING = ("jwks", "thread_pool", "clock")
# A Redis failure that is this deployment's own settings, not an outage: a certificate or
# ACL the settings got wrong, a replica's address where the master's belongs, no
# subscription. Every login would fail on it, so it gates: Railway never promotes such a
# deploy. An unreachable Redis, or a failover in progress, stays "degraded".
REDIS_MISCONFIGURED = frozenset(
    {
        "tls_certificate_rejected",
        "tls_error",
        "acl_denied",
        "auth_failed",
    }
)


async def ready(request: Request) -> Response:
    """200 when this instance can serve (status "ready", or "degraded" when Supabase Auth or
    Redis is unreachable or the breaker is open); 503 naming what is wrong with this
    instance."""
    services = request.app.state.services
    probe: UpstreamProbe = request.app.state.upstream_probe
    settings = services.settings
    # Room for the client's own retries, so a replica says "read_only", not "timeout".
    redis_cap = min(
        READY_CAP_SECONDS,
        max(settings.redis_timeout_seconds * (settings.redis_retries + 1), 0.1),
    )
    results: dict[str, Check] = {}

    async def run(name: str, coro: Awaitable[Check]) -> None:
        results[name] = await coro

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "redis", _check_redis(services, redis_cap))
        tg.start_soon(run, "supabase_auth", probe.check(services.gateway, READY_CAP_SECONDS))
        tg.start_soon(run, "jwks", _check_jwks(services, READY_CAP_SECONDS))
        tg.start_soon(run, "clock", _check_clock(services, redis_cap))
    results["breaker"] = _check_breaker(services)
    results["thread_pool"] = _check_pool(services)
    order = ("redis", "supabase_auth", "jwks", "breaker", "thread_pool", "clock")
    failing = [name for name in order if not results[name].ok]
    ok = not any(name in GATING for name in failing) and not results["redis"].extra.get(
        "misconfigured", False
    )
    status = "not_ready" if not ok else "degraded" if failing else "ready"
    body = {"status": status, "checks": {name: results[name].to_json() for name in order}}
    if failing:
        log.warning(status, failing=failing)
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


def refresh_gauges(services: Services) -> None:
    """Gauges read at scrape time, so a time-based breaker change is never stale."""
    gateway = services.gateway
    metrics.BREAKER_STATE.set(int(gateway.breaker.state))
    admission = gateway.admission
    metrics.POOL_SIZE.set(admission.config.max_concurrency)
    metrics.POOL_IN_USE.set(admission.in_flight)
    metrics.POOL_WAITING.set(admission.queued)
    metrics.ADMISSION_LIMIT.set(admission.limit)
    metrics.ADMISSION_SERVICE_TIME.set(admission.service_estimate())
    for priority, waiting in admission.queued_by_priority().items():
        metrics.ADMISSION_QUEUE.labels(priority).set(waiting)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format; per process unless ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    services = getattr(request.app.state, "services", None)
    if services is not None:
        refresh_gauges(services)
    tallies.flush()  # every request answered so far, on the loop's thread
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # The process collector reads /proc files: off the loop, as all file I/O here.
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# Rate-limit and lockout rejections are counted where they are decided (services.ratelimit,
# services.lockout); these are the refusals no other code counts.
_REJECTION_CLASSES: tuple[type[errors.AuthServiceError], ...] = (
    errors.UpstreamRateLimited,
    errors.PoolExhausted,
    errors.CircuitOpen,
    errors.PayloadTooLarge,
)


def count_rejection(exc: BaseException) -> None:
    """Feeds ``sg_rejections_total`` for load shedding (bulkhead, breaker, body size)."""
    if isinstance(exc, _REJECTION_CLASSES):
        metrics.REJECTIONS.labels(f"shed:{exc.code}").inc()
