"""The API-key parts of ``python -m app.diagnose``: where each key came from, what the
platform's refusal says, and what to change. Never prints a key."""

from __future__ import annotations

import httpx

from app.settings import KEY_VARIABLES, Settings
from services.apikeys import ApiKey, KeyFamily, KeySlot

__all__ = ["error_of", "legacy_advice", "refused_advice", "shadowed", "source"]


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(GoTrue's error code, the message) of a refusal; the API gateway's has no code."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "", ""
    code = body.get("error_code") or body.get("code") or ""
    message = body.get("msg") or body.get("message") or ""
    return (code if isinstance(code, str) else ""), str(message)[:200]


def _set(settings: Settings, name: str) -> bool:
    value = getattr(settings, name.lower())
    return value is not None and bool(value.get_secret_value().strip())


def source(settings: Settings, slot: KeySlot) -> str:
    """The variable the key of ``slot`` was taken from (the new name wins)."""
    new, legacy = KEY_VARIABLES[slot]
    return new if _set(settings, new) else legacy


def shadowed(settings: Settings, slot: KeySlot) -> str | None:
    new, legacy = KEY_VARIABLES[slot]
    return legacy if _set(settings, new) and _set(settings, legacy) else None


def legacy_advice(key: ApiKey, ignored: str | None) -> str:
    if ignored is not None:
        return f"{ignored} is ignored (the new key wins); remove it"
    if key.family is KeyFamily.LEGACY_ANON:
        return (
            "legacy keys are retired by the end of 2026: set SUPABASE_PUBLISHABLE_KEY to the "
            "project's publishable key (README, 'API keys')"
        )
    if key.family is KeyFamily.LEGACY_SERVICE_ROLE:
        return (
            "legacy keys are retired by the end of 2026: set SUPABASE_SECRET_KEY to a secret "
            "key of the project (README, 'API keys')"
        )
    return ""


def refused_advice(message: str, *, public: bool, code: str = "") -> str:
    if "legacy api keys are disabled" in message.lower():
        return (
            "this project has disabled its legacy JWT keys: set SUPABASE_PUBLISHABLE_KEY and "
            "SUPABASE_SECRET_KEY to its new keys (Project Settings → API Keys)"
        )
    if "unrecognized jwt kid" in message.lower():
        return (
            "a platform-side fault verifying the token made from the key "
            "(supabase/auth#2647); run again, and if it persists check the JWT signing keys"
        )
    if public:
        return (
            "copy the publishable key of this project (Project Settings → API Keys) into "
            "SUPABASE_PUBLISHABLE_KEY"
        )
    return (
        "copy a secret key of this project (Project Settings → API Keys) into "
        "SUPABASE_SECRET_KEY; registration, logout and the admin routes need it"
        + (f" (Supabase Auth said {code})" if code else "")
    )
