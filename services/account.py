"""The signed-in user's own account: reauthentication, password and email change, profile,
and deletion."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from services import audit, errors
from services.auth import Client
from services.flows import (
    EmailedSecret,
    FlowDeps,
    SecretGuard,
    end_upstream,
    normalise,
    open_session,
    verify_emailed,
)
from services.gateway import AuthSession
from services.tokens import Claims


@dataclass(frozen=True)
class Proof:
    """A fresh proof that the caller is the account's owner: the current password, or the
    nonce ``reauthenticate`` mailed."""

    current_password: str | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class EmailChange:
    """One confirmation of a secure email change: ``session`` once both halves are in."""

    session: AuthSession | None


class AccountService:
    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps
        self._password_guard = SecretGuard(
            deps.passwords,
            (errors.InvalidCredentials,),
            "Too many wrong passwords; try again later.",
        )
        self._nonce_guard = SecretGuard(deps.codes, (errors.InvalidNonce,))

    async def _require_aal2_if_enrolled(self, claims: Claims, token: str) -> None:
        user = await self.deps.gateway.own_user(token)
        if not any(f.get("status") == "verified" for f in user.get("factors") or []):
            return
        if (
            claims.aal != "aal2"
            or await self.deps.sessions.assurance(claims.session_id, claims.sub) != "aal2"
        ):
            raise errors.InsufficientAssurance("With MFA on, this needs an aal2 session.")

    async def reauthenticate(self, access_token: str) -> None:
        """Mail a one-time nonce to the account's address."""
        await self.deps.gateway.reauthenticate(access_token)

    async def _check_password(self, claims: Claims, password: str, ip: str) -> None:
        async def probe() -> None:
            session = await self.deps.gateway.sign_in(normalise(claims.email), password)
            await end_upstream(self.deps, session.access_token)

        await self._password_guard.attempt(normalise(claims.email), ip, probe)

    async def _with_proof(
        self,
        claims: Claims,
        token: str,
        proof: Proof,
        ip: str,
        attributes: dict[str, Any],
    ) -> dict[str, Any]:
        """Update the user once the proof holds; the nonce is checked by Supabase with the
        update itself (and spent by it)."""
        if proof.current_password is not None:
            await self._check_password(claims, proof.current_password, ip)
            # Passed on too, for projects where Supabase itself asks for it.
            body = {**attributes, "current_password": proof.current_password}
            return await self.deps.gateway.update_own_user(token, body)
        assert proof.nonce is not None
        body = {**attributes, "nonce": proof.nonce}
        return await self._nonce_guard.attempt(
            "nonce:" + claims.sub, ip, lambda: self.deps.gateway.update_own_user(token, body)
        )

    async def change_password(
        self, claims: Claims, token: str, password: str, proof: Proof, ip: str
    ) -> dict[str, Any]:
        """Set a new password; every other session ends at once, this one stays."""
        self.deps.policy.check(password)
        user = await self._with_proof(claims, token, proof, ip, {"password": password})
        ended = await self.deps.sessions.revoke_all(claims.sub, keep=claims.session_id)
        audit.event("password.changed", user_id=claims.sub, sessions_ended=len(ended))
        return user

    async def change_email(
        self, token: str, claims: Claims, email: str, redirect_to: str | None
    ) -> dict[str, Any]:
        """Start a secure email change: both addresses get a code and link."""
        user = await self.deps.gateway.update_own_user(
            token, {"email": normalise(email)}, redirect_to=redirect_to
        )
        audit.event("email.change_requested", user_id=claims.sub)
        return user

    async def confirm_email_change(self, secret: EmailedSecret, client: Client) -> EmailChange:
        session = await verify_emailed(self.deps, secret, "email_change", client.ip)
        if session is None:
            return EmailChange(session=None)
        await open_session(self.deps, session, client)
        audit.event("email.changed", user_id=session.user.get("id"))
        return EmailChange(session=session)

    async def update_profile(self, token: str, data: dict[str, Any]) -> dict[str, Any]:
        """Merge ``data`` into ``user_metadata`` (a key set to null is removed)."""
        return await self.deps.gateway.update_own_user(token, {"data": data})

    async def delete(self, claims: Claims, token: str, proof: Proof, ip: str) -> None:
        """Delete the account after a fresh proof; every session ends first, so a failure
        halfway leaves the user signed out, never signed in to a half-deleted account.
        With a verified MFA factor it needs an aal2 session, as a password change does."""
        await self._require_aal2_if_enrolled(claims, token)
        if proof.current_password is not None:
            await self._check_password(claims, proof.current_password, ip)
        else:
            await self._with_proof(claims, token, proof, ip, {})
        await self.deps.sessions.revoke_all(claims.sub)
        await end_upstream(self.deps, token, "global")
        # NotFound: a retried deletion already went through.
        with contextlib.suppress(errors.NotFound):
            await self.deps.gateway.delete_user(claims.sub)
        audit.event("account.deleted", user_id=claims.sub)
