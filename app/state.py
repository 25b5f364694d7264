"""The long-lived clients of one app instance, built and closed by the lifespan."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from app.lifecycle_state import Flows, build_flows
from app.settings import Settings
from services.auth import AuthService, LoginGuard
from services.credentials import CredentialGuard
from services.events import SupabaseEvents
from services.gateway import GatewayConfig, SupabaseGateway
from services.lockout import LockoutPolicy, LoginLockout
from services.passwords import PasswordPolicy
from services.principals import PrincipalCache
from services.ratelimit import RateLimiter, parse_rules
from services.redis_client import RedisClient, RedisConfig, build_client
from services.sessions import SessionStore
from services.tokens import TokenVerifier


@dataclass
class Services:
    settings: Settings
    redis: RedisClient
    http: httpx.AsyncClient
    gateway: SupabaseGateway
    sessions: SessionStore
    verifier: TokenVerifier
    auth: AuthService
    rate_limiter: RateLimiter | None = None
    lockout: LoginLockout | None = None
    credential_guard: CredentialGuard | None = None
    principals: PrincipalCache | None = None
    events: SupabaseEvents | None = None
    flows: Flows | None = None


def redis_config(settings: Settings) -> RedisConfig:
    def secret(value: object) -> str | None:
        return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]

    sentinels = tuple(
        (host, int(port)) for host, _, port in (s.rpartition(":") for s in settings.redis_sentinels)
    )
    return RedisConfig(
        url=settings.redis_url,
        sentinels=sentinels,
        sentinel_master=settings.redis_sentinel_master,
        sentinel_username=settings.redis_sentinel_username,
        sentinel_password=secret(settings.redis_sentinel_password),
        cluster=settings.redis_cluster,
        username=settings.redis_username,
        password=secret(settings.redis_password),
        tls=settings.redis_tls,
        tls_ca_file=settings.redis_tls_ca_file,
        tls_cert_file=settings.redis_tls_cert_file,
        tls_key_file=settings.redis_tls_key_file,
        tls_verify=settings.redis_tls_verify,
        tls_check_hostname=settings.redis_tls_check_hostname,
        timeout=settings.redis_timeout_seconds,
        max_connections=settings.redis_max_connections,
        retries=settings.redis_retries,
        replica_acks=settings.redis_min_replica_acks,
        replica_ack_timeout_ms=settings.redis_replica_ack_timeout_ms,
    )


def build_redis(settings: Settings) -> RedisClient:
    """Single node, Sentinel or Cluster, as the settings say (services.redis_client)."""
    return build_client(redis_config(settings))


def build_gateway(settings: Settings) -> SupabaseGateway:
    return SupabaseGateway(
        GatewayConfig(
            url=settings.auth_url,
            anon_key=settings.public_api_key.value,
            service_role_key=settings.server_api_key.value,
            pool_size=settings.upstream_pool_size,
            deadline=settings.upstream_deadline_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            read_timeout=settings.upstream_read_timeout_seconds,
            keepalive=settings.upstream_keepalive_seconds,
            max_attempts=settings.upstream_max_attempts,
            breaker_failure_threshold=settings.breaker_failure_threshold,
            breaker_open_seconds=settings.breaker_open_seconds,
            breaker_min_callers=settings.breaker_min_callers,
            initial_limit=settings.upstream_initial_limit,
            min_limit=settings.upstream_min_limit,
        )
    )


def build_lockout(
    settings: Settings, redis: RedisClient, *, namespace: str = ""
) -> LoginLockout | None:
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
    return LoginLockout(redis, prefix=settings.redis_key_prefix + namespace, policy=policy)


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
        redis,
        prefix=settings.redis_key_prefix,
        session_ttl=settings.session_ttl_seconds,
        sessions_per_user=settings.sessions_per_user,
        replica_acks=settings.redis_min_replica_acks,
        replica_ack_timeout_ms=settings.redis_replica_ack_timeout_ms,
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
        conceal_existing=settings.register_conceal_existing,
        failure_floor_seconds=settings.login_failure_floor_seconds,
    )
    principals = PrincipalCache(gateway, ttl=settings.admin_reverify_seconds)
    sessions.user_listeners.append(principals.forget)
    rate_limiter = (
        RateLimiter(
            redis, prefix=settings.redis_key_prefix, rules=parse_rules(settings.rate_limits)
        )
        if settings.rate_limit_enabled
        else None
    )
    credential_lockout = build_lockout(settings, redis, namespace="cred:")
    return Services(
        settings=settings,
        redis=redis,
        http=http,
        gateway=gateway,
        sessions=sessions,
        verifier=verifier,
        auth=auth,
        rate_limiter=rate_limiter,
        lockout=lockout,
        credential_guard=CredentialGuard(credential_lockout) if credential_lockout else None,
        principals=principals,
        events=SupabaseEvents(
            redis=redis,
            prefix=settings.redis_key_prefix,
            sessions=sessions,
            principals=principals,
        ),
        flows=build_flows(
            settings,
            gateway=gateway,
            sessions=sessions,
            auth=auth,
            limiter=rate_limiter,
            lockout=lockout,
        ),
    )
