"""Which layers guard which route: the one table to read to know who may call what.

Adding a check is one class (``app.authz.layers``) and one entry here. Layers run in the
order listed; cheap refusals (address, missing token) come before costly ones.
"""

from __future__ import annotations

from app.authz.base import Layer
from app.authz.layers import (
    AccountStatus,
    Bearer,
    IpAllowList,
    NotBefore,
    Owner,
    RateLimit,
    RequireAal,
    RequireRole,
    ServiceCredentials,
    SessionAlive,
    SupabaseRecheck,
    VerifyToken,
)

# Who the caller is, and that their session, account and token are all still good. This is
# the hot path: after the first request of a token, every layer answers from memory.
AUTHENTICATED: tuple[Layer, ...] = (
    Bearer(),
    VerifyToken(),
    AccountStatus(),
    SessionAlive(),
    NotBefore(),
)

ADMIN: tuple[Layer, ...] = (
    IpAllowList("admin_ip_allowlist"),
    *AUTHENTICATED,
    RequireRole(frozenset({"admin"})),
    RequireAal("aal2", setting="admin_require_aal2"),
    RateLimit("admin", per="account"),
    # Last: only a caller the token already says is an admin costs an upstream call.
    SupabaseRecheck(frozenset({"admin"})),
)

SERVICE: tuple[Layer, ...] = (ServiceCredentials(), RateLimit("internal", per="service"))

POLICIES: dict[str, tuple[Layer, ...]] = {
    "auth:register": (RateLimit("register"),),
    # Counted with the lockout check, in one round trip (services.lockout).
    "auth:login": (RateLimit("login", with_endpoint=True),),
    # Counted with the rotation's first step, in one round trip (services.auth.refresh).
    "auth:refresh": (RateLimit("refresh", with_endpoint=True),),
    "auth:logout": AUTHENTICATED,
    "auth:me": AUTHENTICATED,
    "auth:sessions": AUTHENTICATED,
    "auth:session": AUTHENTICATED,
    "users:sessions": (*AUTHENTICATED, Owner("user_id", admin_role="admin")),
    "admin:users": ADMIN,
    "admin:user": ADMIN,
    "admin:ban": ADMIN,
    "admin:unban": ADMIN,
    "admin:roles": ADMIN,
    "admin:revoke_sessions": ADMIN,
    "admin:unlock": ADMIN,
    "internal:user_status": SERVICE,
    # Signed by Supabase (Standard Webhooks); the signature is checked by the endpoint.
    "internal:supabase_events": (RateLimit("events"),),
    # Account lifecycle (docs/account-lifecycle.md): mails and code checks limited per
    # client address (and in the flows per recipient), the signed-in ones per account.
    "auth:password_recover": (RateLimit("mail"),),
    "auth:password_reset": (RateLimit("verify"),),
    "auth:email_confirm_resend": (RateLimit("mail"),),
    "auth:email_confirm": (RateLimit("verify"),),
    "auth:otp": (RateLimit("mail"),),
    "auth:otp_verify": (RateLimit("verify"),),
    "auth:oauth_authorize": (RateLimit("oauth"),),
    "auth:oauth_callback": (RateLimit("oauth"),),
    "auth:email_change_confirm": (RateLimit("verify"),),
    "auth:reauthenticate": (*AUTHENTICATED, RateLimit("mail", per="account")),
    "auth:email_change": (*AUTHENTICATED, RateLimit("mail", per="account")),
    "auth:password_change": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:profile": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:account_delete": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:mfa_factors": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:mfa_enroll": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:mfa_challenge": (*AUTHENTICATED, RateLimit("account", per="account")),
    "auth:mfa_verify": (*AUTHENTICATED, RateLimit("verify", per="account")),
    # A verified factor needs aal2 (checked by the flow: an abandoned enrolment may go at aal1).
    "auth:mfa_unenroll": (*AUTHENTICATED, RateLimit("account", per="account")),
}
