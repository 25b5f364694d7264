"""Access-token minting and verification, API keys, refresh-token strings."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from localauth.config import Settings
from localauth.errors import ApiError
from localauth.keys import KeyFile, SigningKey

__all__ = [
    "REFRESH_TOKEN_RE",
    "api_key",
    "jwks",
    "new_refresh_token",
    "sign_access_token",
    "verify_jwt",
]

REFRESH_TOKEN_RE = re.compile(r"^[a-z0-9]{12}$")
_REFRESH_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Far enough that nobody has to think about it, as the Supabase CLI demo keys.
_API_KEY_LIFETIME = 100 * 365 * 24 * 3600


def new_refresh_token() -> str:
    return "".join(secrets.choice(_REFRESH_ALPHABET) for _ in range(12))


def api_key(keys: KeyFile, secret: str, role: str) -> str:
    payload = {
        "iss": "supabase-demo",
        "role": role,
        "iat": keys.created_at,
        "exp": keys.created_at + _API_KEY_LIFETIME,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def effective_secret(settings: Settings, keys: KeyFile) -> str:
    return settings.jwt_secret or keys.jwt_secret


def signing_key(settings: Settings, keys: KeyFile) -> SigningKey | None:
    """The key that signs access tokens; None means the legacy HS256 secret."""
    if keys.configured:
        return next(k for k in keys.configured if k.can_sign)
    if settings.jwt_alg == "ES256":
        return keys.es256[0]
    if settings.jwt_alg == "RS256" and keys.rs256:
        return keys.rs256[0]
    return None


def sign_access_token(settings: Settings, keys: KeyFile, claims: Mapping[str, Any]) -> str:
    signer = signing_key(settings, keys)
    if signer is not None:
        return jwt.encode(
            dict(claims), signer.private, algorithm=signer.alg, headers={"kid": signer.kid}
        )
    headers = {"kid": settings.jwt_key_id} if settings.jwt_key_id else None
    return jwt.encode(
        dict(claims), effective_secret(settings, keys), algorithm="HS256", headers=headers
    )


def jwks(settings: Settings, keys: KeyFile) -> dict[str, Any]:
    if keys.configured:
        return {"keys": [k.public_jwk for k in keys.configured if k.public_jwk is not None]}
    if settings.jwt_alg == "HS256":
        return {"keys": []}
    return {"keys": [k.public_jwk for k in (*keys.es256, *keys.rs256)]}


def _bad_jwt(reason: str) -> ApiError:
    return ApiError(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {reason}")


_DECODE_OPTIONS: Any = {
    "verify_aud": False,
    "verify_iat": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def verify_jwt(settings: Settings, keys: KeyFile, token: str) -> dict[str, Any]:
    """As GoTrue's parseJWTClaims: kid selects a key; a kid-less HS256 token uses the secret."""
    if token.count(".") != 2:  # e.g. an sb_ API key sent as the bearer
        raise _bad_jwt("token is malformed: token contains an invalid number of segments")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise _bad_jwt(f"token is malformed: {exc}") from None
    alg = header.get("alg")
    kid = header.get("kid")
    key: Any
    found = keys.by_kid(kid) if isinstance(kid, str) else None
    if found is not None and found.alg == alg:
        key = found.verify_key()
    elif alg != "HS256" and isinstance(kid, str) and found is None:
        raise _bad_jwt("token is unverifiable: error while executing keyfunc: no key found")
    elif alg == "HS256" and (kid is None or kid == settings.jwt_key_id):
        key = effective_secret(settings, keys)
    else:
        raise _bad_jwt("token is unverifiable: error while executing keyfunc: invalid key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[str(alg)], options=_DECODE_OPTIONS
        )
    except jwt.ExpiredSignatureError:
        raise _bad_jwt("token has invalid claims: token is expired") from None
    except jwt.InvalidSignatureError:
        raise _bad_jwt("token signature is invalid: signature is invalid") from None
    except jwt.InvalidTokenError as exc:
        raise _bad_jwt(f"token is malformed: {exc}") from None
    if not isinstance(claims, dict):
        raise _bad_jwt("token is malformed: claims are not an object")
    return claims


def session_uuid(claims: Mapping[str, Any]) -> str | None:
    """The token's session id if it carries a real one (GoTrue ignores the nil UUID)."""
    raw = claims.get("session_id")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        sid = uuid.UUID(raw)
    except ValueError:
        return None
    return None if sid.int == 0 else str(sid)
