"""Field validation with GoTrue's messages and error codes."""

from __future__ import annotations

import re
import uuid

from localauth.config import Settings, parse_go_duration
from localauth.errors import ApiError

__all__ = [
    "MAX_PASSWORD_BYTES",
    "check_password_length",
    "check_password_strength",
    "parse_ban_duration",
    "parse_uuid",
    "validate_email",
    "validate_phone",
]

MAX_PASSWORD_BYTES = 72

_EMAIL_RE = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
_E164_RE = re.compile(r"^[1-9]\d{1,14}$")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


def validate_email(email: str) -> str:
    if not email:
        raise _invalid("An email address is required")
    if len(email) > 255:
        raise _invalid("An email address is too long")
    if not _EMAIL_RE.match(email):
        raise _invalid("Unable to validate email address: invalid format")
    return email.lower()


def validate_phone(phone: str) -> str:
    normalised = phone.replace(" ", "").removeprefix("+")
    if not _E164_RE.match(normalised):
        raise _invalid("Invalid phone number format (E.164 required)")
    return normalised


def check_password_length(password: str) -> None:
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise _invalid(f"Password cannot be longer than {MAX_PASSWORD_BYTES} characters")


def check_password_strength(settings: Settings, password: str) -> None:
    check_password_length(password)
    reasons: list[str] = []
    messages: list[str] = []
    if len(password.encode()) < settings.password_min_length:
        reasons.append("length")
        messages.append(f"Password should be at least {settings.password_min_length} characters.")
    missing = [s for s in settings.password_required_characters if not set(s) & set(password)]
    if missing:
        reasons.append("characters")
        sets = ", ".join(settings.password_required_characters)
        messages.append(f"Password should contain at least one character of each: {sets}.")
    if reasons:
        raise ApiError(422, "weak_password", " ".join(messages), weak_password_reasons=reasons)


def parse_ban_duration(raw: str) -> float | None:
    """Seconds to ban for, or None to lift a ban ("none")."""
    if raw == "none":
        return None
    try:
        return parse_go_duration(raw)
    except ValueError:
        raise _invalid(f"invalid format for ban duration: time: invalid duration {raw!r}") from None


def parse_uuid(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None
