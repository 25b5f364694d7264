"""Password recovery: mail a code and link, then reset with it (ending every other session)."""

from __future__ import annotations

from services import audit, errors
from services.auth import Client
from services.flows import (
    EmailedSecret,
    FlowDeps,
    end_upstream,
    limit_address,
    normalise,
    open_session,
    require_session,
    session_ids,
    verify_emailed,
    without_revealing,
)
from services.gateway import AuthSession


class RecoveryService:
    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps

    async def request(self, email: str, redirect_to: str | None) -> None:
        """Mail a recovery code; the same answer whether or not the address has an account."""
        email = normalise(email)
        await limit_address(self.deps, "mail_address", email)
        await without_revealing("recovery", self.deps.gateway.send_recovery(email, redirect_to))

    async def reset(self, secret: EmailedSecret, password: str, client: Client) -> AuthSession:
        """Verify the emailed code, set the new password, and end every other session: the
        answer is the one session left."""
        self.deps.policy.check(password)
        session = require_session(await verify_emailed(self.deps, secret, "recovery", client.ip))
        try:
            await self.deps.gateway.update_own_user(session.access_token, {"password": password})
        except errors.AuthServiceError:
            # The code is spent; the half-open recovery session is not handed out.
            await end_upstream(self.deps, session.access_token)
            raise
        await open_session(self.deps, session, client)
        sid, uid = session_ids(session)
        ended = await self.deps.sessions.revoke_all(uid, keep=sid)
        audit.event("password.reset", user_id=uid, sessions_ended=len(ended))
        return session
