"""Passwordless sign-in: an emailed code or magic link (token hash) for an existing account."""

from __future__ import annotations

from services import audit
from services.auth import Client
from services.flows import (
    EmailedSecret,
    FlowDeps,
    limit_address,
    normalise,
    open_session,
    require_session,
    session_ids,
    verify_emailed,
    without_revealing,
)
from services.gateway import AuthSession


class OtpService:
    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps

    async def send(self, email: str, redirect_to: str | None) -> None:
        """Mail a sign-in code and link. Never creates an account (registration has its own
        route and password policy); the same answer whether or not the address has one."""
        email = normalise(email)
        await limit_address(self.deps, "mail_address", email)
        await without_revealing("otp", self.deps.gateway.send_otp(email, redirect_to))

    async def verify(self, secret: EmailedSecret, client: Client) -> AuthSession:
        # "email" covers both the magic link of a confirmed address and the signup
        # confirmation GoTrue sends instead to an unconfirmed one.
        session = require_session(await verify_emailed(self.deps, secret, "email", client.ip))
        await open_session(self.deps, session, client)
        audit.event("auth.signed_in", user_id=session_ids(session)[1], method="otp")
        return session
