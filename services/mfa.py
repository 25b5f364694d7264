"""MFA with TOTP: enrol (secret, otpauth URI, QR code), list, challenge, verify (the session
becomes aal2 upstream and in Redis), unenrol (needs aal2; sessions it raised fall back).

Supabase ends the user's other aal1 sessions when a challenge is verified; so does this
service, in Redis, so every instance refuses them at once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from services import audit, errors
from services.flows import FlowDeps, SecretGuard, session_ids
from services.gateway import AuthSession
from services.tokens import Claims

_FACTOR_FIELDS = ("id", "friendly_name", "factor_type", "status", "created_at", "updated_at")


class MfaService:
    def __init__(self, deps: FlowDeps) -> None:
        self.deps = deps
        self._guard = SecretGuard(deps.codes, (errors.InvalidMfaCode,))

    async def enroll(self, token: str, friendly_name: str, issuer: str | None) -> dict[str, Any]:
        answer = await self.deps.gateway.mfa_enroll(token, friendly_name, issuer)
        totp = answer.get("totp") or {}
        qr = str(totp.get("qr_code", ""))
        if qr and not qr.startswith("data:"):
            # Percent-encoded: a raw "#" (the SVG's colours) would end the URI there, and a
            # browser's <img> would show nothing (the SDKs' "data:...;utf-8,<svg" does that).
            qr = "data:image/svg+xml;charset=utf-8," + quote(qr, safe="")
        return {
            "id": answer.get("id"),
            "type": "totp",
            "friendly_name": answer.get("friendly_name", friendly_name),
            "totp": {"secret": totp.get("secret"), "uri": totp.get("uri"), "qr_code": qr},
        }

    async def factors(self, token: str) -> list[dict[str, Any]]:
        user = await self.deps.gateway.own_user(token)
        return [
            {name: factor.get(name) for name in _FACTOR_FIELDS}
            for factor in user.get("factors") or []
        ]

    async def challenge(self, token: str, factor_id: str) -> dict[str, Any]:
        answer = await self.deps.gateway.mfa_challenge(token, factor_id)
        return {"id": answer.get("id"), "expires_at": answer.get("expires_at")}

    async def verify(
        self,
        claims: Claims,
        token: str,
        factor_id: str,
        challenge_id: str | None,
        code: str,
        ip: str,
    ) -> AuthSession:
        """Answer a challenge; without ``challenge_id``, make one and answer it at once
        (Supabase ties a challenge to the address that made it, and several instances of
        this service may not share one)."""

        async def answer() -> AuthSession:
            cid = challenge_id or str((await self.challenge(token, factor_id))["id"])
            return await self.deps.gateway.mfa_verify(token, factor_id, cid, code)

        session = await self._guard.attempt(
            "mfa:" + claims.sub,
            ip,
            answer,
        )
        sid, uid = session_ids(session)
        if not await self.deps.sessions.set_assurance(sid, uid, "aal2", factor_id):
            raise errors.SessionRevoked()
        await self.deps.sessions.remember_refresh(session.refresh_token, uid, sid)
        # As Supabase: the user's other aal1 sessions end.
        weaker = [
            other
            for other, (aal, _) in (await self.deps.sessions.assurances(uid)).items()
            if other != sid and aal == "aal1"
        ]
        await self.deps.sessions.revoke(uid, weaker)
        audit.event("mfa.verified", user_id=uid, factor_id=factor_id, sessions_ended=len(weaker))
        return session

    async def unenroll(self, claims: Claims, token: str, factor_id: str) -> None:
        """Remove a factor. A verified one needs an aal2 session, by its token and as
        recorded here; an unverified one (an abandoned enrolment) may go at aal1."""
        factor = next((f for f in await self.factors(token) if f["id"] == factor_id), None)
        if factor is None:
            raise errors.NotFound("No such factor.")
        if factor["status"] == "verified" and (
            claims.aal != "aal2"
            or await self.deps.sessions.assurance(claims.session_id, claims.sub) != "aal2"
        ):
            raise errors.InsufficientAssurance("Removing a verified factor needs an aal2 session.")
        await self.deps.gateway.mfa_unenroll(token, factor_id)
        lowered = await self.deps.sessions.lower_assurance(claims.sub, factor_id)
        audit.event("mfa.unenrolled", user_id=claims.sub, factor_id=factor_id, lowered=len(lowered))
