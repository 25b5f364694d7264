"""OAuth sign-in ("Sign in with Google") with PKCE, through Supabase's external providers.

``authorize`` makes a PKCE verifier, keeps it in Redis under a random ``flow_id`` (single
use, ``FLOW_TTL``) and answers the provider URL on Supabase's ``/authorize``. The browser goes
there, signs in at the provider, and Supabase redirects it to ``redirect_to?code=...``; the
frontend posts ``{flow_id, code}`` to ``callback``, which exchanges them for a session.
The verifier never leaves this service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from services import audit, errors
from services.auth import Client
from services.flows import FlowDeps, open_session, session_ids
from services.gateway import AuthSession
from services.redis_call import redis_call

FLOW_TTL = 600


@dataclass(frozen=True)
class Authorization:
    url: str
    flow_id: str
    expires_in: int = FLOW_TTL


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class OAuthService:
    def __init__(
        self,
        deps: FlowDeps,
        *,
        prefix: str,
        providers: list[str],
        redirect_urls: list[str],
    ) -> None:
        self.deps = deps
        self.prefix = prefix
        self.providers = frozenset(p.lower() for p in providers)
        self.redirect_urls = tuple(redirect_urls)

    def _key(self, flow_id: str) -> str:
        return f"{self.prefix}oauth:{hashlib.sha256(flow_id.encode()).hexdigest()}"

    def _check_redirect(self, redirect_to: str | None) -> None:
        if redirect_to is None:
            return
        if not any(redirect_to.startswith(allowed) for allowed in self.redirect_urls):
            raise errors.ValidationFailed(
                "redirect_to is not one of this service's OAUTH_REDIRECT_URLS.",
                errors=[{"field": "redirect_to", "message": "not allowed", "type": "value"}],
            )

    async def authorize(self, provider: str, redirect_to: str | None) -> Authorization:
        provider = provider.lower()
        if provider not in self.providers:
            raise errors.ProviderNotEnabled(f"Sign-in with {provider[:64]!r} is not enabled here.")
        self._check_redirect(redirect_to)
        verifier = secrets.token_urlsafe(48)
        flow_id = secrets.token_urlsafe(24)
        record = json.dumps({"verifier": verifier, "provider": provider})
        await redis_call(
            "oauth_flow", self.deps.sessions.redis.set(self._key(flow_id), record, ex=FLOW_TTL)
        )
        query = {
            "provider": provider,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "s256",
        }
        if redirect_to:
            query["redirect_to"] = redirect_to
        url = f"{self.deps.gateway.config.url}/authorize?{urlencode(query)}"
        return Authorization(url=url, flow_id=flow_id)

    async def callback(self, flow_id: str, code: str, client: Client) -> AuthSession:
        raw = await redis_call("oauth_flow", self.deps.sessions.redis.getdel(self._key(flow_id)))
        if raw is None:
            raise errors.InvalidAuthCode("Unknown or expired flow_id; start the sign-in again.")
        record = json.loads(raw)
        session = await self.deps.gateway.exchange_code(code, record["verifier"])
        await open_session(self.deps, session, client)
        audit.event(
            "auth.signed_in",
            user_id=session_ids(session)[1],
            method="oauth",
            provider=record["provider"],
        )
        return session
