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
from localauth.keys import KeyFile

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


def sign_access_token(settings: Settings, keys: KeyFile, claims: Mapping[str, Any]) -> str:
    if settings.jwt_alg == "ES256":
        signer = keys.es256[0]
        return jwt.encode(
            dict(claims), signer.private, algorithm="ES256", headers={"kid": signer.kid}
        )
    headers = {"kid": settings.jwt_key_id} if settings.jwt_key_id else None
    return jwt.encode(
        dict(claims), effective_secret(settings, keys), algorithm="HS256", headers=headers
    )


def jwks(settings: Settings, keys: KeyFile) -> dict[str, Any]:
    if settings.jwt_alg == "HS256":
        return {"keys": []}
    return {"keys": [k.public_jwk for k in keys.es256]}


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
    if alg == "ES256" and isinstance(kid, str):
        found = next((k for k in keys.es256 if k.kid == kid), None)
        if found is None:
            raise _bad_jwt("token is unverifiable: error while executing keyfunc: no key found")
        key = found.private.public_key()
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
