"""Local verification of Supabase access tokens.

Asymmetric keys come from the project's JWKS (fetched asynchronously, cached, refetched
on an unknown ``kid`` at most once per interval); the legacy HS256 secret is used only for
kid-less HS256 tokens, and only when configured. Each key allows exactly one algorithm, so
``none`` and HS/RS confusion are refused by construction. Verified claims are cached by the
token itself (a dict lookup hashes it once; a digest per request cost more than the rest of
the lookup) and never served past ``exp``.

Every refusal is a 401 with one of two stable codes: ``token_expired`` (the client should
refresh) or ``invalid_token`` (it should sign in again); the detail says which check failed.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services import errors, metrics
from services.tallies import Tally

log = structlog.get_logger("services.tokens")
_CACHE_HIT = Tally(metrics.TOKEN_CACHE.labels("hit"))
_CACHE_MISS = Tally(metrics.TOKEN_CACHE.labels("miss"))

MAX_TOKEN_BYTES = 8192
_ASYMMETRIC: dict[str, type[ECAlgorithm] | type[RSAAlgorithm]] = {
    "ES256": ECAlgorithm,
    "RS256": RSAAlgorithm,
}


@dataclass(frozen=True)
class Claims:
    """The verified claims of an access token."""

    sub: str
    session_id: str
    exp: int
    iat: int
    role: str
    aal: str
    email: str
    raw: dict[str, Any] = field(repr=False)
    # Answers derived from these claims alone (e.g. the encoded /me body), computed once per
    # token: the claims object itself is what the verified-token cache keeps.
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def app_metadata(self) -> dict[str, Any]:
        value = self.raw.get("app_metadata")
        return value if isinstance(value, dict) else {}

    @property
    def user_metadata(self) -> dict[str, Any]:
        value = self.raw.get("user_metadata")
        return value if isinstance(value, dict) else {}

    @property
    def roles(self) -> list[str]:
        roles = self.app_metadata.get("roles")
        if isinstance(roles, list):
            return [r for r in roles if isinstance(r, str)]
        return []

    @property
    def scopes(self) -> list[str]:
        scopes = self.app_metadata.get("scopes", self.raw.get("scope", []))
        if isinstance(scopes, str):
            return scopes.split()
        return [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []


@dataclass(frozen=True)
class _Key:
    algorithm: str
    key: Any


class TokenVerifier:
    def __init__(
        self,
        *,
        jwks_url: str,
        http_client: httpx.AsyncClient,
        audience: str,
        issuer: str,
        hs256_secret: str | None = None,
        leeway: float = 30.0,
        refresh_interval: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        self.jwks_url = jwks_url
        self._http = http_client
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self._secret = _Key("HS256", hs256_secret.encode()) if hs256_secret else None
        self._keys: dict[str, _Key] = {}
        self._fetched_at = -float("inf")
        self._fetch_lock = asyncio.Lock()
        # Keyed by the token string: about 1 KB a token, 10 MB at the default size.
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._cache_size = cache_size
        self.jwks_loaded = False

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    async def refresh_keys(self, *, force: bool = False) -> bool:
        """Fetch the JWKS unless it was fetched within the refresh interval."""
        async with self._fetch_lock:
            if not force and time.monotonic() - self._fetched_at < self.refresh_interval:
                return False
            self._fetched_at = time.monotonic()
            try:
                response = await self._http.get(self.jwks_url)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks_fetch_failed", url=self.jwks_url, error=type(exc).__name__)
                return False
            self._keys = _parse_jwks(document)
            self.jwks_loaded = True
            log.info("jwks_loaded", url=self.jwks_url, kids=self.key_ids)
            return True

    def cached(self, token: str) -> Claims | None:
        """The claims of a token verified before and not yet expired, without awaiting
        (the hot path's probe; ``verify`` does the rest)."""
        cached = self._cache.get(token)
        if cached is not None and time.time() < cached.exp:
            _CACHE_HIT.n += 1
            return cached
        return None

    async def verify(self, token: str) -> Claims:
        if len(token) > MAX_TOKEN_BYTES:
            raise errors.InvalidToken("The access token is too large.")
        found = self.cached(token)
        if found is not None:
            return found
        self._cache.pop(token, None)  # expired, if it was there
        _CACHE_MISS.n += 1
        key = await self._key_for(token)
        claims = self._decode(token, key)
        if self._cache_size:
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    async def _key_for(self, token: str) -> _Key:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise errors.InvalidToken("The access token is malformed.") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise errors.InvalidToken("The access token is unsigned.")
        if kid is not None and not isinstance(kid, str):
            raise errors.InvalidToken("The access token is malformed.")
        key = self._keys.get(kid) if kid else None
        if key is None and alg == "HS256" and self._secret is not None:
            # GoTrue signs HS256 with the project secret, kid or not; a kid that names an
            # asymmetric key never reaches here, so the public key can never be an HMAC key.
            return self._secret
        if key is None and kid:
            await self.refresh_keys()
            # Re-read even if another request did the fetch while we waited for the lock.
            key = self._keys.get(kid)
        if key is None:
            raise errors.InvalidToken("The access token was signed with an unknown key.")
        if alg != key.algorithm:
            raise errors.InvalidToken("The access token's algorithm does not match its key.")
        return key

    def _decode(self, token: str, key: _Key) -> Claims:
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_iat": True,
                    "verify_nbf": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise errors.TokenExpired() from None
        except jwt.PyJWTError as exc:
            raise errors.InvalidToken(_reason(exc)) from None
        if not isinstance(payload.get("exp"), int) or not isinstance(payload.get("iat"), int):
            raise errors.InvalidToken("The access token's times are not integers.")
        session_id = payload.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise errors.InvalidToken("The access token belongs to no session.")
        return Claims(
            sub=str(payload["sub"]),
            session_id=session_id,
            exp=int(payload["exp"]),
            iat=int(payload["iat"]),
            role=str(payload.get("role", "")),
            aal=str(payload.get("aal", "aal1")),
            email=str(payload.get("email", "")),
            raw=payload,
        )


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.InvalidAudienceError):
        return "The access token is for another audience."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The access token was issued by someone else."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The access token is not valid yet."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The access token's signature does not verify."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The access token lacks the {exc.claim} claim."
    return "The access token is malformed."


def _parse_jwks(document: Any) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    entries = document.get("keys", []) if isinstance(document, dict) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid, alg, kty = entry.get("kid"), entry.get("alg"), entry.get("kty")
        if alg is None:
            alg = {"EC": "ES256", "RSA": "RS256"}.get(str(kty))
        algorithm = _ASYMMETRIC.get(str(alg))
        if not isinstance(kid, str) or algorithm is None:
            continue  # Symmetric or unsupported entries never verify anything here.
        try:
            keys[kid] = _Key(str(alg), algorithm.from_jwk(entry))
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            log.warning("jwks_key_skipped", kid=kid, error=type(exc).__name__)
    return keys
