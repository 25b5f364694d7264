"""The account-lifecycle services of one app instance (built by ``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings
from services.account import AccountService
from services.auth import AuthService
from services.confirmation import ConfirmationService
from services.flows import FlowDeps
from services.gateway import SupabaseGateway
from services.lockout import LoginLockout
from services.mfa import MfaService
from services.oauth import OAuthService
from services.otp import OtpService
from services.ratelimit import RateLimiter
from services.recovery import RecoveryService
from services.sessions import SessionStore


@dataclass(frozen=True)
class Flows:
    """The account-lifecycle services (``services.flows`` and its families)."""

    recovery: RecoveryService
    confirmation: ConfirmationService
    account: AccountService
    otp: OtpService
    oauth: OAuthService
    mfa: MfaService


def build_flows(
    settings: Settings,
    *,
    gateway: SupabaseGateway,
    sessions: SessionStore,
    auth: AuthService,
    limiter: RateLimiter | None,
    lockout: LoginLockout | None,
) -> Flows:
    codes = None
    if lockout is not None:
        # Same policy as logins, its own counters.
        codes = LoginLockout(
            lockout.redis, prefix=settings.redis_key_prefix + "code:", policy=lockout.policy
        )
    deps = FlowDeps(
        gateway=gateway,
        sessions=sessions,
        auth=auth,
        policy=auth.policy,
        limiter=limiter,
        codes=codes,
        passwords=lockout,
    )
    return Flows(
        recovery=RecoveryService(deps),
        confirmation=ConfirmationService(deps),
        account=AccountService(deps),
        otp=OtpService(deps),
        oauth=OAuthService(
            deps,
            prefix=settings.redis_key_prefix,
            providers=settings.oauth_providers,
            redirect_urls=settings.oauth_redirect_urls,
        ),
        mfa=MfaService(deps),
    )
