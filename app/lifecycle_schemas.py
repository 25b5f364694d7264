"""Request bodies of the account-lifecycle routes (``docs/account-lifecycle.md``).

Strict like ``app.schemas``: unknown fields are refused. Emailed secrets come either as the
address with its code or as the link's token hash, never both.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from app.schemas import Body, Email, Password

Code = Annotated[str, Field(pattern=r"^[0-9]{6,10}$")]
TokenHash = Annotated[str, Field(pattern=r"^(pkce_)?[0-9a-f]{56}$")]
RedirectUrl = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]
Nonce = Annotated[str, Field(min_length=4, max_length=32)]

PROFILE_MAX_KEYS = 50
PROFILE_MAX_DEPTH = 4
PROFILE_MAX_KEY_LENGTH = 64
PROFILE_MAX_BYTES = 4096


class EmailBody(Body):
    """Where to send a mail: recovery, confirmation, a sign-in code."""

    email: Email
    redirect_to: RedirectUrl | None = None


class EmailedSecretBody(Body):
    """``{email, code}`` from the mail's text, or ``{token_hash}`` from its link."""

    email: Email | None = None
    code: Code | None = None
    token_hash: TokenHash | None = None

    @model_validator(mode="after")
    def _one_form(self) -> EmailedSecretBody:
        by_code = self.email is not None and self.code is not None
        if by_code == (self.token_hash is not None) or (
            self.token_hash is not None and (self.email or self.code)
        ):
            raise ValueError("send either email and code, or token_hash")
        return self


class PasswordResetBody(EmailedSecretBody):
    password: Password


class Reauthentication(Body):
    """A fresh proof of ownership: the current password or the mailed nonce (exactly one)."""

    current_password: Password | None = None
    nonce: Nonce | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Reauthentication:
        if (self.current_password is None) == (self.nonce is None):
            raise ValueError("send exactly one of current_password and nonce")
        return self


class PasswordChangeBody(Reauthentication):
    password: Password


class DeleteAccountBody(Reauthentication):
    pass


class EmailChangeBody(Body):
    email: Email
    redirect_to: RedirectUrl | None = None


_SAFE_INTEGER = 2**53 - 1


def _finite(value: Any) -> bool:
    """Numbers every JSON parser (Supabase's in Go, the browser's) reads back unchanged."""
    if isinstance(value, bool):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return abs(value) <= _SAFE_INTEGER
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


class ProfileBody(Body):
    """``user_metadata`` to merge: a flat-ish object of at most ``PROFILE_MAX_KEYS`` keys,
    ``PROFILE_MAX_DEPTH`` levels and ``PROFILE_MAX_BYTES`` of JSON; null removes a key."""

    data: dict[str, Any] = Field(max_length=PROFILE_MAX_KEYS)

    @field_validator("data")
    @classmethod
    def _shape(cls, data: dict[str, Any]) -> dict[str, Any]:
        for key in data:
            if not key or len(key) > PROFILE_MAX_KEY_LENGTH:
                raise ValueError(f"keys must be 1 to {PROFILE_MAX_KEY_LENGTH} characters")
        if not _finite(data):
            raise ValueError("numbers must be finite and at most 2**53 - 1 in size")
        if _depth(data) > PROFILE_MAX_DEPTH:
            raise ValueError(f"nested deeper than {PROFILE_MAX_DEPTH} levels")
        size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
        if size > PROFILE_MAX_BYTES:
            raise ValueError(f"larger than {PROFILE_MAX_BYTES} bytes of JSON")
        return data


def check_merged_profile(current: dict[str, Any], update: dict[str, Any]) -> None:
    """The metadata after the merge stays within the limits too, so many small updates
    cannot grow it without bound. ``current`` is the token's copy (at most one token
    lifetime stale, which only matters near the limit)."""
    merged = {k: v for k, v in {**current, **update}.items() if v is not None}
    size = len(json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode())
    if len(merged) > PROFILE_MAX_KEYS or size > PROFILE_MAX_BYTES:
        raise ValueError(
            f"user_metadata would exceed {PROFILE_MAX_KEYS} keys or {PROFILE_MAX_BYTES} bytes"
        )


class OAuthCallbackBody(Body):
    flow_id: Annotated[str, Field(min_length=16, max_length=64)]
    code: Annotated[str, Field(min_length=1, max_length=512)]


class MfaEnrollBody(Body):
    friendly_name: Annotated[str, Field(max_length=64)] = ""
    issuer: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class MfaVerifyBody(Body):
    """Without ``challenge_id`` the challenge is made and answered in this one request."""

    challenge_id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")] | None = None
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]


MODELS = (
    EmailBody,
    EmailedSecretBody,
    PasswordResetBody,
    PasswordChangeBody,
    DeleteAccountBody,
    EmailChangeBody,
    ProfileBody,
    OAuthCallbackBody,
    MfaEnrollBody,
    MfaVerifyBody,
)
