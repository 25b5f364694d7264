"""JSON renderings of users and identities, shaped like GoTrue's Go models."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["factor_json", "identity_json", "is_banned", "rfc3339", "user_json"]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_banned(user: sqlite3.Row, now: float | None = None) -> bool:
    until = user["banned_until"]
    return until is not None and (now if now is not None else time.time()) < until


def identity_json(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "identity_id": row["identity_id"],
        "id": row["provider_id"],
        "user_id": row["user_id"],
        "identity_data": json.loads(row["identity_data"]),
        "provider": row["provider"],
    }
    if row["last_sign_in_at"] is not None:
        out["last_sign_in_at"] = rfc3339(row["last_sign_in_at"])
    out["created_at"] = rfc3339(row["created_at"])
    out["updated_at"] = rfc3339(row["updated_at"])
    out["email"] = row["email"] or ""
    return out


_OPTIONAL_TIMES = (
    "email_confirmed_at",
    "phone_confirmed_at",
    "confirmation_sent_at",
    "recovery_sent_at",
    "email_change_sent_at",
    "invited_at",
    "last_sign_in_at",
    "banned_until",
)


def user_json(user: sqlite3.Row, identities: list[sqlite3.Row] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": user["id"],
        "aud": user["aud"],
        "role": user["role"],
        "email": user["email"],
    }
    times = {name: user[name] for name in _OPTIONAL_TIMES if user[name] is not None}
    if "email_confirmed_at" in times:
        out["email_confirmed_at"] = rfc3339(times["email_confirmed_at"])
    out["phone"] = user["phone"]
    if "phone_confirmed_at" in times:
        out["phone_confirmed_at"] = rfc3339(times["phone_confirmed_at"])
    confirmed = user["email_confirmed_at"] or user["phone_confirmed_at"]
    for name in ("confirmation_sent_at", "recovery_sent_at", "email_change_sent_at"):
        if name in times:
            out[name] = rfc3339(times[name])
    if user["new_email"]:
        out["new_email"] = user["new_email"]
    if "invited_at" in times:
        out["invited_at"] = rfc3339(times["invited_at"])
    if confirmed is not None:
        out["confirmed_at"] = rfc3339(confirmed)
    if "last_sign_in_at" in times:
        out["last_sign_in_at"] = rfc3339(times["last_sign_in_at"])
    out["app_metadata"] = json.loads(user["app_metadata"])
    out["user_metadata"] = json.loads(user["user_metadata"])
    out["identities"] = [identity_json(i) for i in identities] if identities is not None else None
    out["created_at"] = rfc3339(user["created_at"])
    out["updated_at"] = rfc3339(user["updated_at"])
    if "banned_until" in times:
        out["banned_until"] = rfc3339(times["banned_until"])
    if user["deleted_at"] is not None:
        out["deleted_at"] = rfc3339(user["deleted_at"])
    out["is_anonymous"] = bool(user["is_anonymous"])
    return out


def factor_json(row: sqlite3.Row) -> dict[str, Any]:
    """An MFA factor as GoTrue's models.Factor renders it."""
    out: dict[str, Any] = {
        "id": row["id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "status": row["status"],
        "friendly_name": row["friendly_name"],
        "factor_type": row["factor_type"],
    }
    if row["phone"]:
        out["phone"] = row["phone"]
    if row["last_challenged_at"] is not None:
        out["last_challenged_at"] = rfc3339(row["last_challenged_at"])
    return out
