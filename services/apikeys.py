"""Supabase API keys: which family a key is, and how each credential travels.

Two families exist side by side:

- the new opaque keys, ``sb_publishable_…`` (low privilege, maps to the ``anon`` role) and
  ``sb_secret_…`` (elevated, maps to ``service_role``). They are not JWTs: the platform's API
  gateway reads them from the ``apikey`` header only, and Supabase Auth refuses one sent as
  ``Authorization: Bearer`` with ``403 bad_jwt``;
- the legacy JWT keys, ``anon`` and ``service_role`` (HS256 JWTs with a ``role`` claim), which
  travel in ``apikey`` and, being JWTs, may also travel as the bearer.

Nothing here verifies a signature: the role of a legacy key is read from its payload only to
tell the two legacy keys apart in configuration checks. Pure logic, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass

__all__ = [
    "PUBLISHABLE_PREFIX",
    "SECRET_PREFIX",
    "ApiKey",
    "KeyFamily",
    "KeySlot",
    "classify",
    "request_headers",
    "slot_problem",
]

PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"


class KeyFamily(enum.Enum):
    PUBLISHABLE = "publishable key (sb_publishable_…)"
    SECRET = "secret key (sb_secret_…)"
    LEGACY_ANON = "legacy anon JWT key"
    LEGACY_SERVICE_ROLE = "legacy service_role JWT key"
    OTHER_JWT = "JWT that is not an API key"
    UNKNOWN = "value that is not a Supabase API key"


class KeySlot(enum.Enum):
    """Where a key is configured: the user-facing key, or the server (admin) key."""

    PUBLIC = "public"
    SERVER = "server"


@dataclass(frozen=True)
class ApiKey:
    value: str
    family: KeyFamily
    role: str | None = None  # the ``role`` claim of a JWT-shaped key

    @property
    def is_jwt(self) -> bool:
        return self.family in (
            KeyFamily.LEGACY_ANON,
            KeyFamily.LEGACY_SERVICE_ROLE,
            KeyFamily.OTHER_JWT,
        )

    @property
    def is_new(self) -> bool:
        return self.family in (KeyFamily.PUBLISHABLE, KeyFamily.SECRET)

    @property
    def label(self) -> str:
        """Names the key without revealing it: its family (and prefix), never the secret."""
        if self.family is KeyFamily.OTHER_JWT:
            return f"JWT with role {self.role!r}, not an API key"
        return str(self.family.value)

    def __repr__(self) -> str:  # never the value, even in a traceback
        return f"ApiKey({self.label})"


def _jwt_payload(value: str) -> dict[str, object] | None:
    parts = value.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    segment = parts[1]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def classify(value: str) -> ApiKey:
    """The family of ``value``, from its prefix or (for a JWT) its ``role`` claim."""
    key = value.strip()
    if key.startswith(PUBLISHABLE_PREFIX) and len(key) > len(PUBLISHABLE_PREFIX):
        return ApiKey(key, KeyFamily.PUBLISHABLE, "anon")
    if key.startswith(SECRET_PREFIX) and len(key) > len(SECRET_PREFIX):
        return ApiKey(key, KeyFamily.SECRET, "service_role")
    payload = _jwt_payload(key)
    if payload is None:
        return ApiKey(key, KeyFamily.UNKNOWN)
    role = payload.get("role")
    role = role if isinstance(role, str) else None
    if role == "anon":
        return ApiKey(key, KeyFamily.LEGACY_ANON, role)
    if role == "service_role":
        return ApiKey(key, KeyFamily.LEGACY_SERVICE_ROLE, role)
    return ApiKey(key, KeyFamily.OTHER_JWT, role)


def request_headers(key: ApiKey) -> dict[str, str]:
    """Headers that carry ``key`` as the platform expects: always ``apikey``; the bearer
    only for a JWT (a legacy key). An ``sb_`` key is never a bearer: the API gateway turns
    it into the role it stands for, and Supabase Auth would refuse it as a malformed JWT."""
    headers = {"apikey": key.value}
    if key.is_jwt:
        headers["Authorization"] = f"Bearer {key.value}"
    return headers


def slot_problem(key: ApiKey, slot: KeySlot) -> str | None:
    """Why ``key`` cannot serve in ``slot`` (and what to do instead), or None if it can.

    A key of no known family is let through (the platform will answer for it, and
    ``python -m app.diagnose`` reports it); a key of the wrong family is refused.
    """
    if slot is KeySlot.PUBLIC:
        if key.family is KeyFamily.SECRET:
            return (
                "holds a secret key (sb_secret_…), which bypasses Row Level Security and must "
                "not serve user-facing calls: move it to SUPABASE_SECRET_KEY and put the "
                "project's publishable key (sb_publishable_…) here"
            )
        if key.family is KeyFamily.LEGACY_SERVICE_ROLE:
            return (
                "holds the legacy service_role key: move it to SUPABASE_SERVICE_ROLE_KEY (or "
                "better, use a secret key in SUPABASE_SECRET_KEY) and put the publishable key "
                "(sb_publishable_…) or the legacy anon key here"
            )
        if key.family is KeyFamily.OTHER_JWT:
            return (
                f"holds a JWT with role {key.role!r}, not an API key: put the project's "
                "publishable key (sb_publishable_…) here"
            )
        return None
    if key.family is KeyFamily.PUBLISHABLE:
        return (
            "holds a publishable key (sb_publishable_…), which cannot call the Admin API: "
            "move it to SUPABASE_PUBLISHABLE_KEY and put a secret key (sb_secret_…) here"
        )
    if key.family is KeyFamily.LEGACY_ANON:
        return (
            "holds the legacy anon key, which cannot call the Admin API: move it to "
            "SUPABASE_ANON_KEY and put a secret key (sb_secret_…) in SUPABASE_SECRET_KEY "
            "(or the legacy service_role key here)"
        )
    if key.family is KeyFamily.OTHER_JWT:
        return (
            f"holds a JWT with role {key.role!r}, not an API key: put a secret key "
            "(sb_secret_…) in SUPABASE_SECRET_KEY"
        )
    return None
