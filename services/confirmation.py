"""Email confirmation: resend the signup mail, and verify it (which signs the user in)."""

from __future__ import annotations

import structlog

from services import audit, errors
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

log = structlog.get_logger("services.confirmation")


class ConfirmationService:
    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps

    async def resend(self, email: str, redirect_to: str | None) -> None:
        """Mail the confirmation again; the same answer for every address."""
        email = normalise(email)
        await limit_address(self.deps, "mail_address", email)
        await without_revealing(
            "confirmation", self.deps.gateway.resend(email, "signup", redirect_to)
        )

    async def after_registration(self, email: str) -> None:
        """Registration through the Admin API sends no mail; with REGISTER_EMAIL_CONFIRM
        false the user must confirm, so the first confirmation mail goes out here."""
        try:
            await without_revealing(
                "confirmation", self.deps.gateway.resend(normalise(email), "signup", None)
            )
        except errors.AuthServiceError as exc:
            # The account exists; the user can ask for the mail again (/email/confirm/resend).
            log.warning("confirmation_not_sent", reason=exc.code)

    async def confirm(self, secret: EmailedSecret, client: Client) -> AuthSession:
        session = require_session(await verify_emailed(self.deps, secret, "signup", client.ip))
        await open_session(self.deps, session, client)
        audit.event("email.confirmed", user_id=session_ids(session)[1])
        return session
