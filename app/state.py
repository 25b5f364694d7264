"""The long-lived clients of one app instance, built and closed by the lifespan."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from app.settings import Settings
from services.auth import AuthService, LoginGuard
from services.gateway import GatewayConfig, SupabaseGateway
from services.lockout import LockoutPolicy, LoginLockout
from services.passwords import PasswordPolicy
from services.ratelimit import RateLimiter, parse_rules
from services.sessions import SessionStore
from services.tokens import TokenVerifier


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    http: httpx.AsyncClient
    gateway: SupabaseGateway
    sessions: SessionStore
    verifier: TokenVerifier
    auth: AuthService
    rate_limiter: RateLimiter | None = None
    lockout: LoginLockout | None = None


def build_redis(settings: Settings) -> aioredis.Redis:
    # A burst beyond the pool waits (briefly) for a free connection instead of failing with
    # "Too many connections"; the wait is bounded by the Redis timeout, then it is a 503.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_seconds,
        health_check_interval=10,
        retry_on_timeout=False,
    )
    return aioredis.Redis.from_pool(pool)


def build_gateway(settings: Settings) -> SupabaseGateway:
    return SupabaseGateway(
        GatewayConfig(
            url=settings.auth_url,
            anon_key=settings.supabase_anon_key.get_secret_value(),
            service_role_key=settings.supabase_service_role_key.get_secret_value(),
            pool_size=settings.upstream_pool_size,
            deadline=settings.upstream_deadline_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            read_timeout=settings.upstream_read_timeout_seconds,
            max_attempts=settings.upstream_max_attempts,
            breaker_failure_threshold=settings.breaker_failure_threshold,
            breaker_open_seconds=settings.breaker_open_seconds,
            breaker_min_callers=settings.breaker_min_callers,
            initial_limit=settings.upstream_initial_limit,
            min_limit=settings.upstream_min_limit,
        )
    )


def build_lockout(settings: Settings, redis: aioredis.Redis) -> LoginLockout | None:
    if not settings.lockout_enabled:
        return None
    policy = LockoutPolicy(
        window=settings.lockout_window_seconds,
        ip_threshold=settings.lockout_ip_threshold,
        base=settings.lockout_base_seconds,
        max_lock=settings.lockout_max_seconds,
        account_window=settings.lockout_account_window_seconds,
        account_threshold=settings.lockout_account_threshold,
        account_lock=settings.lockout_account_seconds,
    )
    return LoginLockout(redis, prefix=settings.redis_key_prefix, policy=policy)


async def open_services(
    settings: Settings, stack: AsyncExitStack, *, guard: LoginGuard | None = None
) -> Services:
    """Build every client; ``stack`` closes them in reverse order at shutdown."""
    redis = build_redis(settings)
    stack.push_async_callback(redis.aclose)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.upstream_read_timeout_seconds or settings.upstream_deadline_seconds,
            connect=settings.upstream_connect_timeout_seconds,
        ),
        limits=httpx.Limits(max_connections=4),
    )
    stack.push_async_callback(http.aclose)
    gateway = build_gateway(settings)
    stack.callback(gateway.close)
    sessions = SessionStore(
        redis, prefix=settings.redis_key_prefix, session_ttl=settings.session_ttl_seconds
    )
    await sessions.start()
    stack.push_async_callback(sessions.stop)
    secret = settings.supabase_jwt_secret
    verifier = TokenVerifier(
        jwks_url=settings.auth_url + "/.well-known/jwks.json",
        http_client=http,
        audience=settings.jwt_audience,
        issuer=settings.issuer,
        hs256_secret=secret.get_secret_value() if secret else None,
        leeway=settings.jwt_leeway_seconds,
        refresh_interval=settings.jwks_refresh_interval_seconds,
        cache_size=settings.verified_token_cache_size,
    )
    # Best effort: an unreachable JWKS at start is reported by /health/ready and retried
    # on the first token with an unknown kid.
    await verifier.refresh_keys(force=True)
    lockout = build_lockout(settings, redis)
    if guard is None:
        guard = lockout
    auth = AuthService(
        gateway=gateway,
        sessions=sessions,
        redis=redis,
        prefix=settings.redis_key_prefix,
        policy=PasswordPolicy(
            min_length=settings.password_min_length,
            require_lower=settings.password_require_lower,
            require_upper=settings.password_require_upper,
            require_digit=settings.password_require_digit,
            require_symbol=settings.password_require_symbol,
        ),
        email_confirm=settings.register_email_confirm,
        refresh_grace=settings.refresh_grace_seconds,
        session_ttl=settings.session_ttl_seconds,
        guard=guard,
    )
    return Services(
        settings=settings,
        redis=redis,
        http=http,
        gateway=gateway,
        sessions=sessions,
        verifier=verifier,
        auth=auth,
        rate_limiter=(
            RateLimiter(
                redis, prefix=settings.redis_key_prefix, rules=parse_rules(settings.rate_limits)
            )
            if settings.rate_limit_enabled
            else None
        ),
        lockout=lockout,
    )
